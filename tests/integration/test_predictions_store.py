"""The published predictions in both SQL stores downstream applications read: the embedded
SQLite and PostgreSQL (a fresh database on the local server)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from driftline.config import PREDICTIONS_URL_ENV, load_usecase
from driftline.serving import predictions
from tests.conftest import repo_settings

pytestmark = pytest.mark.integration

SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
DAY, OTHER_DAY = dt.date(2013, 2, 2), dt.date(2013, 2, 3)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path, monkeypatch) -> Iterator[tuple]:
    settings = repo_settings(tmp_path / "home")
    if request.param == "postgresql":
        name = f"driftline_predictions_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        monkeypatch.setenv(PREDICTIONS_URL_ENV, f"{SERVER}/{name}")
        try:
            yield settings, load_usecase("flights", settings)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    else:
        monkeypatch.delenv(PREDICTIONS_URL_ENV, raising=False)
        yield settings, load_usecase("flights", settings)


def scored(usecase, day: dt.date, keys: range, probability: float, version: str) -> pd.DataFrame:
    """Rows as scoring.score_ahead hands them over: scoring columns + the three it adds."""
    start = pd.Timestamp(day.isoformat(), tz="America/New_York").tz_convert("UTC")
    rows = pd.DataFrame({column: 1.0 for column in usecase.features.numerical}, index=keys)
    for column in usecase.features.categorical:
        rows[column] = "x"
    rows[usecase.key] = [f"{day}-{k}" for k in keys]
    rows[usecase.event_time] = start + pd.to_timedelta(list(keys), unit="min")
    rows = rows[usecase.scoring_columns].reset_index(drop=True)
    return rows.assign(prediction=probability, model_version=version,
                       scored_at=pd.Timestamp.now(tz="UTC"))


def test_a_republished_day_replaces_its_rows_and_leaves_other_days(store):
    settings, usecase = store
    predictions.publish(usecase, settings, DAY, scored(usecase, DAY, range(30), 0.2, "1"))
    other_rows = scored(usecase, OTHER_DAY, range(5), 0.9, "1")
    predictions.publish(usecase, settings, OTHER_DAY, other_rows)
    # the night rerun after a promotion: fewer rows, other probabilities, another version
    path = predictions.publish(usecase, settings, DAY, scored(usecase, DAY, range(20), 0.4, "2"))

    table = predictions.published_rows(settings, "flights", DAY)
    assert len(table) == 20 and table["key"].is_unique
    assert set(table["model_version"]) == {"2"} and (table["probability"] == 0.4).all()
    assert pd.read_parquet(path)["prediction"].tolist() == [0.4] * 20
    other = predictions.published_rows(settings, "flights", OTHER_DAY)
    assert len(other) == 5 and (other["probability"] == 0.9).all()
    assert table["scored_at"].notna().all() and table["event_time"].notna().all()


def test_rows_repeating_a_key_are_refused_and_the_day_keeps_its_rows(store):
    settings, usecase = store
    path = predictions.publish(usecase, settings, DAY, scored(usecase, DAY, range(10), 0.2, "1"))
    before = path.read_bytes()
    twice = scored(usecase, DAY, range(12), 0.7, "2")
    twice.loc[11, usecase.key] = twice.loc[0, usecase.key]
    refused = "1 scored rows repeat a flight_id .*nothing was published"
    with pytest.raises(ValueError, match=refused):
        predictions.publish(usecase, settings, DAY, twice)
    table = predictions.published_rows(settings, "flights", DAY)
    assert len(table) == 10 and set(table["model_version"]) == {"1"}
    assert path.read_bytes() == before
