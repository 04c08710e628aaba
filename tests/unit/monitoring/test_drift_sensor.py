"""The drift sensor's trigger in Airflow's own trigger interface (asyncio), without a triggerer;
and when the sensor defers to it."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys

import pytest

from driftline.monitoring.history import DriftHistory, NightSummary
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "plugins"))  # as Airflow does for its plugins folder
from drift_sensor import DriftReportTrigger, DriftSensor  # noqa: E402

DAY = dt.date(2013, 7, 1)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path))
    monkeypatch.delenv("DRIFTLINE_HISTORY_URL", raising=False)
    return tmp_path


def first_event(trigger: DriftReportTrigger, seconds: float):
    async def first():
        async for event in trigger.run():
            return event

    return asyncio.run(asyncio.wait_for(first(), seconds))


def test_the_trigger_serializes_to_its_own_importable_class_and_no_secret():
    classpath, kwargs = DriftReportTrigger("flights", "2013-07-01", 5).serialize()
    assert classpath == "drift_sensor.DriftReportTrigger"
    assert kwargs == {"usecase": "flights", "day": "2013-07-01", "poll_seconds": 5}


def test_the_trigger_waits_while_the_night_has_no_report(home):
    with pytest.raises(TimeoutError):
        first_event(DriftReportTrigger("flights", DAY.isoformat(), poll_seconds=0.05), 1.0)


def record_night(home) -> None:
    history = DriftHistory(f"sqlite:///{home / 'monitoring.db'}")
    history.record(NightSummary(usecase="flights", day=DAY, model_version="1",
                                reference_md5="abc", rows=900, dataset_drift=False,
                                drift_share=0.1))
    history.dispose()


def test_the_trigger_fires_once_the_report_is_recorded(home):
    record_night(home)
    event = first_event(DriftReportTrigger("flights", DAY.isoformat(), poll_seconds=0.05), 10)
    assert event.payload == {"status": "recorded", "usecase": "flights", "day": "2013-07-01"}


def test_the_sensor_defers_only_while_the_night_has_no_report(home):
    """Waiting happens in the triggerer; a night already recorded is decided at once (a
    trigger that fires at once races Airflow 3.3's scheduler, apache/airflow#72716)."""
    from airflow.sdk.exceptions import TaskDeferred

    sensor = DriftSensor(task_id="drift_sensor", usecase="flights", day=DAY.isoformat())
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert isinstance(deferred.value.trigger, DriftReportTrigger)
    decided = []
    sensor._decide = lambda context: decided.append(context) or {"window_end": "2013-06-24"}
    record_night(home)
    assert sensor.execute({"night": 1}) == {"window_end": "2013-06-24"}
    assert decided == [{"night": 1}]
