"""The drift history ledger on SQLite and on the local PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from driftline.history import FIRED, DriftHistory, NightSummary

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request, tmp_path):
    if request.param == "sqlite":
        ledger = DriftHistory(f"sqlite:///{tmp_path / 'history.db'}")
        yield ledger
        ledger.dispose()
        return
    name = f"driftline_history_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    ledger = DriftHistory(f"{PG}/{name}")
    yield ledger
    ledger.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def summary(day: int, share: float, version: str = "1") -> NightSummary:
    return NightSummary(usecase="flights", day=dt.date(2013, 2, day), model_version=version,
                        reference_md5="abc", rows=900, dataset_drift=share >= 0.5,
                        drift_share=share, drifted_columns=["temp", "dewp"], roc_auc=0.64)


def test_a_rerun_of_a_night_replaces_its_row(history):
    history.record(summary(3, 0.2))
    history.record(summary(3, 0.4, version="2"))
    nights = history.nights("flights", dt.date(2013, 2, 3), 10)
    assert len(nights) == 1
    assert (nights[0].drift_share, nights[0].model_version) == (0.4, "2")
    assert nights[0].drifted_columns == ["temp", "dewp"]


def test_nights_come_oldest_first_up_to_the_day(history):
    for day in (1, 5, 2, 4, 3):
        history.record(summary(day, day / 10))
    nights = history.nights("flights", dt.date(2013, 2, 4), 3)
    assert [n.day.day for n in nights] == [2, 3, 4]


def test_decisions_are_recorded_and_the_last_firing_found(history):
    for day in (1, 2, 3):
        history.record(summary(day, 0.6))
    history.decide("flights", dt.date(2013, 2, 2), FIRED, "k of n")
    history.decide("flights", dt.date(2013, 2, 3), "skipped: cool-down", "fired on 2 Feb")
    assert history.last_fired("flights", before=dt.date(2013, 2, 4)) == dt.date(2013, 2, 2)
    assert history.last_fired("flights", before=dt.date(2013, 2, 2)) is None
    with pytest.raises(LookupError, match="no drift history row"):
        history.decide("flights", dt.date(2013, 3, 1), FIRED, "nothing recorded")
