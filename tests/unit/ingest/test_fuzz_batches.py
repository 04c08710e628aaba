"""Malformed source batches, generated: each one is loaded valid or quarantined with a named
reason; never a crash, never a silent drop.

Hypothesis starts from the real extract of one day of the seeded source and breaks it: wrong
types in number columns, nulls, extreme values (huge, negative, NaN, inf), unicode and very
long strings in the text columns, duplicated flights, missing columns, an empty day, and bad
rows in the tables joined onto the flights. Every example then goes through the ETL's own path,
drawn at random: the in-process one (`run_day`, what `driftline etl` runs) or the DAG's staged
one (`extract_to_staging` -> `transform_staged` -> `validate_staged` -> `load_staged`), with
only `etl.extract_day` replaced so that it returns the broken tables (and a source count of
their rows).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, example, given, note
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from driftline.config import load_usecase
from driftline.ingest import etl
from driftline.ingest.validation import BatchRejectedError, load_suite_json, validate_batch
from driftline.usecases import flights as flights_usecase
from tests.conftest import repo_settings, sqlite_url

JAN2 = dt.date(2013, 1, 2)
ROWS = 943  # flights on 2 Jan 2013

# Columns of each extracted table that hypothesis may break (the flights query's time column
# is the range it was selected by: it can only be missing, never another value).
FLIGHT_COLUMNS = [
    "year",
    "month",
    "day",
    "dep_time",
    "sched_dep_time",
    "dep_delay",
    "arr_time",
    "sched_arr_time",
    "arr_delay",
    "carrier",
    "flight",
    "tailnum",
    "origin",
    "dest",
    "air_time",
    "distance",
    "hour",
    "minute",
]
JOINED_COLUMNS = {
    "weather": ["origin", *flights_usecase.WEATHER_COLUMNS],
    "planes": ["tailnum", "year", "type", "engines", "seats"],
    "airports": ["faa", "lat", "lon"],
}

# What the source sends that a value of a column can be instead of what it should be.
WRONG_TYPES = st.one_of(
    st.text(max_size=20),
    st.binary(max_size=8),  # a BLOB: SQLite stores one in any column
    st.decimals(allow_nan=False, allow_infinity=False, places=2),  # PostgreSQL NUMERIC
    st.floats(allow_nan=False, allow_infinity=False),
)
NULLS = st.sampled_from([None, math.nan])
EXTREMES = st.one_of(
    st.sampled_from(
        [
            0,
            -1,
            2**31,
            2**63 - 1,
            -(2**63),
            2**63,
            10**30,
            1e308,
            -1e308,
            math.inf,
            -math.inf,
            math.nan,
            5e-324,
            -0.0,
        ]
    ),
    st.integers(),
    st.floats(),
)
UNICODE = st.text(min_size=1, max_size=40)  # any code point but surrogates: RTL, emoji, NUL...
HUGE_TEXT = st.builds(lambda c, n: c * n, st.characters(), st.integers(1_000, 200_000))
VALUES = st.one_of(WRONG_TYPES, NULLS, EXTREMES, UNICODE)


@dataclass(frozen=True)
class SetValues:
    table: str
    column: str
    rows: tuple[int, ...] | None  # None: every row
    value: Any

    def apply(self, tables: dict[str, pd.DataFrame]) -> None:
        frame = tables[self.table]
        if self.column not in frame.columns or frame.empty:
            return
        values = frame[self.column].astype(object).where(frame[self.column].notna(), None)
        values = values.tolist()
        for row in range(len(values)) if self.rows is None else self.rows:
            values[row % len(values)] = self.value
        # inferred as a database driver's rows are by pandas.read_sql: ints with a null become
        # floats, a word among numbers leaves the column `object`
        frame[self.column] = pd.Series(values, index=frame.index)


@dataclass(frozen=True)
class DuplicateRows:
    table: str
    rows: tuple[int, ...]
    change: str | None = None  # a non-key column given another value in the copies

    def apply(self, tables: dict[str, pd.DataFrame]) -> None:
        frame = tables[self.table]
        if frame.empty:
            return
        copies = frame.iloc[[r % len(frame) for r in self.rows]].copy()
        if self.change is not None and self.change in copies.columns:
            copies[self.change] = copies[self.change].iloc[::-1].to_numpy()
        tables[self.table] = pd.concat([frame, copies], ignore_index=True)


@dataclass(frozen=True)
class DropColumn:
    table: str
    column: str

    def apply(self, tables: dict[str, pd.DataFrame]) -> None:
        tables[self.table] = tables[self.table].drop(columns=[self.column], errors="ignore")


@dataclass(frozen=True)
class KeepRows:
    """The source sent only the first `count` rows of the table (0: none)."""

    table: str
    count: int

    def apply(self, tables: dict[str, pd.DataFrame]) -> None:
        tables[self.table] = tables[self.table].head(self.count).reset_index(drop=True)


@dataclass(frozen=True)
class MissingTime:
    """A time value the extract could not parse (it coerces those to NaT)."""

    rows: tuple[int, ...]

    def apply(self, tables: dict[str, pd.DataFrame]) -> None:
        frame = tables["flights"]
        if not frame.empty and "time_hour" in frame.columns:
            frame.loc[frame.index[[r % len(frame) for r in self.rows]], "time_hour"] = pd.NaT


ROW_PICKS = st.lists(st.integers(0, 10_000), min_size=1, max_size=5).map(tuple)
SOME_OR_ALL = st.one_of(ROW_PICKS, ROW_PICKS, ROW_PICKS, st.none())

MUTATIONS = st.one_of(
    st.builds(SetValues, st.just("flights"), st.sampled_from(FLIGHT_COLUMNS), SOME_OR_ALL, VALUES),
    st.builds(
        SetValues,
        st.just("flights"),
        st.sampled_from(["carrier", "tailnum", "origin", "dest", "arr_delay", "distance"]),
        ROW_PICKS,
        HUGE_TEXT,
    ),
    st.builds(SetValues, st.just("flights"), st.sampled_from(FLIGHT_COLUMNS), SOME_OR_ALL, VALUES),
    st.sampled_from(sorted(JOINED_COLUMNS)).flatmap(
        lambda t: st.builds(
            SetValues, st.just(t), st.sampled_from(JOINED_COLUMNS[t]), SOME_OR_ALL, VALUES
        )
    ),
    st.builds(
        DuplicateRows,
        st.just("flights"),
        ROW_PICKS,
        st.one_of(st.none(), st.sampled_from(["dest", "arr_delay", "tailnum", "minute"])),
    ),
    st.builds(
        DuplicateRows,
        st.sampled_from(sorted(JOINED_COLUMNS)),
        ROW_PICKS,
        st.sampled_from(["temp", "type", "lat", "seats"]),
    ),
    st.builds(DropColumn, st.just("flights"), st.sampled_from([*FLIGHT_COLUMNS, "time_hour"])),
    st.builds(
        DropColumn,
        st.sampled_from(sorted(JOINED_COLUMNS)),
        st.sampled_from(sorted({c for cs in JOINED_COLUMNS.values() for c in cs})),
    ),
    st.builds(
        KeepRows,
        st.sampled_from(["flights", "weather", "planes", "airports"]),
        st.sampled_from([0, 1, 299, 300]),
    ),
    st.builds(MissingTime, ROW_PICKS),
)


@pytest.fixture(scope="module")
def clean_tables(seeded_source, tmp_path_factory) -> dict[str, pd.DataFrame]:
    """The real extract of 2 Jan 2013 from the seeded source, as `etl.extract` returns it."""
    settings = repo_settings(tmp_path_factory.mktemp("extract-home"))
    usecase = load_usecase("flights", settings)
    window = etl.BatchWindow.for_day(JAN2, usecase)
    tables = etl.extract(usecase, sqlite_url(seeded_source), window)
    assert len(tables["flights"]) == ROWS
    return tables


@pytest.fixture(scope="module")
def suite_sets(tmp_path_factory) -> dict[str, Any]:
    """What the suite allows in the columns the flights table hands through unchanged."""
    settings = repo_settings(tmp_path_factory.mktemp("suite-home"))
    usecase = load_usecase("flights", settings)
    parameters = usecase.validation.parameters
    found: dict[str, Any] = {"rows": (parameters["min_rows"], parameters["max_rows"])}
    for expectation in load_suite_json(usecase, settings)["expectations"]:
        kwargs = expectation["kwargs"]
        if expectation["type"] == "expect_column_values_to_be_in_set":
            found[kwargs["column"]] = set(kwargs["value_set"])
        elif expectation["type"] == "expect_column_values_to_match_regex":
            found[kwargs["column"]] = re.compile(kwargs["regex"])
        elif expectation["type"] == "expect_column_values_to_be_between":
            found[f"{kwargs['column']}.range"] = (kwargs["min_value"], kwargs["max_value"])
    return found


def must_be_refused(flights: pd.DataFrame, suite_sets: dict[str, Any]) -> list[str]:
    """Why the suite has to refuse this flights table, judged on the table alone (an oracle
    independent of the batch builder): empty, a column missing, a null in a column of the key
    or of a not-null feature, a value outside the suite's sets, a distance or hour that is not
    a whole number in range, two rows that are the same flight."""
    reasons = []
    low, high = suite_sets["rows"]
    if not low <= len(flights) <= high:
        return [f"{len(flights)} rows, not {low}..{high}"]
    never_null = ("carrier", "flight", "origin", "dest", "distance", "hour", "minute", "time_hour")
    needed = {*never_null, "arr_delay", "tailnum", "dep_time", "dep_delay"}
    missing = needed - set(flights.columns)
    if missing:
        return [f"missing {sorted(missing)}"]
    for column in never_null:
        if flights[column].isna().any():
            reasons.append(f"null {column}")
    for column in ("carrier", "origin"):
        if not flights[column].dropna().isin(suite_sets[column]).all():
            reasons.append(f"{column} outside its set")
    # as stored: a value of another type is kept as its text (the number 123 as "123", which
    # is a code's shape; the bytes b"JFK" as "b'JFK'", which is not)
    if not all(suite_sets["dest"].fullmatch(str(v)) for v in flights["dest"].dropna()):
        reasons.append("dest does not match its pattern")
    for source, column in (("distance", "distance"), ("hour", "sched_hour")):
        low, high = suite_sets[f"{column}.range"]
        values = flights[source]
        if values.dtype != np.int64 or not values.between(low, high).all():
            reasons.append(f"{source} not whole numbers {low}..{high}")
    key = flights[["carrier", "flight", "origin", "time_hour", "minute"]].apply(
        lambda column: column.map(repr)
    )
    if key.duplicated().any():  # as written: 1545 and Decimal("1545.00") make two flight ids
        reasons.append("duplicated flights")
    return reasons


def run_path(path: str, usecase, settings, tables: dict[str, pd.DataFrame]) -> Any:
    """The ETL of JAN2 along `path`, with the extract returning `tables`."""

    def extract_day(*args, **kwargs):
        # the source holds exactly these rows in the day: the reconciliation's other side
        counts = etl.SourceCounts(len(tables[usecase.source.batch_table]), 0)
        return {name: frame.copy() for name, frame in tables.items()}, counts

    with mock.patch.object(etl, "extract_day", extract_day):
        if path == "in-process":
            return etl.run_day(usecase, settings, JAN2, "sqlite:///unused.db").as_dict()
        window = etl.BatchWindow.for_day(JAN2, usecase)
        staged = etl.extract_to_staging(usecase, settings, window, "manual__fuzz")
        built = etl.transform_staged(usecase, settings, staged)
        return etl.load_staged(usecase, settings, etl.validate_staged(usecase, settings, built))


TEXT_COLUMNS = ["flight_id", "carrier", "origin", "dest", "plane_type"]
TABLE_LEVEL = {
    "expect_table_row_count_to_be_between",
    "expect_table_columns_to_match_ordered_list",
    "build_batch",
}


@fuzz_settings(
    max_examples=40,
    deadline=None,
    database=None,  # nothing written into the checkout; a failure prints its reproduction blob
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(
    mutations=st.lists(MUTATIONS, min_size=1, max_size=4),
    path=st.sampled_from(["in-process", "staged"]),
)
# What the fuzzing found, kept as fixed cases: a code with a trailing line break passed the
# suite's `$`; bytes among the text of a column made Arrow store the whole column as bytes
# (the DAG's path loaded it) and were judged by their decoded text (the CLI's path loaded it).
@example(mutations=[SetValues("flights", "dest", (7,), "JFK\n")], path="staged")
@example(mutations=[SetValues("flights", "dest", (7,), b"JFK")], path="staged")
@example(mutations=[SetValues("flights", "dest", (7,), b"JFK")], path="in-process")
@example(mutations=[SetValues("flights", "carrier", (1, 2), "é" * 200_000)], path="in-process")
def test_a_malformed_batch_is_loaded_valid_or_quarantined_with_a_named_reason(
    clean_tables, suite_sets, mutations, path
):
    tables = {name: frame.copy() for name, frame in clean_tables.items()}
    for mutation in mutations:
        mutation.apply(tables)
    rows_in = len(tables["flights"])
    refuse = must_be_refused(tables["flights"], suite_sets)
    note(f"path {path}, {rows_in} rows in; must be refused: {refuse}")

    with tempfile.TemporaryDirectory(prefix="driftline-fuzz-") as tmp:
        settings_ = repo_settings(Path(tmp) / "home")
        usecase = load_usecase("flights", settings_)
        partition = settings_.partition_dir(usecase.name, JAN2) / etl.PARTITION_FILE
        quarantine = settings_.quarantine_dir(usecase.name, JAN2)
        try:
            loaded = run_path(path, usecase, settings_, tables)
        except BatchRejectedError as rejected:
            event("quarantined")
            assert not partition.exists(), "a rejected batch left a partition"
            assert rejected.quarantine == quarantine
            message = str(rejected)
            assert "nothing was loaded" in message and str(quarantine) in message
            record = json.loads((quarantine / "validation.json").read_text())
            kept = pd.read_parquet(quarantine / "batch.parquet")
            # every row that came in is kept for the operator: none silently dropped
            assert record["rows"] == len(kept) == rows_in, (record["rows"], len(kept), rows_in)
            assert record["success"] is False and record["failures"], record
            for failure in record["failures"]:
                # the reason names what failed: an expectation on a column, or the whole table,
                # and what was seen, briefly (a source value may be a megabyte of text)
                assert failure["expectation"] and failure["observed"], failure
                assert len(failure["observed"]) < 2000, failure["observed"][:3000]
                assert failure["column"] or failure["expectation"] in TABLE_LEVEL, failure
                if record.get("stage") == "transform":  # the builder's own error, quoted
                    assert failure["observed"] in message
                    continue
                assert failure["expectation"] in message
                if failure["column"]:
                    assert failure["column"] in message
            event(f"refused by {sorted({f['expectation'] for f in record['failures']})[0]}")
        else:
            event("loaded")
            assert not refuse, f"loaded a batch that had to be refused: {refuse}"
            assert loaded["rows"] == rows_in, (loaded, rows_in)
            assert Path(loaded["path"]) == partition and not quarantine.exists()
            curated = pd.read_parquet(partition)
            assert len(curated) == rows_in and curated["flight_id"].is_unique
            for column in TEXT_COLUMNS:  # text stays text (Arrow turns text mixed with bytes
                kinds = set(curated[column].dropna().map(type))  # into a bytes column)
                assert kinds <= {str}, f"{column} holds {kinds}"
            # what was loaded passes the suite as it is stored, not only as it was built
            outcome = validate_batch(curated, usecase, settings_, JAN2)
            assert outcome.success, [f.describe() for f in outcome.failures]


def test_the_unbroken_day_loads_on_both_paths(clean_tables, settings, usecase, tmp_path):
    """The baseline the fuzzing breaks: the real extract loads whole, along either path."""
    for path in ("in-process", "staged"):
        home = repo_settings(tmp_path / path)
        loaded = run_path(path, usecase, home, clean_tables)
        assert loaded["rows"] == ROWS
