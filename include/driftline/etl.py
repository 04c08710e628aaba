"""Extract a day from the source, build the curated batch, load it as that day's partition.

Plain functions of explicit inputs: the Airflow tasks and `driftline etl` call the same ones.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import logging
import multiprocessing
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from driftline import storage
from driftline.config import ConfigError, Settings, UseCase, import_object
from driftline.validation import BatchRejectedError, gate_batch, quarantine_batch

log = logging.getLogger(__name__)

PARTITION_FILE = "part-0.parquet"


class SourceUnavailableError(RuntimeError):
    """The source database cannot be reached or read; the message names it (no password)."""


class TransformError(RuntimeError):
    """The batch could not be built from what was extracted."""


@dataclass(frozen=True)
class BatchWindow:
    """One local day of a use-case, as the UTC bounds the source is queried with."""

    day: dt.date
    start: dt.datetime  # UTC, inclusive
    end: dt.datetime  # UTC, exclusive

    @classmethod
    def for_day(cls, day: dt.date, usecase: UseCase) -> BatchWindow:
        start = dt.datetime.combine(day, dt.time(), tzinfo=usecase.tz)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=usecase.tz)
        return cls(day, start.astimezone(dt.UTC), end.astimezone(dt.UTC))

    @classmethod
    def from_interval(cls, start: dt.datetime, end: dt.datetime, usecase: UseCase) -> BatchWindow:
        """The window of an Airflow data interval, which must be exactly one local day."""
        day = start.astimezone(usecase.tz).date()
        window = cls.for_day(day, usecase)
        if (start.astimezone(dt.UTC), end.astimezone(dt.UTC)) != (window.start, window.end):
            raise ValueError(
                f"data interval {start.isoformat()} .. {end.isoformat()} is not one "
                f"{usecase.timezone} day; expected {window.start.isoformat()} .. "
                f"{window.end.isoformat()} for {day}"
            )
        return window

    @property
    def query_params(self) -> dict[str, dt.datetime]:
        """Naive UTC bounds: the source stores its time column as naive UTC timestamps."""
        return {
            "start": self.start.replace(tzinfo=None),
            "end": self.end.replace(tzinfo=None),
        }


@dataclass(frozen=True)
class LoadResult:
    day: dt.date
    path: Path
    rows: int
    label_missing: int
    replaced: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "path": str(self.path),
            "rows": self.rows,
            "label_missing": self.label_missing,
            "replaced": self.replaced,
        }


# Query parameters that can carry a credential in a database URL (psycopg2 takes ?password=,
# ?sslpassword=; cloud drivers take keys and tokens): masked like the password.
_CREDENTIAL_PARAM = re.compile(r"pass|secret|token|key|credential|auth", re.IGNORECASE)


def masked_url(url: str) -> str:
    """`url` fit for a log line, a message or a return value: its password is `***`, and so is
    every query parameter that may hold a credential. A string that is not a URL SQLAlchemy can
    parse still has any `user:password@` part masked."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
    hidden = {key: "***" for key in parsed.query if _CREDENTIAL_PARAM.search(key)}
    rendered = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return rendered.replace("=%2A%2A%2A", "=***")


def source_engine(url: str) -> sa.Engine:
    """An engine for the source database; a missing SQLite file is an error, not a new DB."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not Path(parsed.database).exists():
            raise SourceUnavailableError(
                f"source database {masked_url(url)} does not exist (run `driftline seed`)"
            )
        return sa.create_engine(url)
    connect_args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def extract(usecase: UseCase, source_url: str, window: BatchWindow) -> dict[str, pd.DataFrame]:
    """Run every configured query with the window's bounds as bound parameters."""
    bounds = sa.bindparam("start", type_=sa.DateTime()), sa.bindparam("end", type_=sa.DateTime())
    engine = source_engine(source_url)
    tables: dict[str, pd.DataFrame] = {}
    try:
        with engine.connect() as conn:
            for name, query in usecase.source.queries.items():
                statement = sa.text(query)
                binds = {k: v for k, v in window.query_params.items() if f":{k}" in query}
                if binds:
                    statement = statement.bindparams(*(b for b in bounds if b.key in binds))
                tables[name] = pd.read_sql(statement, conn, params=binds)
    except sa.exc.DBAPIError as exc:
        raise SourceUnavailableError(
            f"source database {masked_url(source_url)} could not be read: {exc.orig}"
        ) from exc
    finally:
        engine.dispose()
    time_column = usecase.source.time_column
    for frame in tables.values():
        if time_column in frame.columns:
            frame[time_column] = pd.to_datetime(frame[time_column], utc=True, errors="coerce")
    log.info(
        "%s %s: extracted %s from %s",
        usecase.name,
        window.day,
        {k: len(v) for k, v in tables.items()},
        masked_url(source_url),
    )
    return tables


def transform(usecase: UseCase, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The use-case's builder, then the label rule; columns in curated order."""
    try:
        builder: Callable[[dict[str, pd.DataFrame], UseCase], pd.DataFrame] = import_object(
            usecase.transform
        )
    except ConfigError as exc:
        raise TransformError(str(exc)) from exc
    try:
        batch = builder(tables, usecase)
    except Exception as exc:
        raise TransformError(f"{usecase.transform} failed: {type(exc).__name__}: {exc}") from exc
    batch = batch.copy()
    batch[usecase.label.name] = label_values(batch, usecase)
    missing = [c for c in usecase.curated_columns if c not in batch.columns]
    if missing:
        raise TransformError(f"{usecase.transform} did not produce columns {missing}")
    return batch[usecase.curated_columns]


def build_batch(
    usecase: UseCase, settings: Settings, day: dt.date, tables: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """`transform`, but a batch that cannot be built is quarantined as extracted, not lost."""
    try:
        return transform(usecase, tables)
    except TransformError as exc:
        extracted = tables.get(usecase.source.batch_table, pd.DataFrame())
        record = {
            "usecase": usecase.name,
            "day": day.isoformat(),
            "rows": len(extracted),
            "stage": "transform",
            "success": False,
            "failures": [{"expectation": "build_batch", "column": None, "observed": str(exc)}],
        }
        folder = quarantine_batch(extracted, record, usecase, settings, day)
        raise BatchRejectedError(
            f"{usecase.name} batch for {day} could not be built: {exc}; nothing was loaded. "
            f"Extracted rows quarantined in {folder}",
            folder,
        ) from exc


def label_values(batch: pd.DataFrame, usecase: UseCase) -> pd.Series:
    """The label rule as a nullable boolean: unknown where its source column is null."""
    rule, source = usecase.label.rule, usecase.label.missing_when_null
    unknown = batch[source].isna()
    try:
        values = batch.eval(rule)
    except Exception as exc:
        raise TransformError(f"label rule {rule!r} could not be evaluated: {exc}") from exc
    return values.astype("boolean").mask(unknown)


def load_partition(
    batch: pd.DataFrame,
    usecase: UseCase,
    settings: Settings,
    day: dt.date,
    validation: dict[str, Any],
    batch_sha256: str | None = None,
) -> LoadResult:
    """Write the validated batch as the day's partition, replacing any earlier one atomically.

    `validation` is the suite's summary for exactly this batch; a failed one is refused.
    """
    if validation.get("success") is not True:
        raise ValueError(f"refusing to load {usecase.name} {day}: it did not pass validation")
    target = settings.partition_dir(usecase.name, day) / PARTITION_FILE
    replaced = target.exists()
    rows = batch.sort_values(usecase.key, kind="stable").reset_index(drop=True)
    label_missing = int(rows[usecase.label.name].isna().sum())
    storage.write_parquet(
        rows,
        target,
        metadata={
            "usecase": usecase.name,
            "day": day.isoformat(),
            "rows": len(rows),
            "label_missing": label_missing,
            "suite": validation["suite"],
            "evaluated_expectations": validation["evaluated_expectations"],
            "batch_sha256": batch_sha256,
        },
    )
    log.info(
        "%s %s: loaded %d rows (%d without label) into %s%s",
        usecase.name,
        day,
        len(rows),
        label_missing,
        target,
        " (replaced)" if replaced else "",
    )
    return LoadResult(day, target, len(rows), label_missing, replaced)


def run_day(
    usecase: UseCase, settings: Settings, day: dt.date, source_url: str | None = None
) -> LoadResult:
    """The whole nightly ETL of one day in-process (the CLI's path; the DAG runs it in steps)."""
    window = BatchWindow.for_day(day, usecase)
    tables = extract(usecase, source_url or settings.source_url(usecase), window)
    batch = build_batch(usecase, settings, day, tables)
    outcome = gate_batch(batch, usecase, settings, day)
    # the hash the DAG's staged batch file would have: both paths write identical partitions
    digest = storage.parquet_sha256(batch)
    return load_partition(batch, usecase, settings, day, outcome.summary(), batch_sha256=digest)


@dataclass(frozen=True)
class DayOutcome:
    """One day of a backfill: its load, or why it failed (a message: exceptions do not all
    survive the trip back from a worker process)."""

    day: dt.date
    loaded: LoadResult | None = None
    error: str | None = None


def _run_day_reported(
    usecase: UseCase, settings: Settings, source_url: str | None, day: dt.date
) -> DayOutcome:
    try:
        return DayOutcome(day, loaded=run_day(usecase, settings, day, source_url))
    except Exception as exc:  # a day's failure is reported, then the backfill goes on
        return DayOutcome(day, error=str(exc))


def run_days(
    usecase: UseCase,
    settings: Settings,
    days: list[dt.date],
    source_url: str | None = None,
    workers: int = 1,
    fail_fast: bool = False,
) -> Iterator[DayOutcome]:
    """`run_day` of each day, on `workers` processes, yielded in day order.

    Days are independent (each reads its own bounded range and writes only its own partition,
    validation result and quarantine, each atomically), so a parallel backfill writes the same
    bytes as a sequential one. With `fail_fast`, days not yet started are dropped after the
    first failure; those already running finish and are reported.
    """
    work = functools.partial(_run_day_reported, usecase, settings, source_url)
    if workers <= 1 or len(days) <= 1:
        for day in days:
            outcome = work(day)
            yield outcome
            if fail_fast and outcome.error:
                return
        return
    # fork: the workers inherit the imported modules instead of importing GX again
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(min(workers, len(days)), mp_context=context) as pool:
        futures = [pool.submit(work, day) for day in days]
        for future in futures:
            if future.cancelled():
                continue
            outcome = future.result()
            yield outcome
            if fail_fast and outcome.error:
                for later in futures:
                    later.cancel()  # only those not started yet


# The same steps split at the DAG's task boundaries: each hands the next a small dict
# (it goes through XCom) naming Parquet files in the day's staging folder.


def extract_to_staging(usecase: UseCase, settings: Settings, window: BatchWindow, run: str) -> dict:
    tables = extract(usecase, settings.source_url(usecase), window)
    folder = settings.staging_dir(usecase.name, window.day, run)
    paths = {
        name: str(storage.write_parquet(frame, folder / f"raw_{name}.parquet"))
        for name, frame in tables.items()
    }
    rows = len(tables[usecase.source.batch_table])
    return {"day": window.day.isoformat(), "tables": paths, "rows": rows}


def transform_staged(usecase: UseCase, settings: Settings, extracted: dict) -> dict:
    day = dt.date.fromisoformat(extracted["day"])
    tables = {name: pd.read_parquet(path) for name, path in extracted["tables"].items()}
    batch = build_batch(usecase, settings, day, tables)
    folder = Path(next(iter(extracted["tables"].values()))).parent
    path = storage.write_parquet(batch, folder / "batch.parquet")
    return {"day": day.isoformat(), "batch": str(path), "rows": len(batch)}


def validate_staged(usecase: UseCase, settings: Settings, built: dict) -> dict:
    """Gate the staged batch; the summary it returns pins the batch file by its hash."""
    day = dt.date.fromisoformat(built["day"])
    digest, batch = _read_pinned(Path(built["batch"]))
    outcome = gate_batch(batch, usecase, settings, day)
    return {**built, "validation": outcome.summary(), "batch_sha256": digest}


def load_staged(usecase: UseCase, settings: Settings, validated: dict) -> dict:
    """Load exactly the bytes that were validated; a retry after a finished load is a no-op."""
    day = dt.date.fromisoformat(validated["day"])
    path = Path(validated["batch"])
    target = settings.partition_dir(usecase.name, day) / PARTITION_FILE
    if not path.exists():
        meta = storage.read_parquet_metadata(target) if target.exists() else {}
        if meta.get("batch_sha256") == validated["batch_sha256"]:
            return LoadResult(day, target, meta["rows"], meta["label_missing"], True).as_dict()
        raise RuntimeError(
            f"staged batch {path} is gone and {target} holds another batch; rerun the day"
        )
    digest, batch = _read_pinned(path)
    if digest != validated["batch_sha256"]:
        raise RuntimeError(
            f"{path} changed after it was validated (another run of {day}?); rerun the day"
        )
    result = load_partition(
        batch, usecase, settings, day, validated["validation"], batch_sha256=digest
    )
    shutil.rmtree(path.parent, ignore_errors=True)
    return result.as_dict()


def _read_pinned(path: Path) -> tuple[str, pd.DataFrame]:
    """Hash and parse the same bytes, so what is checked is what is used."""
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), pd.read_parquet(io.BytesIO(data))


def list_partitions(usecase: UseCase, settings: Settings) -> list[tuple[dt.date, Path, int]]:
    """(day, file, rows) of every curated partition, from the Parquet footers only."""
    found = []
    for path in sorted(settings.curated_dir(usecase.name).glob(f"date=*/{PARTITION_FILE}")):
        day = dt.date.fromisoformat(path.parent.name.removeprefix("date="))
        found.append((day, path, int(storage.read_parquet_metadata(path).get("rows", -1))))
    return found


def read_curated(
    usecase: UseCase, settings: Settings, start: dt.date, end: dt.date
) -> pd.DataFrame:
    """The curated rows of the days start..end (inclusive) that have a partition."""
    frames = []
    day = start
    while day <= end:
        path = settings.partition_dir(usecase.name, day) / PARTITION_FILE
        if path.exists():
            frames.append(pd.read_parquet(path))
        day += dt.timedelta(days=1)
    if not frames:
        return pd.DataFrame(columns=usecase.curated_columns)
    return pd.concat(frames, ignore_index=True)
