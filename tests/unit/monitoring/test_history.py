"""The drift history ledger on SQLite and on the local PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from driftline.monitoring.history import (
    DRIFT_HISTORY,
    FIRED,
    PREDICTION_REFERENCE_HOLDOUT,
    DriftHistory,
    NightSummary,
)
from driftline.monitoring.judged_rows import Days

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request, tmp_path):
    """An empty database: a SQLite file, or a database of its own on the local server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
        return
    name = f"driftline_history_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"{PG}/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def history(history_url):
    ledger = DriftHistory(history_url)
    yield ledger
    ledger.dispose()


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


def old_shaped_table(url: str) -> None:
    """The drift_history table as created before the judged rows were recorded, with a night."""
    old = sa.MetaData()
    table = sa.Table(
        "drift_history", old,
        sa.Column("usecase", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("reference_md5", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("dataset_drift", sa.Boolean, nullable=False),
        sa.Column("drift_share", sa.Float, nullable=False),
        sa.Column("drifted_columns", sa.Text, nullable=False),
        sa.Column("roc_auc", sa.Float),
        sa.Column("log_loss", sa.Float),
        sa.Column("champion_holdout_roc_auc", sa.Float),
        sa.Column("report_html", sa.Text),
        sa.Column("report_json", sa.Text),
        sa.Column("evidently_runs", sa.Text, nullable=False),
        sa.Column("decision", sa.String(64)),
        sa.Column("decision_reason", sa.Text),
    )
    engine = sa.create_engine(url)
    old.create_all(engine)
    row = {k: v for k, v in summary(1, 0.2).as_row().items() if k in table.c}
    with engine.begin() as conn:
        conn.execute(table.insert().values(**row))
    engine.dispose()


def test_an_old_table_gets_the_new_columns_and_keeps_its_nights(history_url):
    old_shaped_table(history_url)
    ledger = DriftHistory(history_url)
    try:
        inspector = sa.inspect(ledger.engine)
        assert {c["name"] for c in inspector.get_columns("drift_history")} == set(
            DRIFT_HISTORY.c.keys())
        before = ledger.night("flights", dt.date(2013, 2, 1))
        assert before.drift_share == 0.2 and before.quality_judged is None
        assert before.quality_basis() == "quality rows not recorded"
        newer = summary(2, 0.3)
        newer.drift_first_day, newer.quality_rows, newer.quality_judged = (
            dt.date(2013, 1, 27), 812, True)
        newer.quality_first_day = newer.quality_last_day = dt.date(2013, 2, 2)
        newer.prediction_reference, newer.prediction_rows = PREDICTION_REFERENCE_HOLDOUT, 870
        ledger.record(newer)
        assert ledger.night("flights", dt.date(2013, 2, 2)) == newer
    finally:
        ledger.dispose()
    DriftHistory(history_url).dispose()  # opening it again adds nothing, fails on nothing


def test_a_night_says_which_rows_it_judged():
    night = summary(7, 0.1)
    night.drift_first_day, night.drift_last_day = dt.date(2013, 2, 2), dt.date(2013, 2, 8)
    night.prediction_reference = "holdout"
    night.quality_first_day, night.quality_last_day = dt.date(2013, 2, 1), dt.date(2013, 2, 7)
    night.quality_rows, night.quality_judged, night.prediction_rows = 5432, True, 5600
    night.quality_versions = {"3": 4432, "2": 1000}
    assert night.drift_days == Days(dt.date(2013, 2, 2), dt.date(2013, 2, 8))
    assert night.drift_basis() == (
        "drift on 2013-02-02..2013-02-08 (900 rows); the prediction on the 5,600 of them "
        "version 1 made, vs the holdout's predictions")
    assert night.quality_basis() == (
        "quality on 5,432 labelled predictions of 2013-02-01..2013-02-07 "
        "(made ahead by v2: 1,000, v3: 4,432)")
    night.quality_rows, night.quality_judged, night.roc_auc = 150, False, None
    night.quality_versions = {"3": 150}
    assert night.quality_basis() == (
        "quality not judged yet: 150 labelled predictions of 2013-02-01..2013-02-07 "
        "(made ahead by v3: 150)")
    night.quality_first_day = night.quality_last_day = None
    assert "no stored prediction of a day whose labels are in" in night.quality_basis()
    night.prediction_rows = 0
    assert "the prediction not judged: version 1 made none of them" in night.drift_basis()
    assert night.as_dict()["drift_first_day"] == "2013-02-02"  # JSON-ready
    night.drift_last_day = None  # a row recorded before scoring ahead: the night is the last
    assert night.drift_days == Days(dt.date(2013, 2, 2), night.day)


def test_a_fired_night_links_its_training_and_keeps_it_through_a_rerun(history):
    """The row leads to the training the night started and, once decided, to its gate."""
    history.record(summary(14, 0.7))
    history.decide("flights", dt.date(2013, 2, 14), FIRED, "k of n", ["drift share"])
    history.link_training("flights", dt.date(2013, 2, 14), "flights_training/drift__2013-02-14",
                          "abc123")
    history.link_decision("flights", dt.date(2013, 2, 14), "version 2 promoted: beats it")
    history.record(summary(14, 0.7))  # the night reran: the training it started stays linked
    night = history.night("flights", dt.date(2013, 2, 14))
    assert night.fired_by == [] and night.training_run == "flights_training/drift__2013-02-14"
    assert (night.training_mlflow_run, night.training_decision) == (
        "abc123", "version 2 promoted: beats it")
    history.decide("flights", dt.date(2013, 2, 14), FIRED, "k of n", ["drift share"])
    assert history.night("flights", dt.date(2013, 2, 14)).fired_by == ["drift share"]
    with pytest.raises(LookupError, match="2013-02-15"):
        history.link_decision("flights", dt.date(2013, 2, 15), "version 3 promoted")
