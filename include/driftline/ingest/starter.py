"""A starter for a new use-case: a draft config and expectation suite from a sample of a table.

`driftline new-usecase` reads the last days of a source table the way the ETL reads a day
(the same query, bound parameters, times read as instants), profiles each column, and writes
usecases/<name>.yaml (every choice commented with what was observed) and
expectations/<name>_batch.json (bounds from the sample, with a margin). It is a draft: a value
the sample never showed quarantines its day until someone widens the suite.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from driftline import storage
from driftline.config import _NAME, ConfigError, Settings, UseCase, parse_usecase, rule_columns
from driftline.ingest import etl

# A text column with more distinct values than this in the sample is not a category (an id,
# a name, free text): left out of the features, and said so in the draft.
MAX_CATEGORIES = 50
MAX_SAMPLE_ROWS = 200_000
SAMPLE_DAYS = 14

Kind = Literal["numeric", "categorical", "boolean", "datetime", "text", "empty"]


class StarterError(ValueError):
    """The draft cannot be made; the message names the table, column or rule at fault."""


@dataclass(frozen=True)
class StarterRequest:
    """What `driftline new-usecase` was asked for."""

    name: str
    table: str
    time_column: str
    label_rule: str
    label_name: str = "label"
    label_missing_when_null: str | None = None
    key: str | None = None
    timezone: str = "UTC"
    source_time_zone: str = "UTC"  # the zone the source's naive times are written in
    sample_days: int = SAMPLE_DAYS
    max_sample_rows: int = MAX_SAMPLE_ROWS
    source_url: str | None = None
    force: bool = False

    @property
    def url_env(self) -> str:
        return f"DRIFTLINE_{self.name.upper()}_SOURCE_URL"

    @property
    def suite(self) -> str:
        return f"{self.name}_batch"


@dataclass(frozen=True)
class ColumnProfile:
    """One column over the sample, as the ETL's batch holds it (its stored form)."""

    name: str
    sql_type: str
    kind: Kind
    null_share: float  # over the whole sample
    worst_day_null_share: float  # the highest share of a single day
    distinct: int
    minimum: float | None = None  # numeric only
    maximum: float | None = None
    integral: bool = False  # every numeric value a whole number
    categories: list[Any] | None = None  # categorical and boolean only


@dataclass(frozen=True)
class Sample:
    """The rows of the sampled days (stored form, times as UTC instants) and their counts."""

    rows: pd.DataFrame
    rows_per_day: dict[dt.date, int]  # every calendar day of the span, 0 for a day with none
    sql_types: dict[str, str]  # column -> its declared SQL type, in table order
    query: str  # the batch query the rows were read with, as the config will hold it

    @property
    def days(self) -> list[dt.date]:
        return [day for day, count in self.rows_per_day.items() if count]


@dataclass(frozen=True)
class Draft:
    """What the starter wrote, and what it decided."""

    config_path: Path
    suite_path: Path
    usecase: UseCase
    plan: Plan


def new_usecase(request: StarterRequest, settings: Settings, today: dt.date | None = None) -> Draft:
    """Sample, profile and write the draft; nothing is written unless every step succeeded.

    `today`: the day the sample must end before (default: today in the use-case's zone)."""
    if not _NAME.match(request.name):
        raise StarterError(
            f"use-case name {request.name!r}: lower-case letters, digits and _ only, starting "
            "with a letter (it names DAGs and folders)"
        )
    tz = _zone(request.timezone)
    _zone(request.source_time_zone, "--source-time-zone")
    config_path = settings.usecase_path(request.name)
    suite_path = settings.suite_path(request.suite)
    existing = [str(p) for p in (config_path, suite_path) if p.exists()]
    if existing and not request.force:
        raise StarterError(
            f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: "
            f"review or move {'it' if len(existing) == 1 else 'them'}, or pass --force to "
            "overwrite"
        )
    url = request.source_url or _source_url(request, settings)
    sample = read_sample(request, url, tz, today or dt.datetime.now(tz).date())
    key = _key(request, sample)
    label = _label(request, sample, tz)
    plan = plan_draft(request, sample, profile(sample, request.time_column, tz), key, label, url)
    usecase = _checked(plan, settings)
    unplaced = _unplaced_rows(usecase, url, plan.last_day)
    if unplaced:
        plan = replace(plan, unplaced_rows=unplaced)
        usecase = _checked(plan, settings)
    storage.write_text(_suite_text(plan), suite_path)
    storage.write_text(render(plan), config_path)
    return Draft(config_path, suite_path, usecase, plan)


def _zone(name: str, option: str = "--timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise StarterError(f"{option} {name!r} is not a known time zone") from exc


def _source_url(request: StarterRequest, settings: Settings) -> str:
    """The URL the ETL will read: the config's environment variable, else the SQLite file."""
    return os.environ.get(request.url_env) or settings.default_source_url(request.name)


def _engine(url: str, time_zone: str) -> sa.Engine:
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:"):
        if not Path(database).is_file():
            raise StarterError(
                f"source database {etl.masked_url(url)} does not exist: pass --source-url, "
                "or set the use-case's DRIFTLINE_<NAME>_SOURCE_URL"
            )
    return etl.source_engine(url, time_zone)


def read_sample(request: StarterRequest, url: str, tz: ZoneInfo, today: dt.date) -> Sample:
    """The last `sample_days` days of the table that are over (ending on the newest row's
    day, or yesterday if that is today or later), at most `max_sample_rows` rows: the newest
    days that fit. Read with the query the config will hold, as the ETL reads a day."""
    engine = _engine(url, request.source_time_zone)
    dialect = type(engine.dialect)(paramstyle="named")  # renders :start, :end
    query = batch_query(request.table, request.time_column, dialect)
    try:
        with engine.connect() as conn:
            sql_types = _columns(conn, request, url)
            newest = _newest(conn, request)
            last = min(newest.astimezone(tz).date(), today - dt.timedelta(days=1))
            first = last - dt.timedelta(days=request.sample_days - 1)
            times = _read(conn, _time_query(request, dialect), request, tz, first, last)
            counts = _rows_per_day(times[request.time_column], tz, first, last)
            kept = _fitting_days(counts, request)
            rows = _read(conn, query, request, tz, min(kept), max(kept))
    except sa.exc.DBAPIError as exc:
        raise StarterError(
            f"source database {etl.masked_url(url)} could not be read: {exc.orig}"
        ) from exc
    finally:
        engine.dispose()
    span = {day: n for day, n in counts.items() if min(kept) <= day <= max(kept)}
    return Sample(storage.to_arrow(rows).to_pandas(), span, sql_types, query)


def _columns(conn: sa.Connection, request: StarterRequest, url: str) -> dict[str, str]:
    """The table's columns and their declared SQL types; every name given must be one."""
    inspector = sa.inspect(conn)
    tables = [*inspector.get_table_names(), *inspector.get_view_names()]
    if request.table not in tables:
        raise StarterError(
            f"no table {request.table!r} in {etl.masked_url(url)}; it has {sorted(tables)}"
        )
    columns = {c["name"]: str(c["type"]) for c in inspector.get_columns(request.table)}
    named = {
        "--time-column": request.time_column,
        "--key": request.key,
        "--label-missing-when-null": request.label_missing_when_null,
    }
    for option, column in named.items():
        if column is not None and column not in columns:
            raise StarterError(
                f"{option}: no column {column!r} in table {request.table!r}; it has "
                f"{list(columns)}"
            )
    if request.label_name in columns:
        raise StarterError(
            f"--label-name {request.label_name!r} is already a column of {request.table!r}: "
            "name the label something else"
        )
    return columns


def batch_query(table: str, time_column: str, dialect: sa.Dialect) -> str:
    """The config's batch query, its names quoted by SQLAlchemy for the source's dialect,
    :start and :end bound (never formatted in)."""
    statement = (
        sa.select(sa.text("*"))
        .select_from(sa.table(table))
        .where(
            sa.column(time_column) >= sa.bindparam("start"),
            sa.column(time_column) < sa.bindparam("end"),
        )
    )
    return _one_line(str(statement.compile(dialect=dialect)))


def _one_line(sql: str) -> str:
    """SQLAlchemy's compiled text without its line breaks (the config holds one line)."""
    return re.sub(r"\s*\n\s*", " ", sql).strip()


def _time_query(request: StarterRequest, dialect: sa.Dialect) -> str:
    """The batch query's time column alone: what counting the days needs."""
    column = sa.column(request.time_column)
    statement = (
        sa.select(column)
        .select_from(sa.table(request.table))
        .where(column >= sa.bindparam("start"), column < sa.bindparam("end"))
    )
    return str(statement.compile(dialect=dialect))


def _newest(conn: sa.Connection, request: StarterRequest) -> dt.datetime:
    newest = conn.execute(
        sa.select(sa.func.max(sa.column(request.time_column))).select_from(sa.table(request.table))
    ).scalar_one()
    parsed, _ = etl.parse_instants(pd.Series([newest], dtype=object), request.source_time_zone)
    if pd.isna(parsed.iloc[0]):
        raise StarterError(
            f"table {request.table!r} has no row with a readable {request.time_column} "
            f"(its newest value: {newest!r})"
        )
    return parsed.iloc[0].to_pydatetime()


def _read(
    conn: sa.Connection,
    query: str,
    request: StarterRequest,
    tz: ZoneInfo,
    first: dt.date,
    last: dt.date,
) -> pd.DataFrame:
    """The query's rows of the local days first..last, bound as the ETL binds a day (on
    SQLite widened, then placed by each time read as an instant)."""
    start = dt.datetime.combine(first, dt.time(), tzinfo=tz).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=tz).astimezone(dt.UTC)
    window = etl.BatchWindow(first, start, end, request.source_time_zone)
    bounds = window.bounds_for(conn.dialect.name)
    statement = sa.text(query).bindparams(
        sa.bindparam("start", type_=sa.DateTime()), sa.bindparam("end", type_=sa.DateTime())
    )
    rows = pd.read_sql(statement, conn, params=bounds)
    instants, _ = etl.parse_instants(rows[request.time_column], request.source_time_zone)
    inside = ((instants >= start) & (instants < end)).to_numpy()
    return rows.assign(**{request.time_column: instants})[inside].reset_index(drop=True)


def _rows_per_day(
    times: pd.Series, tz: ZoneInfo, first: dt.date, last: dt.date
) -> dict[dt.date, int]:
    """Rows of each local day first..last (0 for a day with none)."""
    per_day = times.dt.tz_convert(tz).dt.date.value_counts()
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    return {day: int(per_day.get(day, 0)) for day in days}


def _fitting_days(counts: dict[dt.date, int], request: StarterRequest) -> list[dt.date]:
    """The newest days with rows whose rows add up to at most max_sample_rows."""
    kept, total = [], 0
    for day in sorted((d for d, n in counts.items() if n), reverse=True):
        if total + counts[day] > request.max_sample_rows:
            break
        kept.append(day)
        total += counts[day]
    if kept:
        return kept
    with_rows = [d for d, n in counts.items() if n]
    if not with_rows:
        raise StarterError(
            f"table {request.table!r} has no row in the {request.sample_days} days "
            f"{min(counts)} .. {max(counts)} (ending on its newest {request.time_column}'s "
            "day, or yesterday)"
        )
    newest = max(with_rows)
    raise StarterError(
        f"{newest} alone has {counts[newest]:,} rows of {request.table!r}, more than "
        f"--max-sample-rows {request.max_sample_rows:,}"
    )


def profile(sample: Sample, time_column: str, tz: ZoneInfo) -> list[ColumnProfile]:
    """Each column's kind, nulls (overall and on its worst day), range and categories."""
    rows = sample.rows
    local_day = rows[time_column].dt.tz_convert(tz).dt.date
    profiles = []
    for column, sql_type in sample.sql_types.items():
        values = rows[column]
        nulls = values.isna()
        present = values[~nulls]
        kind = _kind(values, sql_type)
        extra: dict[str, Any] = {}
        if kind == "numeric":
            extra = {
                "minimum": float(present.min()),
                "maximum": float(present.max()),
                "integral": bool((present % 1 == 0).all()),
            }
        elif kind in ("categorical", "boolean"):
            extra = {"categories": sorted(_plain(v) for v in present.unique())}
        profiles.append(
            ColumnProfile(
                name=column,
                sql_type=sql_type,
                kind=kind,
                null_share=float(nulls.mean()),
                worst_day_null_share=float(nulls.groupby(local_day).mean().max()),
                distinct=int(present.nunique()),
                **extra,
            )
        )
    return profiles


def _kind(values: pd.Series, sql_type: str) -> Kind:
    """What a column can be to the model: booleans and times by their declared SQL type
    (SQLite hands booleans over as 0/1), numbers and text by the values the batch holds."""
    declared = sql_type.upper()
    if values.isna().all():
        return "empty"
    if "BOOL" in declared or pd.api.types.is_bool_dtype(values):
        return "boolean"
    if "DATE" in declared or "TIME" in declared or pd.api.types.is_datetime64_any_dtype(values):
        return "datetime"
    if pd.api.types.is_numeric_dtype(values):
        return "numeric"
    return "categorical" if values.nunique() <= MAX_CATEGORIES else "text"


def _plain(value: Any) -> Any:
    """A numpy scalar as the JSON suite holds it."""
    return value.item() if hasattr(value, "item") else value


def _key(request: StarterRequest, sample: Sample) -> str:
    """--key, checked; else a column unique and never null over the sample (not a time, not
    a float): the first named like an id (`id`, `..._id`), else the first."""
    rows = sample.rows
    if request.key:
        values = rows[request.key]
        if values.isna().any() or not values.is_unique:
            raise StarterError(
                f"--key {request.key}: not a key over the sample of {len(rows):,} rows "
                f"({int(values.duplicated().sum()):,} repeated values, "
                f"{int(values.isna().sum()):,} nulls)"
            )
        return request.key
    named_like_an_id = sorted(sample.sql_types, key=lambda c: not re.search(r"(^|_)id$", c.lower()))
    for column in named_like_an_id:
        values = rows[column]
        if (
            column != request.time_column
            and not pd.api.types.is_float_dtype(values)
            and not pd.api.types.is_datetime64_any_dtype(values)
            and values.notna().all()
            and values.is_unique
        ):
            return column
    raise StarterError(
        f"no column of {request.table!r} is unique and never null over the sample of "
        f"{len(rows):,} rows: name the key with --key"
    )


@dataclass(frozen=True)
class LabelProfile:
    inputs: list[str]  # the columns the rule reads, in order of first use
    missing_when_null: str
    positive_share: float  # of the sampled rows whose label is known
    worst_day_missing_share: float
    fewest_labelled: int  # on a sampled day with rows


def _label(request: StarterRequest, sample: Sample, tz: ZoneInfo) -> LabelProfile:
    """The rule read as the platform reads it (config.rule_columns), then evaluated on the
    sample as the ETL does (pandas eval): it must give true or false for each row."""
    rows, rule = sample.rows, request.label_rule
    try:
        inputs = rule_columns(rule)
    except ValueError as exc:
        raise StarterError(f"label rule {exc}") from exc
    unknown = [c for c in inputs if c not in rows.columns]
    if unknown:
        raise StarterError(
            f"label rule {rule!r} reads {unknown}, not columns of {request.table!r} "
            f"({list(rows.columns)})"
        )
    try:
        values = rows.eval(rule)
    except Exception as exc:
        raise StarterError(
            f"label rule {rule!r} does not evaluate on {request.table!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(values, pd.Series) or not pd.api.types.is_bool_dtype(values):
        raise StarterError(
            f"label rule {rule!r} must give true or false for each row (a comparison such "
            f"as 'delay > 15'), not {getattr(values, 'dtype', type(values).__name__)}"
        )
    missing_when_null = request.label_missing_when_null or (inputs[0] if inputs else None)
    if missing_when_null is None:
        raise StarterError(
            f"label rule {rule!r} reads no column: name the column whose null means "
            "'outcome unknown' with --label-missing-when-null"
        )
    unknown_rows = rows[missing_when_null].isna()
    local_day = rows[request.time_column].dt.tz_convert(tz).dt.date
    known = values[~unknown_rows]
    return LabelProfile(
        inputs=list(dict.fromkeys([*inputs, missing_when_null])),
        missing_when_null=missing_when_null,
        positive_share=float(known.mean()) if len(known) else 0.0,
        worst_day_missing_share=float(unknown_rows.groupby(local_day).mean().max()),
        fewest_labelled=int((~unknown_rows).groupby(local_day).sum().min()),
    )


# --- the draft's numbers ---------------------------------------------------------------


def widened(minimum: float, maximum: float, integral: bool) -> tuple[float, float]:
    """An observed range widened by half its span each way (a constant by half its value);
    a column never negative stays so, and whole numbers stay whole."""
    span = maximum - minimum
    margin = span / 2 if span > 0 else max(abs(maximum) / 2, 1.0)
    low, high = minimum - margin, maximum + margin
    if minimum >= 0:
        low = max(0.0, low)
    if integral:
        return float(math.floor(low)), float(math.ceil(high))
    return _significant(low, math.floor), _significant(high, math.ceil)


def _significant(value: float, rounding: Callable[[float], int]) -> float:
    """`value` rounded outward to 3 significant digits."""
    if value == 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(abs(value))) - 2)
    return float(f"{rounding(value / step) * step:.6g}")


def min_present(worst_day_null_share: float) -> float:
    """The least share of non-null values a day may have: the worst day's nulls doubled,
    plus 5 points, as a share present (0: no useful bound)."""
    allowed = min(1.0, 2 * worst_day_null_share + 0.05)
    return max(0.0, math.floor(round((1 - allowed) * 100, 6)) / 100)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True)
class Plan:
    """Every decision of the draft, made once: the template and the suite only render it."""

    request: StarterRequest
    masked_url: str
    query: str
    key: ColumnProfile
    time: ColumnProfile
    label: LabelProfile
    categorical: list[ColumnProfile]
    numerical: list[ColumnProfile]
    passthrough: list[ColumnProfile]  # the label's inputs: the outcome, not known ahead
    left_out: list[tuple[ColumnProfile, str]]  # and why
    first_day: dt.date
    last_day: dt.date
    empty_days: list[dt.date]  # days of the span without a row
    sample_rows: int
    observed_days: int
    fewest_rows: int
    most_rows: int
    holdout_days: int
    window_days: int
    slice_column: ColumnProfile | None
    unplaced_rows: int = 0

    @property
    def sampled(self) -> str:
        """`2,929 rows of the 10 days 2024-03-01 .. 2024-03-10 (UTC)`"""
        return (
            f"{self.sample_rows:,} rows of the {self.observed_days} days {self.first_day} .. "
            f"{self.last_day} ({self.request.timezone})"
        )

    @property
    def min_rows(self) -> int:
        return max(1, self.fewest_rows // 2)

    @property
    def max_rows(self) -> int:
        return self.most_rows * 2

    @property
    def min_label_present(self) -> float:
        return min_present(self.label.worst_day_missing_share)

    @property
    def fewest_labelled(self) -> int:
        return self.label.fewest_labelled

    @property
    def min_train_rows(self) -> int:
        """Half the labelled rows of the window's days at the sample's fewest."""
        return max(1, self.fewest_labelled * self.window_days // 2)

    @property
    def min_compare_rows(self) -> int:
        """Half the labelled rows of the holdout's days at the sample's fewest."""
        return max(1, self.fewest_labelled * self.holdout_days // 2)

    @property
    def min_slice_rows(self) -> int:
        return max(1, min(100, self.min_compare_rows // 5))

    @property
    def current_days(self) -> int:
        return min(7, self.window_days)

    @property
    def notes(self) -> list[str]:
        """What the user should know before running the draft."""
        notes = []
        if self.empty_days:
            notes.append(
                f"no rows on {', '.join(map(str, self.empty_days))}: the ETL refuses such a "
                f"day (min_rows {self.min_rows})"
            )
        if self.label.positive_share in (0.0, 1.0):
            outcome = "true" if self.label.positive_share else "false"
            notes.append(
                f"the label rule is {outcome} on every labelled row of the sample: a model "
                "needs both outcomes"
            )
        if self.unplaced_rows:
            notes.append(
                f"{self.unplaced_rows} rows of {self.request.table} have a time that places "
                "them in no day: accepted by source.max_unplaced_rows, review them"
            )
        return notes


def plan_draft(
    request: StarterRequest,
    sample: Sample,
    profiles: list[ColumnProfile],
    key: str,
    label: LabelProfile,
    url: str,
) -> Plan:
    """The draft's columns (features, passthrough, left out) and sizes, from the profile.

    Features are every column but the key, the time and the label's inputs: text and
    booleans categorical, numbers numerical. Training is sized to the sampled span: a quarter
    (1..7 days) to judge on, the rest (up to 31) to train on.
    """
    by_name = {p.name: p for p in profiles}
    categorical, numerical, left_out = [], [], []
    for p in profiles:
        if p.name in (key, request.time_column) or p.name in label.inputs:
            continue
        if p.kind in ("categorical", "boolean"):
            categorical.append(p)
        elif p.kind == "numeric":
            numerical.append(p)
        else:
            left_out.append((p, _left_out_reason(p)))
    if not categorical and not numerical:
        raise StarterError(
            f"no column of {request.table!r} can be a feature (after key, time and the "
            f"label's inputs {label.inputs}): {[(p.name, why) for p, why in left_out]}"
        )
    counts = [n for n in sample.rows_per_day.values() if n]
    span_days = len(sample.rows_per_day)
    holdout_days = min(7, max(1, span_days // 4))
    return Plan(
        request=request,
        masked_url=etl.masked_url(url),
        query=sample.query,
        key=by_name[key],
        time=by_name[request.time_column],
        label=label,
        categorical=categorical,
        numerical=numerical,
        passthrough=[by_name[c] for c in label.inputs],
        left_out=left_out,
        first_day=sample.days[0],
        last_day=sample.days[-1],
        empty_days=[d for d, n in sample.rows_per_day.items() if not n],
        sample_rows=len(sample.rows),
        observed_days=len(sample.days),
        fewest_rows=min(counts),
        most_rows=max(counts),
        holdout_days=holdout_days,
        window_days=min(31, max(1, span_days - holdout_days)),
        slice_column=max(
            (p for p in categorical if 2 <= p.distinct <= 20),
            key=lambda p: p.distinct,
            default=None,
        ),
    )


def _yaml_scalar(value: Any) -> str:
    """`value` as YAML writes it inline: quoted only where YAML needs it."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1_000_000)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _left_out_reason(p: ColumnProfile) -> str:
    if p.kind == "text":
        return f"text with {p.distinct:,} values in the sample: too many for a category"
    if p.kind == "datetime":
        return "a time: derive a feature from it in a transform hook if it matters"
    return "null on every sampled row"


def _described(p: ColumnProfile) -> str:
    """A feature's line comment in the draft: what the sample showed of it."""
    if p.kind == "numeric":
        seen = f"{_number(p.minimum)} .. {_number(p.maximum)}"
    else:
        values = [str(v) for v in p.categories or []]
        seen = ", ".join(values[:8]) + (f", ... ({len(values)} values)" if len(values) > 8 else "")
    return re.sub(r"\s+", " ", f"{p.kind} ({p.sql_type}): {seen}; null {p.null_share:.1%}")


def suite(plan: Plan) -> dict[str, Any]:
    """The draft expectation suite (expectations/<name>_batch.json, GX 1.x), with the
    conventions of the reviewed ones: the curated schema, $PARAMETER row bounds, key and time
    checks, then each column's nulls and values as observed, a note on each."""
    request, label = plan.request, plan.label
    key, time = plan.key.name, plan.time.name
    columns = [
        key,
        time,
        *(p.name for p in [*plan.categorical, *plan.numerical]),
        request.label_name,
        *(p.name for p in plan.passthrough),
    ]
    sampled = plan.sampled
    expectations = [
        _expect(
            "expect_table_columns_to_match_ordered_list",
            f"The curated schema, in order (usecases/{request.name}.yaml).",
            column_list=columns,
        ),
        _expect(
            "expect_table_row_count_to_be_between",
            f"{plan.fewest_rows:,}..{plan.most_rows:,} rows a day in the sample; bounds from "
            "the use-case config (min_rows, max_rows).",
            min_value={"$PARAMETER": "min_rows"},
            max_value={"$PARAMETER": "max_rows"},
        ),
        _expect(
            "expect_column_values_to_not_be_null", f"The key: never null in {sampled}.", column=key
        ),
        _expect(
            "expect_column_values_to_be_unique",
            "One row per key and day: a duplicate means the source sent it twice.",
            column=key,
        ),
        _expect(
            "expect_column_values_to_not_be_null",
            "The event time places each row in a day.",
            column=time,
        ),
        _expect(
            "expect_column_values_to_be_between",
            "Every row belongs to its partition's day: its time (UTC) is inside the day's "
            "bounds, which the platform fills in for each day (day_start inclusive, day_end "
            "exclusive).",
            column=time,
            min_value={"$PARAMETER": "day_start"},
            max_value={"$PARAMETER": "day_end"},
            strict_max=True,
        ),
        _expect(
            "expect_column_proportion_of_non_null_values_to_be_between",
            f"The label is unknown where {label.missing_when_null} is null: on at most "
            f"{label.worst_day_missing_share:.1%} of a sampled day's rows (min_label_present "
            "in the use-case config).",
            column=request.label_name,
            min_value={"$PARAMETER": "min_label_present"},
            max_value=1,
        ),
    ]
    for p in [*plan.categorical, *plan.numerical, *plan.passthrough]:
        expectations.extend(_column_expectations(p, sampled))
    return {
        "name": request.suite,
        "expectations": expectations,
        "meta": {
            "notes": {
                "format": "markdown",
                "content": (
                    f"One day's {request.name} batch. A draft by `driftline new-usecase` from "
                    f"{sampled} of {request.table}: review it like code. A value the sample "
                    "never showed (a new category, a number out of range) quarantines its day."
                ),
            }
        },
        "notes": None,
    }


def _expect(kind: str, notes: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {"notes": notes}}


def _column_expectations(p: ColumnProfile, sampled: str) -> list[dict[str, Any]]:
    """A column's nulls (none, or at most a bound), then its range or its values."""
    found = []
    if p.worst_day_null_share == 0:
        found.append(
            _expect("expect_column_values_to_not_be_null", f"Never null in {sampled}.",
                    column=p.name)
        )
    elif (least := min_present(p.worst_day_null_share)) > 0:
        found.append(
            _expect(
                "expect_column_proportion_of_non_null_values_to_be_between",
                f"Null in {p.null_share:.1%} of {sampled}, at most "
                f"{p.worst_day_null_share:.1%} of a day; bound: twice that plus 5 points.",
                column=p.name,
                min_value=least,
                max_value=1,
            )
        )
    if p.kind == "numeric":
        low, high = widened(p.minimum, p.maximum, p.integral)
        found.append(
            _expect(
                "expect_column_values_to_be_between",
                f"{_number(p.minimum)}..{_number(p.maximum)} in {sampled}, widened by half "
                "the range each way (a column never negative stays so).",
                column=p.name,
                min_value=_number(low),
                max_value=_number(high),
            )
        )
    elif p.kind in ("categorical", "boolean"):
        found.append(
            _expect(
                "expect_column_values_to_be_in_set",
                f"The {len(p.categories)} values seen in {sampled}; a new one quarantines its "
                "day until it is added here.",
                column=p.name,
                value_set=p.categories,
            )
        )
    return found


def _checked(plan: Plan, settings: Settings) -> UseCase:
    """The rendered config and suite as the platform will read them (schema, consistency,
    the suite's columns and parameters), from a scratch folder: nothing is written to the
    real ones until this passes."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        scratch_settings = replace(settings, usecases_dir=folder, expectations_dir=folder)
        path = scratch_settings.usecase_path(plan.request.name)
        path.write_text(render(plan))
        scratch_settings.suite_path(plan.request.suite).write_text(_suite_text(plan))
        try:
            return parse_usecase(path, scratch_settings)
        except ConfigError as exc:
            raise StarterError(f"the draft does not validate (a starter bug): {exc}") from exc


def _suite_text(plan: Plan) -> str:
    return json.dumps(suite(plan), indent=2, ensure_ascii=False) + "\n"


def _unplaced_rows(usecase: UseCase, url: str, day: dt.date) -> int:
    """Rows of the table that no day can hold (NULL or unreadable time), counted as the ETL
    counts them: while there are more than source.max_unplaced_rows, no day loads."""
    return etl.count_source(usecase, url, etl.BatchWindow.for_day(day, usecase)).unplaced_rows


def render(plan: Plan) -> str:
    """The draft config as commented YAML (Jinja2: PyYAML cannot write comments); every
    value goes through JSON, which YAML reads as it is."""
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = _yaml_scalar
    env.filters["comment"] = lambda value: re.sub(r"\s+", " ", str(value)).strip()
    env.filters["count"] = lambda value: f"{value:,}"
    env.filters["described"] = _described
    env.filters["share"] = lambda value: f"{value:.1%}"
    context = {name: getattr(plan, name) for name in dir(plan) if not name.startswith("_")}
    return env.from_string(TEMPLATE).render(**context, today=dt.date.today())


TEMPLATE = """\
# {{ request.name }}: drafted by `driftline new-usecase` on {{ today }} from a sample of
# {{ request.table | comment }}: {{ sampled }}.
# A DRAFT: every bound here and in expectations/{{ request.suite }}.json is what the sample
# showed, with a margin. Review both before the nightly runs depend on them: a value the sample
# never showed (a new category, a number out of range) quarantines its day.
name: {{ request.name }}
description: >
  Drafted from {{ request.table | comment }} ({{ first_day }} .. {{ last_day }}); predicts
  {{ request.label_name | comment }} = {{ request.label_rule | comment }}.

# The operational day: a nightly run covers one {{ request.timezone }} day.
timezone: {{ request.timezone | q }}
# The first sampled day with rows; the ETL DAG catches up from here.
start_date: "{{ first_day }}"
# A night's run not finished this many hours after it was queued raises a deadline alert.
# night_deadline_hours: 6

source:
  # Environment variable that holds the SQLAlchemy URL of the source database. Unset: a
  # SQLite file under $DRIFTLINE_HOME/source/. The sample was read from
  # {{ masked_url | comment }}
  url_env: {{ request.url_env }}
  batch_table: {{ request.table | q }}
  # Declared {{ time.sql_type | comment }}; each value read as an instant.
  time_column: {{ request.time_column | q }}
  # The zone the source's naive times are written in (the sample was read so); a value with
  # an offset names its own instant.
  time_zone: {{ request.source_time_zone | q }}
  # Bound parameters only (:start, :end are the day's UTC bounds).
  queries:
    {{ request.table | q }}: {{ query | q }}
{% if unplaced_rows %}
  # {{ unplaced_rows }} rows of the table have a time that places them in no day (NULL or
  # unreadable): the ETL refuses every day while there are more than this. Review them.
  max_unplaced_rows: {{ unplaced_rows }}
{% endif %}

# No transform: the batch is the rows of {{ request.table | comment }} as extracted, reduced to
# the columns below (a use-case that needs joins or derived features names a hook here).

# Unique and never null over the {{ sample_rows | count }} sampled rows.
key: {{ key.name | q }}
event_time: {{ request.time_column | q }}

label:
  name: {{ request.label_name | q }}
  # True for {{ label.positive_share | share }} of the sampled rows whose outcome is known.
  rule: {{ request.label_rule | q }}
  # Where this is null the label is unknown: the row is kept (and scored) but not trained on.
  # Null on at most {{ label.worst_day_missing_share | share }} of a sampled day's rows.
  missing_when_null: {{ label.missing_when_null | q }}

features:
{% if categorical %}
  categorical:
{% for p in categorical %}
    - {{ p.name | q }}  # {{ p | described }}
{% endfor %}
{% else %}
  categorical: []
{% endif %}
{% if numerical %}
  numerical:
{% for p in numerical %}
    - {{ p.name | q }}  # {{ p | described }}
{% endfor %}
{% else %}
  numerical: []
{% endif %}

# The label's inputs: the outcome, not known ahead, so not features; kept in the curated store.
passthrough:
{% for p in passthrough %}
  - {{ p.name | q }}
{% endfor %}
{% if left_out %}
# Not used (not in the curated store):
{% for p, reason in left_out %}
#   {{ p.name | comment }}: {{ reason }}
{% endfor %}
{% endif %}

validation:
  suite: {{ request.suite }}
  # Values of the suite's $PARAMETER placeholders; the platform adds day_start and day_end.
  parameters:
    # {{ fewest_rows }}..{{ most_rows }} rows a day in the sample: half the fewest, twice the most.
    # max_rows is also checked at the source, before a row is extracted.
    min_rows: {{ min_rows }}
    max_rows: {{ max_rows }}
    # The label's nulls on the worst sampled day, doubled plus 5 points, as a share present.
    min_label_present: {{ min_label_present }}
{% if empty_days %}
  # No rows on {{ empty_days | join(", ") }}: those days fail min_rows. A day known to
  # differ gets a reviewed exception here (see usecases/flights.yaml).
{% endif %}

training:
  experiment: {{ request.name }}_training
  registered_model: {{ request.name }}_model
  # Sized to the sample: {{ window_days }} days to train on, then {{ holdout_days }} to judge on.
  # Lengthen both once more history is loaded (flights: 31 and 7).
  window_days: {{ window_days }}
  holdout_days: {{ holdout_days }}
  # Half the labelled rows of the window's days at the sample's fewest labelled a day
  # ({{ fewest_labelled }}).
  min_train_rows: {{ min_train_rows }}
  gate:
    primary_metric: roc_auc
    # A first model is promoted when it beats chance on its holdout; a later one when it
    # also does at least as well as the champion, on every slice within 0.05.
    floor: 0.5
    min_improvement: 0.0
    slice_tolerance: 0.05
    # Half the labelled rows of the holdout days at the sample's fewest.
    min_compare_rows: {{ min_compare_rows }}
    min_slice_rows: {{ min_slice_rows }}
{% if slice_column %}
    slices:
      # The categorical feature with the most values ({{ slice_column.distinct }}): its 5 largest.
      {{ slice_column.name | q }}: 5
{% else %}
    slices: {}  # no categorical feature with 2..20 values to slice by
{% endif %}

# Nightly monitoring: drift of the features against the champion's training rows. The
# thresholds are the platform's defaults: measure them on your own history (a replay) before
# trusting the drift sensor to retrain.
monitoring:
  # A night's report covers the night and the days before it (single days are noisy).
  current_days: {{ current_days }}
  columns:
{% for p in categorical + numerical %}
    - {{ p.name | q }}
{% endfor %}
  tests:
    num_method: wasserstein
    num_threshold: 0.1
    cat_method: jensenshannon
    cat_threshold: 0.1
    dataset_drift_share: 0.5
  rule:
    drift_share: 0.5
    nights_drifted: 3
    nights_window: 5
    # A night's quality figure needs this many labelled rows (the sample's fewest a day).
    min_labelled_rows: {{ [fewest_labelled, 200] | min }}
    # No retraining within 14 days of the champion's training; one the gate refused is
    # retried after retry_days. A firing on the drift share trains from the shift's onset
    # once that leaves min_window_days days before the holdout (README: the drift rule).
    cooldown_days: 14
    retry_days: 7
    from_onset: true
    min_window_days: 7

# Assumed: a day's rows arrive with their outcome, so each night scores the day just loaded
# and judges it at once. If the outcome arrives later, set label_delay_days; if a day's rows
# are known before it starts (a schedule), `ahead: next_day` scores them the night before.
scoring:
  ahead: loaded_day
  label_delay_days: 0
"""
