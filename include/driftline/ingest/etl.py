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
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from driftline import storage
from driftline.config import ConfigError, Settings, UseCase, import_object
from driftline.ingest.validation import BatchRejectedError, Records, gate_batch, quarantine_batch

log = logging.getLogger(__name__)

PARTITION_FILE = "part-0.parquet"


class SourceUnavailableError(RuntimeError):
    """The source database cannot be reached or read now (retried: it may come back); the
    message names it (no password)."""


class SourceBrokenError(SourceUnavailableError):
    """The source cannot be read until someone fixes it (a missing table or column, a corrupt
    or foreign file, refused credentials): failed at once, never retried."""


# Driver messages (SQLite, PostgreSQL) that no retry heals; anything else (refused, timed out,
# locked, a dropped connection) may be transient.
_PERMANENT_SOURCE_ERRORS = (
    "no such table",
    "no such column",
    "malformed",
    "not a database",
    "does not exist",
    "password authentication failed",
    "permission denied",
    "syntax error",
    "unable to open database file",
)

# SQLite has no timestamp type: a time is text, and the queries' `>= :start` compares text, so
# '2013-03-05T23:00' sorts after every '2013-03-05 ...' and an offset is ignored. The queries
# are bound with the day widened by this margin (wider than any UTC offset) plus the source
# zone's own offset (its end moved on to a midnight when a time of the day may be written on
# the end's date), then each row is placed by its parsed instant.
TEXT_TIME_MARGIN = dt.timedelta(days=1)
LARGEST_UTC_OFFSET = dt.timedelta(hours=14)  # UTC+14:00 (Kiribati); the smallest is -12:00


class TransformError(RuntimeError):
    """The batch could not be built from what was extracted."""


@dataclass(frozen=True)
class BatchWindow:
    """One local day of a use-case: its instants, and the zone of the source's naive times
    (source.time_zone) in which the queries get them."""

    day: dt.date
    start: dt.datetime  # UTC, inclusive
    end: dt.datetime  # UTC, exclusive
    source_zone: str = "UTC"

    @classmethod
    def for_day(cls, day: dt.date, usecase: UseCase) -> BatchWindow:
        return cls(day, *usecase.day_bounds(day), usecase.source.time_zone)

    @classmethod
    def from_interval(cls, start: dt.datetime, end: dt.datetime, usecase: UseCase) -> BatchWindow:
        """The window of an Airflow data interval, which must be exactly one local day."""
        day = usecase.run_day(start)
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
        """The day's bounds as naive wall times in the source's zone: what its naive times
        are compared with (a DST day's bounds are 23 or 25 hours apart)."""
        zone = ZoneInfo(self.source_zone)
        return {
            "start": self.start.astimezone(zone).replace(tzinfo=None),
            "end": self.end.astimezone(zone).replace(tzinfo=None),
        }

    @property
    def utc_params(self) -> dict[str, dt.datetime]:
        """The day's bounds as naive UTC: what SQLite's julianday() makes of a time with an
        offset."""
        return {"start": self.start.replace(tzinfo=None), "end": self.end.replace(tzinfo=None)}

    def bounds_for(self, backend: str) -> dict[str, dt.datetime]:
        """The :start/:end the queries are bound with: the day itself, or on SQLite the day
        widened by TEXT_TIME_MARGIN and the source zone's UTC offset, so that it holds every
        time of the day written with any offset; rows are then placed by their parsed
        instants. When a time of the day may be written on the end's date, the end moves on
        to the next midnight: text with a 'T' sorts after every time of its date written
        with a space."""
        day = self.query_params
        if backend != "sqlite":
            return day
        zone = ZoneInfo(self.source_zone)
        before = TEXT_TIME_MARGIN + abs(self.start.astimezone(zone).utcoffset())
        end = day["end"] + TEXT_TIME_MARGIN + abs(self.end.astimezone(zone).utcoffset())
        latest = self.end.replace(tzinfo=None) + LARGEST_UTC_OFFSET  # as written, at most
        if latest.date() == end.date():
            end = dt.datetime.combine(end.date() + dt.timedelta(days=1), dt.time())
        return {"start": day["start"] - before, "end": end}


@dataclass(frozen=True)
class SourceCounts:
    """What the source says of a day before anything is extracted: the reconciliation's
    other side."""

    day_rows: int  # rows of the batch query whose time, read as an instant, is in the day
    unplaced_rows: int  # rows of the batch table whose time is NULL or unreadable: in no day

    def as_dict(self) -> dict[str, int]:
        return {"source_rows": self.day_rows, "unplaced_rows": self.unplaced_rows}


class UnplacedRowsError(Exception):
    """Rows whose time cannot be read: they belong to no day. Carries them as they arrived."""

    def __init__(self, message: str, rows: pd.DataFrame):
        self.rows = rows
        super().__init__(message)


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


def source_engine(url: str, time_zone: str = "UTC") -> sa.Engine:
    """An engine for the source database; a missing SQLite file is an error, not a new DB.

    On PostgreSQL each session's TimeZone is `time_zone` (source.time_zone), so a naive bound
    compared with a `timestamptz` column means the same instant as with a `timestamp` one.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not Path(parsed.database).exists():
            raise SourceBrokenError(
                f"source database {masked_url(url)} does not exist (run `driftline seed`)"
            )
        return sa.create_engine(url)
    if parsed.get_backend_name() != "postgresql":
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})

    @sa.event.listens_for(engine, "connect")
    def _in_source_zone(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI objects
        # outside a transaction: a rollback would undo a SET made inside one
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT set_config('TimeZone', %s, false)", (time_zone,))
        dbapi_connection.autocommit = autocommit

    return engine


def _source_error(exc: sa.exc.DBAPIError, source_url: str) -> SourceUnavailableError:
    """A driver error as what it means for the run: retry later, or fix the source first."""
    reason = str(exc.orig).strip()
    if any(marker in reason.lower() for marker in _PERMANENT_SOURCE_ERRORS):
        return SourceBrokenError(
            f"source database {masked_url(source_url)} cannot be read: {reason}. Retrying "
            "will not help: fix the source database, its URL or credentials, or the use-case's "
            "queries, then rerun the day"
        )
    return SourceUnavailableError(
        f"source database {masked_url(source_url)} could not be read: {reason}"
    )


def _bound(query: str, bounds: dict[str, dt.datetime]) -> tuple[sa.TextClause, dict]:
    """`query` with those of `bounds` it names bound as timestamps (never formatted in)."""
    statement = sa.text(query)
    binds = {k: v for k, v in bounds.items() if f":{k}" in query}
    if binds:
        statement = statement.bindparams(*(sa.bindparam(k, type_=sa.DateTime()) for k in binds))
    return statement, binds


def _instant(value: sa.ColumnElement, backend: str) -> sa.ColumnElement:
    """A time as the database compares instants: julianday() on SQLite, where times are text."""
    return sa.func.julianday(value) if backend == "sqlite" else value


# SQLite: a text time the widened window can find starts with its date (it sorts by it)
ISO_DATE_PREFIX = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"


def _has_offset(column: sa.ColumnElement) -> sa.ColumnElement:
    """SQLite: a text time that ends with an offset julianday() reads ('Z', '+HH:MM')."""
    return column.op("GLOB")("*[Zz]") | column.op("GLOB")("*[+-][0-9][0-9]:[0-9][0-9]")


def _in_day(column: sa.ColumnElement, backend: str, window: BatchWindow) -> sa.ColumnElement:
    """The times of the window's day: naive ones compared with its wall times in the source's
    zone; on SQLite, text with an offset by its instant (julianday() reads it as UTC)."""
    when = _instant(column, backend)

    def between(bounds: dict[str, dt.datetime], name: str) -> sa.ColumnElement:
        start = sa.bindparam(f"{name}_start", bounds["start"], type_=sa.DateTime())
        end = sa.bindparam(f"{name}_end", bounds["end"], type_=sa.DateTime())
        return sa.and_(when >= _instant(start, backend), when < _instant(end, backend))

    if backend != "sqlite" or window.query_params == window.utc_params:
        return between(window.query_params, "day")
    return sa.case(
        (_has_offset(column), between(window.utc_params, "utc")),
        else_=between(window.query_params, "day"),
    )


def _unplaced(column: sa.ColumnElement, backend: str) -> sa.ColumnElement:
    """Times that place a row in no day: NULL; on SQLite also anything but readable text that
    starts with its date (any other text sorts outside every day's window)."""
    if backend != "sqlite":
        return column.is_(None)
    not_text = sa.func.typeof(column) != "text"
    no_date_first = sa.not_(column.op("GLOB")(ISO_DATE_PREFIX))
    return column.is_(None) | not_text | no_date_first | _instant(column, backend).is_(None)


def count_source(usecase: UseCase, source_url: str, window: BatchWindow) -> SourceCounts:
    """Ask the source, before extracting, how many rows the day has (the batch query, each row
    placed by its time read as an instant) and how many rows of the batch table have a time
    that places them in no day."""
    engine = source_engine(source_url, usecase.source.time_zone)
    backend = engine.dialect.name
    source = usecase.source
    query, binds = _bound(source.queries[source.batch_table].strip().rstrip(";"),
                          window.bounds_for(backend))
    rows = query.columns(sa.column(source.time_column)).subquery("q")
    in_day = sa.select(sa.func.count()).select_from(rows).where(
        _in_day(rows.c[source.time_column], backend, window)
    )
    table = sa.table(source.batch_table, sa.column(source.time_column))
    in_no_day = (
        sa.select(sa.func.count()).select_from(table)
        .where(_unplaced(table.c[source.time_column], backend))
    )
    try:
        with engine.connect() as conn:
            day_rows = conn.execute(in_day, binds).scalar_one()
            unplaced_rows = conn.execute(in_no_day).scalar_one()
    except sa.exc.DBAPIError as exc:
        raise _source_error(exc, source_url) from exc
    finally:
        engine.dispose()
    return SourceCounts(int(day_rows), int(unplaced_rows))


def unplaced_rows(usecase: UseCase, source_url: str, limit: int = 1000) -> pd.DataFrame:
    """Up to `limit` rows of the batch table that no day can hold, as the source has them."""
    engine = source_engine(source_url, usecase.source.time_zone)
    table = sa.table(usecase.source.batch_table, sa.column(usecase.source.time_column))
    query = (
        sa.select(sa.text("*")).select_from(table)
        .where(_unplaced(table.c[usecase.source.time_column], engine.dialect.name))
        .limit(limit)
    )
    try:
        with engine.connect() as conn:
            return pd.read_sql(query, conn)
    except sa.exc.DBAPIError as exc:
        raise _source_error(exc, source_url) from exc
    finally:
        engine.dispose()


# An explicit UTC offset at the end of an ISO 8601 time: 'Z', '+01:00', '-0500', '+01'; a
# date alone ('2013-01-05') has none, though it ends like one.
_OFFSET = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)
_DATE_ONLY = re.compile(r"\d{4}-\d{2}(?:-\d{2})?")


def parse_instants(values: pd.Series, zone: str = "UTC") -> tuple[pd.Series, pd.Series]:
    """Each value read on its own as an ISO 8601 instant (a space or 'T'; with an offset, or
    naive: a wall time in `zone`, the source's time_zone), never by the format of the first
    row; and the mask of the non-null values that could not be read. The same holds for a
    driver's own timestamps (naive `timestamp`, aware `timestamptz`).

    Naive and offset values are parsed apart: given both, pandas applies the first value's
    offset to the naive ones.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_convert("UTC")
        return parsed, parsed.isna() & values.notna()
    if pd.api.types.is_datetime64_dtype(values):
        parsed = _wall_times_in(values, zone)
        return parsed, parsed.isna() & values.notna()
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    text = values.map(lambda v: v.strip() if isinstance(v, str) else None)
    with_offset = text.map(
        lambda v: v is not None and bool(_OFFSET.search(v)) and not _DATE_ONLY.fullmatch(v)
    )
    if with_offset.any():
        parsed[with_offset] = pd.to_datetime(
            text[with_offset], utc=True, format="ISO8601", errors="coerce"
        )
    naive = text.notna() & ~with_offset
    if naive.any():
        walls = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        parsed[naive] = _wall_times_in(walls, zone)
    dates = values.map(lambda v: isinstance(v, dt.datetime))  # a driver's own timestamps
    if dates.any():
        aware = values.map(lambda v: isinstance(v, dt.datetime) and v.utcoffset() is not None)
        if aware.any():
            parsed[aware] = pd.to_datetime(values[aware], utc=True)
        if (dates & ~aware).any():
            walls = pd.to_datetime(values[dates & ~aware].astype("datetime64[ns]"))
            parsed[dates & ~aware] = _wall_times_in(walls, zone)
    return parsed, parsed.isna() & values.notna()


def _wall_times_in(walls: pd.Series, zone: str) -> pd.Series:
    """Naive wall times in `zone` as UTC instants. A wall time that the clocks show twice (the
    hour repeated when daylight saving ends) is its first occurrence; one they skip (the hour
    lost when it starts) is the moment they jump to."""
    if zone == "UTC":
        return walls.dt.tz_localize("UTC")
    first = np.ones(len(walls), dtype=bool)
    local = walls.dt.tz_localize(zone, ambiguous=first, nonexistent="shift_forward")
    return local.dt.tz_convert("UTC")


def extract(usecase: UseCase, source_url: str, window: BatchWindow) -> dict[str, pd.DataFrame]:
    """Run every configured query with the window's bounds as bound parameters; return the
    day's rows of the batch table and the other tables, time columns as UTC instants.

    Raises UnplacedRowsError, with the rows as they arrived, when a time cannot be read.
    """
    engine = source_engine(source_url, usecase.source.time_zone)
    bounds = window.bounds_for(engine.dialect.name)
    tables: dict[str, pd.DataFrame] = {}
    try:
        with engine.connect() as conn:
            for name, query in usecase.source.queries.items():
                statement, binds = _bound(query, bounds)
                tables[name] = pd.read_sql(statement, conn, params=binds)
    except sa.exc.DBAPIError as exc:
        raise _source_error(exc, source_url) from exc
    finally:
        engine.dispose()
    tables = _placed(usecase, window, tables)
    log.info(
        "%s %s: extracted %s from %s",
        usecase.name,
        window.day,
        {k: len(v) for k, v in tables.items()},
        masked_url(source_url),
    )
    return tables


def _placed(
    usecase: UseCase, window: BatchWindow, tables: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """Time columns parsed value by value; the batch table cut to the day's instants."""
    time_column = usecase.source.time_column
    placed = {}
    for name, frame in tables.items():
        if time_column not in frame.columns:
            placed[name] = frame
            continue
        parsed, unreadable = parse_instants(frame[time_column], usecase.source.time_zone)
        if unreadable.any():
            bad = frame[unreadable]
            shown = ", ".join(repr(v) for v in bad[time_column].drop_duplicates().head(5))
            raise UnplacedRowsError(
                f"{name}.{time_column}: {len(bad)} of {len(frame)} extracted rows have a time "
                f"that is not an ISO 8601 instant, e.g. [{shown}]",
                bad,
            )
        frame = frame.assign(**{time_column: parsed})
        if name == usecase.source.batch_table:
            in_day = (parsed >= window.start) & (parsed < window.end)
            frame = frame[in_day.to_numpy()].reset_index(drop=True)
        placed[name] = frame
    return placed


def extract_day(
    usecase: UseCase,
    settings: Settings,
    source_url: str,
    window: BatchWindow,
    records: Records | None = None,
) -> tuple[dict[str, pd.DataFrame], SourceCounts]:
    """What the ETL extracts (the CLI and the DAG): the source's counts first, then the rows.

    A day the counts already refuse (more rows than the suite's `max_rows`, or rows of the
    table that no day can hold) is quarantined before a row of it is read, in seconds and
    bounded memory; so is a day with a time that cannot be read, with the rows as they came.
    `records`: where a refusal is written (default: the ETL's records of the day).
    """
    records = records or Records.of_load(usecase, settings, window.day)
    counts = count_source(usecase, source_url, window)
    refusals = []
    max_rows = usecase.validation.parameters.get("max_rows")
    if max_rows is not None and counts.day_rows > int(max_rows):
        refusals.append(
            _refusal(
                "source_row_count",
                usecase.source.batch_table,
                f"the source has {counts.day_rows:,} rows in the day, more than max_rows "
                f"{int(max_rows):,}: refused before extracting them",
            )
        )
    unplaced = pd.DataFrame()
    if counts.unplaced_rows > usecase.source.max_unplaced_rows:
        unplaced = unplaced_rows(usecase, source_url)
        examples = unplaced[usecase.source.time_column].drop_duplicates().head(5)
        shown = ", ".join(repr(v) for v in examples)
        refusals.append(
            _refusal(
                "placeable_time",
                usecase.source.time_column,
                f"{counts.unplaced_rows} rows of {usecase.source.batch_table} have a "
                f"{usecase.source.time_column} that places them in no day (NULL, not text, or "
                f"unreadable), e.g. [{shown}]; more than source.max_unplaced_rows "
                f"({usecase.source.max_unplaced_rows}). They may belong to this day",
            )
        )
    if refusals:
        _refuse(usecase, settings, window.day, counts, refusals, unplaced, records)
    try:
        tables = extract(usecase, source_url, window)
    except UnplacedRowsError as exc:
        refusal = _refusal("readable_time", usecase.source.time_column, str(exc))
        _refuse(usecase, settings, window.day, counts, [refusal], exc.rows, records)
    return tables, counts


def _refusal(check: str, column: str | None, observed: str) -> dict[str, Any]:
    return {"expectation": check, "column": column, "observed": observed}


def _refuse(
    usecase: UseCase,
    settings: Settings,
    day: dt.date,
    counts: SourceCounts,
    refusals: list[dict[str, Any]],
    rows: pd.DataFrame,
    records: Records,
) -> None:
    """Quarantine a day refused at the source (with the offending rows as they arrived) and
    raise: nothing was loaded."""
    record = {
        "usecase": usecase.name,
        "day": day.isoformat(),
        "rows": len(rows),
        "stage": "source",
        "success": False,
        "failures": refusals,
        "reconciliation": {**counts.as_dict(), "loaded_rows": None, "agrees": False},
    }
    storage.write_json(record, records.result)
    folder = quarantine_batch(rows, record, usecase, settings, day, records)
    lines = "\n".join(f"  - {r['expectation']}: {r['observed']}" for r in refusals)
    raise BatchRejectedError(
        f"{usecase.name} {day} refused at the source; {records.refused}.\n{lines}\n"
        f"Quarantined in {folder}",
        folder,
    )


def transform(usecase: UseCase, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The day's batch: the rows of the batch table, or what the use-case's hook builds from
    the extracted tables; then the label rule. Columns in curated order.

    Without `transform` the batch table is the batch, as its query returned it (the query can
    join): it must hold the key, event_time, the features, the passthrough columns and those the
    label rule reads (and missing_when_null); the rest is dropped. event_time is read as
    instants like the source's time column.

    The hook, `transform: package.module:function` for real feature code, is called as
    `function(tables, usecase)`: `tables` maps each name of source.queries to its extracted
    frame (the batch table cut to the day; source.time_column as UTC instants), `usecase` is
    this config. It returns one DataFrame row per batch-table row, holding at least the curated
    columns but the label, plus the columns the label rule reads; the label is computed after
    it, and extra columns are dropped. An exception it raises (bad data: a value it cannot
    convert) quarantines the day; a hook that cannot be imported is a ConfigError
    (`driftline check` finds it before any run).
    """
    if usecase.transform is None:
        batch = _batch_table(usecase, tables)
        made_by = f"the {usecase.source.batch_table} table"
    else:
        builder: Callable[[dict[str, pd.DataFrame], UseCase], pd.DataFrame] = import_object(
            usecase.transform, field="transform"
        )
        try:
            batch = builder(tables, usecase)
        except Exception as exc:
            raise TransformError(
                f"{usecase.transform} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(batch, pd.DataFrame):
            raise TransformError(
                f"{usecase.transform} returned a {type(batch).__name__}, not a pandas DataFrame"
            )
        made_by = usecase.transform
    missing = [
        c for c in dict.fromkeys([*usecase.curated_columns, usecase.label.missing_when_null])
        if c not in batch.columns and c != usecase.label.name
    ]
    if missing:
        raise TransformError(f"{made_by} has no column(s) {missing}")
    batch = batch.copy()
    batch[usecase.label.name] = label_values(batch, usecase)
    return batch[usecase.curated_columns]


def _batch_table(usecase: UseCase, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The batch table cut to the columns a use-case without `transform` takes from it."""
    name = usecase.source.batch_table
    try:
        wanted = usecase.batch_table_columns
    except ValueError as exc:
        raise ConfigError(f"label.rule: {exc}") from exc
    frame = tables[name]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise TransformError(
            f"{name} has no column(s) {missing} (without `transform`, the batch table must "
            f"hold {wanted})"
        )
    batch = frame[wanted]
    if usecase.event_time != usecase.source.time_column:
        instants, unreadable = parse_instants(
            batch[usecase.event_time], usecase.source.time_zone
        )
        if unreadable.any():
            shown = ", ".join(repr(v) for v in batch[usecase.event_time][unreadable].head(5))
            raise TransformError(
                f"{name}.{usecase.event_time}: {int(unreadable.sum())} values are not ISO 8601 "
                f"instants, e.g. [{shown}]"
            )
        batch = batch.assign(**{usecase.event_time: instants})
    return batch


def build_batch(
    usecase: UseCase,
    settings: Settings,
    day: dt.date,
    tables: dict[str, pd.DataFrame],
    records: Records | None = None,
) -> pd.DataFrame:
    """`transform`, but a batch that cannot be built is quarantined as extracted, not lost."""
    try:
        return transform(usecase, tables)
    except TransformError as exc:
        records = records or Records.of_load(usecase, settings, day)
        extracted = tables.get(usecase.source.batch_table, pd.DataFrame())
        record = {
            "usecase": usecase.name,
            "day": day.isoformat(),
            "rows": len(extracted),
            "stage": "transform",
            "success": False,
            "failures": [{"expectation": "build_batch", "column": None, "observed": str(exc)}],
        }
        folder = quarantine_batch(extracted, record, usecase, settings, day, records)
        raise BatchRejectedError(
            f"{usecase.name} batch for {day} could not be built: {exc}; {records.refused}. "
            f"Extracted rows quarantined in {folder}",
            folder,
        ) from exc


def label_values(batch: pd.DataFrame, usecase: UseCase) -> pd.Series:
    """The label rule as a nullable boolean: unknown where its source column is null."""
    rule, source = usecase.label.rule, usecase.label.missing_when_null
    if source not in batch.columns:
        raise TransformError(f"label.missing_when_null: the batch has no column {source!r}")
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
            "reconciliation": validation.get("reconciliation"),
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
    source_url = source_url or settings.source_url(usecase)
    tables, counts = extract_day(usecase, settings, source_url, window)
    batch = build_batch(usecase, settings, day, tables)
    outcome = gate_batch(batch, usecase, settings, day, counts.as_dict())
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
    tables, counts = extract_day(usecase, settings, settings.source_url(usecase), window)
    folder = settings.staging_dir(usecase.name, window.day, run)
    paths = {
        name: str(storage.write_parquet(frame, folder / f"raw_{name}.parquet"))
        for name, frame in tables.items()
    }
    rows = len(tables[usecase.source.batch_table])
    return {
        "day": window.day.isoformat(),
        "tables": paths,
        "rows": rows,
        "source": counts.as_dict(),
    }


def transform_staged(usecase: UseCase, settings: Settings, extracted: dict) -> dict:
    day = dt.date.fromisoformat(extracted["day"])
    tables = {name: pd.read_parquet(path) for name, path in extracted["tables"].items()}
    batch = build_batch(usecase, settings, day, tables)
    folder = Path(next(iter(extracted["tables"].values()))).parent
    path = storage.write_parquet(batch, folder / "batch.parquet")
    return {
        "day": day.isoformat(),
        "batch": str(path),
        "rows": len(batch),
        "source": extracted.get("source"),
    }


def validate_staged(usecase: UseCase, settings: Settings, built: dict) -> dict:
    """Gate the staged batch; the summary it returns pins the batch file by its hash."""
    day = dt.date.fromisoformat(built["day"])
    digest, batch = _read_pinned(Path(built["batch"]))
    outcome = gate_batch(batch, usecase, settings, day, built.get("source"))
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
