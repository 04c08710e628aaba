"""The data-quality gate: a Great Expectations suite decides whether a batch may be loaded.

The suite is a reviewed JSON file under expectations/; its `$PARAMETER` placeholders are
filled from the use-case config. A failing batch is quarantined with its full result and
the caller gets an error naming every failed expectation and what was observed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from driftline import storage
from driftline.config import Settings, UseCase

log = logging.getLogger(__name__)


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

    def summary(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "success": self.success,
            "evaluated_expectations": self.evaluated,
            "failures": [asdict(f) for f in self.failures],
        }


class BatchRejectedError(Exception):
    """A batch was refused and quarantined; nothing was loaded. Retrying cannot help."""

    def __init__(self, message: str, quarantine: Path):
        self.quarantine = quarantine
        super().__init__(message)


class BatchValidationError(BatchRejectedError):
    """A batch failed its suite."""

    def __init__(self, usecase: str, day: dt.date, outcome: ValidationOutcome, quarantine: Path):
        self.outcome = outcome
        lines = "\n".join(f"  - {f.describe()}" for f in outcome.failures)
        super().__init__(
            f"{usecase} batch for {day} failed {len(outcome.failures)} of {outcome.evaluated} "
            f"expectations of suite {outcome.suite!r}; nothing was loaded.\n{lines}\n"
            f"Batch and validation result quarantined in {quarantine}",
            quarantine,
        )


def load_suite_json(usecase: UseCase, settings: Settings) -> dict[str, Any]:
    path = settings.suite_path(usecase.validation.suite)
    if not path.is_file():
        raise FileNotFoundError(f"expectation suite {usecase.validation.suite!r} not found: {path}")
    return json.loads(path.read_text())


def validate_batch(batch: pd.DataFrame, usecase: UseCase, settings: Settings) -> ValidationOutcome:
    """Run the use-case's suite on `batch` in an ephemeral GX context (no state left behind)."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    suite = gx.ExpectationSuite(**load_suite_json(usecase, settings))
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("driftline")
        .add_dataframe_asset(usecase.name)
        .add_batch_definition_whole_dataframe("batch")
    )
    gx_batch = batch_definition.get_batch(batch_parameters={"dataframe": batch})
    result = gx_batch.validate(suite, expectation_parameters=dict(usecase.validation.parameters))
    as_json = result.to_json_dict()
    failures = [_describe_failure(r) for r in as_json["results"] if not r["success"]]
    return ValidationOutcome(
        suite=suite.name,
        success=bool(as_json["success"]),
        evaluated=len(as_json["results"]),
        failures=failures,
        result=as_json,
    )


def gate_batch(
    batch: pd.DataFrame, usecase: UseCase, settings: Settings, day: dt.date
) -> ValidationOutcome:
    """Validate; record the result; on failure quarantine the batch and raise.

    What is judged is the batch as its Parquet file will hold it (storage.to_arrow writes a
    column of mixed types as text), so a value the suite would only refuse once stored cannot
    pass in memory: the in-process path gates what it loads, as the DAG's staged path does.
    """
    outcome = validate_batch(storage.to_arrow(batch).to_pandas(), usecase, settings)
    record = {
        "usecase": usecase.name,
        "day": day.isoformat(),
        "rows": len(batch),
        **outcome.summary(),
        "result": outcome.result,
    }
    result_path = settings.validation_result_path(usecase.name, day)
    storage.write_json(record, result_path)
    try:  # the page is for people; the JSON above is the record, and the gate goes on
        storage.write_text(data_docs_page(outcome.result), data_docs_path(result_path))
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
    quarantine = quarantine_batch(batch, record, usecase, settings, day)
    raise BatchValidationError(usecase.name, day, outcome, quarantine)


def data_docs_path(result_path: Path) -> Path:
    """The Data Docs page of a validation result: beside its JSON, same name."""
    return result_path.with_suffix(".html")


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
    loaded = ExpectationSuiteValidationResultSchema().load(plain)
    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(loaded))


def quarantine_batch(
    batch: pd.DataFrame,
    record: dict[str, Any],
    usecase: UseCase,
    settings: Settings,
    day: dt.date,
) -> Path:
    """Keep the rejected batch and why it was rejected, for an operator to inspect."""
    folder = settings.quarantine_dir(usecase.name, day)
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
        return f"observed {_clipped(repr(details['observed_value']))}{expected}"
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
