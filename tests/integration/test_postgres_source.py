"""The same ETL with its source on the local PostgreSQL server (production's database)."""

from __future__ import annotations

import datetime as dt
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from driftline.ingest import etl
from driftline.ingest.source import seed
from tests.conftest import repo_settings, sqlite_url

pytestmark = pytest.mark.integration

SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@pytest.fixture(scope="module")
def postgres_source():
    """A throw-away database on the local server (the tests seed it with their day)."""
    name = f"driftline_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is not reachable ({exc.orig}); "
                    "production-mode tests need it (.ci/run starts it)")
    url = f"{SERVER}/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# A summer day (New York on -04:00): seeded alone, so the server holds only what the tests use
DAY = dt.date(2013, 7, 4)


def test_seed_into_postgres_is_idempotent(usecase, postgres_source, seeded_source):
    first = seed(usecase, postgres_source, DAY, DAY)
    second = seed(usecase, postgres_source, DAY, DAY)
    assert first == second
    window = etl.BatchWindow.for_day(DAY, usecase)
    assert first["flights"] == len(
        etl.extract(usecase, sqlite_url(seeded_source), window)["flights"]
    ) > 0


def test_a_day_from_postgres_equals_the_same_day_from_sqlite(
    usecase, settings, postgres_source, seeded_source, tmp_path
):
    engine = sa.create_engine(postgres_source)
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("flights"):
            seed(usecase, postgres_source, DAY, DAY)
    engine.dispose()
    from_pg = etl.run_day(usecase, settings, DAY, postgres_source)
    from_sqlite = etl.run_day(usecase, repo_settings(tmp_path / "sqlite"), DAY,
                              sqlite_url(seeded_source))
    assert from_pg.rows == from_sqlite.rows > 0
    pd.testing.assert_frame_equal(pd.read_parquet(from_pg.path),
                                  pd.read_parquet(from_sqlite.path))


@pytest.mark.parametrize("column_type", ["timestamp", "timestamptz"])
def test_a_day_of_a_chicago_source_loads_exactly_its_rows(postgres_source, column_type):
    """source.time_zone on PostgreSQL: a `timestamp` column of Chicago wall times, and a
    `timestamptz` one, give each day (23 and 25 hours long here) exactly its rows."""
    from zoneinfo import ZoneInfo

    from tests.unit.ingest.test_source_time_zone import FALL, SPRING, instants, usecase

    chicago, table = ZoneInfo("America/Chicago"), f"events_{column_type}"
    if column_type == "timestamp":  # wall times; a repeated one means its first occurrence
        walls = [i.astimezone(chicago).replace(tzinfo=None, fold=0) for i in instants()]
        written = [w.replace(tzinfo=chicago).astimezone(dt.UTC) for w in walls]
        values = walls
    else:
        written = values = instants()
    engine = sa.create_engine(postgres_source)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(sa.text(f"CREATE TABLE {table} (event_id int, at {column_type}, "
                             "size float, delay float)"))
        rows = sa.table(table, sa.column("event_id"), sa.column("at"), sa.column("size"),
                        sa.column("delay"))
        conn.execute(rows.insert(), [{"event_id": n, "at": at, "size": 1.0, "delay": 0.5}
                                     for n, at in enumerate(values)])
    engine.dispose()
    for day in (SPRING, FALL):
        events = usecase("America/Chicago", "America/Chicago", table)
        window = etl.BatchWindow.for_day(day, events)
        expected = {n for n, at in enumerate(written) if window.start <= at < window.end}
        extracted = etl.extract(events, postgres_source, window)[table]
        assert set(extracted["event_id"]) == expected, day
        assert etl.count_source(events, postgres_source, window).day_rows == len(expected)
        assert sorted(extracted["at"]) == sorted(written[n] for n in expected)
