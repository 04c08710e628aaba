"""The data-quality gate: a Great Expectations suite decides whether a batch may be loaded.

The suite is a reviewed JSON file under expectations/; its `$PARAMETER` placeholders are
filled from the use-case config. A failing batch is quarantined with its full result and
the caller gets an error naming every failed expectation and what was observed.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from driftline import storage
from driftline.config import ConfigError, Settings, UseCase

log = logging.getLogger(__name__)

# GX result formats: verdicts only (every batch), then the details (a failing batch only)
VERDICTS_ONLY, DETAILED = "BOOLEAN_ONLY", "SUMMARY"
RECONCILIATION = "reconciliation"  # the failure's name when batch and source counts differ


@dataclass(frozen=True)
class FailedExpectation:
    expectation: str
    column: str | None
    observed: str

    def describe(self) -> str:
        target = f" on {self.column}" if self.column else ""
        return f"{self.expectation}{target}: {self.observed}"


@dataclass(frozen=True)
class ValidationOutcome:
    suite: str
    success: bool
    evaluated: int
    failures: list[FailedExpectation]
    result: dict[str, Any] = field(repr=False)
    # source_rows, unplaced_rows, loaded_rows, agrees: see `reconcile` (None: not reconciled)
    reconciliation: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "success": self.success,
            "evaluated_expectations": self.evaluated,
            "failures": [asdict(f) for f in self.failures],
            "reconciliation": self.reconciliation,
        }


class BatchRejectedError(Exception):
    """A batch was refused and quarantined; nothing was loaded. Retrying cannot help."""

    def __init__(self, message: str, quarantine: Path):
        self.quarantine = quarantine
        super().__init__(message)


class BatchValidationError(BatchRejectedError):
    """A batch failed its suite."""

    def __init__(
        self,
        usecase: str,
        day: dt.date,
        outcome: ValidationOutcome,
        quarantine: Path,
        refused: str = "nothing was loaded",
    ):
        self.outcome = outcome
        lines = "\n".join(f"  - {f.describe()}" for f in outcome.failures)
        super().__init__(
            f"{usecase} batch for {day} failed {len(outcome.failures)} of {outcome.evaluated} "
            f"expectations of suite {outcome.suite!r}; {refused}.\n{lines}\n"
            f"Batch and validation result quarantined in {quarantine}",
            quarantine,
        )


@dataclass(frozen=True)
class Records:
    """Where a gate writes about a day: its validation result and its quarantine folder."""

    result: Path
    quarantine: Path
    refused: str = "nothing was loaded"  # what a refusal means, for its message

    @classmethod
    def of_load(cls, usecase: UseCase, settings: Settings, day: dt.date) -> Records:
        """The ETL's: what the curated store's day was judged by."""
        return cls(
            settings.validation_result_path(usecase.name, day),
            settings.quarantine_dir(usecase.name, day),
        )

    @classmethod
    def of_scoring(cls, usecase: UseCase, settings: Settings, day: dt.date) -> Records:
        """The rows scored ahead for the day: kept apart, so that a refusal of tomorrow's
        features never reads as a failed load of tomorrow."""
        folder = settings.scoring_checks_dir(usecase.name, day)
        return cls(folder / "validation.json", folder, "nothing was scored or published")


def load_suite_json(usecase: UseCase, settings: Settings) -> dict[str, Any]:
    return json.loads(_suite_text(usecase, settings))


def features_suite_json(usecase: UseCase, settings: Settings) -> str:
    """The batch suite without what needs the outcome: the features-only suite that rows
    scored ahead must pass. Derived, not a second file, so the two never disagree on a
    feature; its columns are key, time and features, in the curated order."""
    suite = load_suite_json(usecase, settings)
    outcome = {usecase.label.name, *usecase.passthrough} - set(usecase.scoring_columns)
    kept = []
    for expectation in suite["expectations"]:
        kwargs = expectation.get("kwargs", {})
        if kwargs.get("column") in outcome:
            continue
        if expectation["type"] == "expect_table_columns_to_match_ordered_list":
            kwargs = {**kwargs, "column_list": usecase.scoring_columns}
            expectation = {**expectation, "kwargs": kwargs}
        kept.append(expectation)
    return json.dumps({**suite, "name": f"{suite['name']}.features", "expectations": kept})


def _suite_text(usecase: UseCase, settings: Settings) -> str:
    path = settings.suite_path(usecase.validation.suite)
    if not path.is_file():
        raise FileNotFoundError(f"expectation suite {usecase.validation.suite!r} not found: {path}")
    return path.read_text()


def suite_parameters(usecase: UseCase, day: dt.date) -> dict[str, Any]:
    """The values of the suite's $PARAMETERs: the config's, and the day's bounds as UTC
    instants (`day_start` inclusive, `day_end` exclusive: every row's time must be inside)."""
    start, end = usecase.day_bounds(day)
    exception = usecase.validation.exceptions.get(day)
    return {
        **usecase.validation.parameters,
        **(exception.parameters if exception else {}),
        "day_start": start.isoformat(),
        "day_end": end.isoformat(),
    }


def validate_batch(
    batch: pd.DataFrame,
    usecase: UseCase,
    settings: Settings,
    day: dt.date,
    suite_json: str | None = None,
) -> ValidationOutcome:
    """Run the use-case's suite on `batch` as the day's Parquet file will hold it: verdicts
    only first, the details only on failure.

    The batch is judged in its stored form (storage.to_arrow writes a column of mixed types as
    text), so the ETL, `driftline validate --day` and a stored file get the same verdict. A
    passing batch (nearly every day) costs GX's cheapest result format; a failing one is
    validated again with GX's default (SUMMARY) format, whose unexpected counts and values the
    error message and the quarantine show. `suite_json`: another suite (default: the
    use-case's batch suite).
    """
    batch = storage.to_arrow(batch).to_pandas()
    suite = _suite(suite_json or _suite_text(usecase, settings))
    parameters = suite_parameters(usecase, day)
    result = _run_suite(batch, usecase.name, suite, parameters, VERDICTS_ONLY)
    if not result["success"]:
        result = _run_suite(batch, usecase.name, suite, parameters, DETAILED)
    failures = [_describe_failure(r) for r in result["results"] if not r["success"]]
    return ValidationOutcome(
        suite=suite.name,
        success=bool(result["success"]),
        evaluated=len(result["results"]),
        failures=failures,
        result=result,
    )


def _run_suite(
    batch: pd.DataFrame, asset: str, suite, parameters: dict[str, Any], result_format: str
) -> dict[str, Any]:
    gx_batch = _whole_dataframe(asset).get_batch(batch_parameters={"dataframe": batch})
    validated = gx_batch.validate(
        suite, expectation_parameters=parameters, result_format=result_format
    )
    return validated.to_json_dict()


def expectation_problems(suite: dict[str, Any]) -> list[str]:
    """What Great Expectations refuses in a suite (an unknown expectation type, a misspelt
    argument), one line per refused expectation: all of them, not the first (`driftline
    check`). Built one by one: GX's ExpectationSuite only logs an unknown type and drops it."""
    _import_gx()
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    problems = []
    for number, expectation in enumerate(suite["expectations"], 1):
        try:
            ExpectationConfiguration(**expectation).to_domain_obj()
        except Exception as exc:  # GX raises its own errors, pydantic's and TypeError
            problems.append(f"#{number} {expectation.get('type')}: {' '.join(str(exc).split())}")
    return problems


def warm() -> None:
    """Build this process's GX context now (driftline.warm_start: forked tasks inherit it)."""
    _gx_context()


@functools.cache
def _gx_context():  # noqa: ANN202 - a GX EphemeralDataContext
    """One ephemeral GX context per process (no state on disk): building one costs more than
    validating a day, and a backfill validates hundreds."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


@functools.cache
def _whole_dataframe(asset: str):  # noqa: ANN202 - a GX BatchDefinition
    """The batch definition of a use-case's in-memory batches, added once to the context."""
    source = _gx_context().data_sources.add_pandas(f"driftline_{asset}")
    return source.add_dataframe_asset(asset).add_batch_definition_whole_dataframe("batch")


@functools.lru_cache(maxsize=16)
def _suite(suite_json: str):  # noqa: ANN202 - a GX ExpectationSuite
    """The suite built from its reviewed JSON (keyed by the text: an edited file is rebuilt).

    GX drops an expectation of an unknown type with a log line: a ConfigError here instead,
    so no batch passes a suite that silently lost a check."""
    raw = json.loads(suite_json)
    suite = _import_gx().ExpectationSuite(**raw)
    if len(suite.expectations) != len(raw.get("expectations", [])):
        problems = "; ".join(expectation_problems(raw))
        raise ConfigError(f"suite {raw.get('name')!r}: Great Expectations refused {problems}")
    return suite


def _exception(usecase: UseCase, day: dt.date) -> dict[str, Any] | None:
    """The config's reviewed exception for the day, as its validation result records it."""
    exception = usecase.validation.exceptions.get(day)
    return exception.model_dump() if exception else None


def reconcile(outcome: ValidationOutcome, rows: int, source: dict[str, int]) -> ValidationOutcome:
    """The suite's outcome with the reconciliation: the batch must hold exactly the rows the
    source counts in the day (`source_rows`), or the day fails with both counts named."""
    agrees = rows == source["source_rows"]
    outcome = replace(
        outcome, reconciliation={**source, "loaded_rows": rows, "agrees": agrees}
    )
    if agrees:
        return outcome
    lost = FailedExpectation(
        expectation=RECONCILIATION,
        column=None,
        observed=(
            f"{rows} rows built, but the source has {source['source_rows']} rows in the day "
            "(its times read as instants)"
        ),
    )
    return replace(outcome, success=False, failures=[*outcome.failures, lost])


def gate_batch(
    batch: pd.DataFrame,
    usecase: UseCase,
    settings: Settings,
    day: dt.date,
    source: dict[str, int] | None = None,
    records: Records | None = None,
    suite_json: str | None = None,
) -> ValidationOutcome:
    """Validate and reconcile with the source's counts (`SourceCounts.as_dict()`); record the
    result; on failure quarantine the batch and raise.

    `records`: where (default: the ETL's records of the day); `suite_json`: see validate_batch.
    """
    records = records or Records.of_load(usecase, settings, day)
    outcome = validate_batch(batch, usecase, settings, day, suite_json)
    if source is not None:
        outcome = reconcile(outcome, len(batch), source)
    record = {
        "usecase": usecase.name,
        "day": day.isoformat(),
        "rows": len(batch),
        **outcome.summary(),
        "exception": _exception(usecase, day),
        "result": outcome.result,
    }
    result_path = records.result
    storage.write_json(record, result_path)
    if outcome.success:
        # rendered when someone opens it (data_docs_file): a stale page must not outlive it
        data_docs_path(result_path).unlink(missing_ok=True)
    else:
        try:  # the page is for people; the JSON above is the record, and the gate goes on
            data_docs_file(result_path)
        except Exception:
            log.exception("%s %s: the Data Docs page could not be rendered", usecase.name, day)
    if outcome.success:
        log.info(
            "%s %s: %d rows passed %d expectations",
            usecase.name,
            day,
            len(batch),
            outcome.evaluated,
        )
        return outcome
    quarantine = quarantine_batch(batch, record, usecase, settings, day, records)
    raise BatchValidationError(usecase.name, day, outcome, quarantine, records.refused)


def data_docs_path(result_path: Path) -> Path:
    """The Data Docs page of a validation result: beside its JSON, same name."""
    return result_path.with_suffix(".html")


def data_docs_file(result_path: Path) -> Path:
    """The Data Docs page of a stored validation result, rendered from it if it is missing or
    older than the result: a failing batch gets its page at once, a passing one when opened."""
    page = data_docs_path(result_path)
    if page.is_file() and page.stat().st_mtime_ns >= result_path.stat().st_mtime_ns:
        return page
    record = json.loads(result_path.read_text())
    storage.write_text(data_docs_page(record["result"]), page)
    return page


def data_docs_page(result: dict[str, Any]) -> str:
    """The Great Expectations Data Docs page of one validation result, as HTML.

    The same renderer and template a GX Data Docs site uses for its validation pages, without
    a file-backed context: the result JSON stays the record, the page is derived from it.
    """
    _import_gx()
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResultSchema,
    )
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    # as stored on disk: plain JSON values (GX's renderer rejects numpy scalars)
    plain = json.loads(json.dumps(result, default=str))
    for entry in plain["results"]:
        _fill_verdict_only(entry)
        # GX writes observed values into the page as they are: a `<script>` in a source value
        # would run in whoever opens the file
        for part in ("result", "exception_info"):
            if entry.get(part):
                entry[part] = _escaped(entry[part])
    loaded = ExpectationSuiteValidationResultSchema().load(plain)
    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(loaded))


def _escaped(value: Any) -> Any:
    """`value` with every string in it HTML-escaped (dict keys too: value counts use them)."""
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    return value


def _fill_verdict_only(entry: dict[str, Any]) -> None:
    """A passed expectation validated for its verdict only has no details; GX's page reads
    the table's columns from the column-list expectation's observed value, which on a pass is
    the expected list."""
    config = entry["expectation_config"]
    if (
        entry["success"]
        and not entry.get("result")
        and config["type"] == "expect_table_columns_to_match_ordered_list"
    ):
        entry["result"] = {"observed_value": config["kwargs"]["column_list"]}


def quarantine_batch(
    batch: pd.DataFrame,
    record: dict[str, Any],
    usecase: UseCase,
    settings: Settings,
    day: dt.date,
    records: Records | None = None,
) -> Path:
    """Keep the rejected batch and why it was rejected, for an operator to inspect."""
    folder = (records or Records.of_load(usecase, settings, day)).quarantine
    storage.write_parquet(batch, folder / "batch.parquet")
    storage.write_json(record, folder / "validation.json")
    log.error("%s %s: batch quarantined in %s", usecase.name, day, folder)
    return folder


def _describe_failure(result: dict[str, Any]) -> FailedExpectation:
    config = result["expectation_config"]
    kwargs = config.get("kwargs", {})
    column = kwargs.get("column") or (
        ",".join(kwargs["column_list"]) if kwargs.get("column_list") else None
    )
    return FailedExpectation(
        expectation=config["type"], column=column, observed=_observed(result, kwargs)
    )


def _observed(result: dict[str, Any], kwargs: dict[str, Any]) -> str:
    info = result.get("exception_info") or {}
    if info.get("raised_exception"):
        message = str(info.get("exception_message") or "").splitlines()
        return f"could not be evaluated: {message[0] if message else 'error'}"
    details = result.get("result") or {}
    expected = _expected(kwargs)
    if "unexpected_count" in details and details.get("unexpected_count"):
        examples = details.get("partial_unexpected_list") or []
        shown = ", ".join(_clipped(repr(value)) for value in examples[:5])
        return (
            f"{details['unexpected_count']} of {details.get('element_count', '?')} rows "
            f"unexpected, e.g. [{shown}]{expected}"
        )
    if "observed_value" in details:
        observed = details["observed_value"]
        observed = observed.item() if hasattr(observed, "item") else observed  # numpy scalar
        return f"observed {_clipped(repr(observed))}{expected}"
    return f"failed{expected}"


def _clipped(text: str, limit: int = 80) -> str:
    """A value as the error message shows it: a source value may be a megabyte of text (the
    quarantined validation.json keeps it whole)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _expected(kwargs: dict[str, Any]) -> str:
    shown = {
        k: v
        for k, v in kwargs.items()
        if k
        in {
            "min_value",
            "max_value",
            "value_set",
            "type_list",
            "type_",
            "regex",
            "column_set",
            "mostly",
        }
    }
    return f" (expected {shown})" if shown else ""


def _import_gx():  # noqa: ANN202 - module object
    """Import GX quietly: no analytics, no progress bars, no INFO chatter in task logs."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    # GX sets some of its loggers to INFO at import; quiet them after, not before.
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return gx
