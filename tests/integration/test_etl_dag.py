"""flights_etl through real Airflow 3 (`airflow dags test`: SQLite metadata DB, real tasks)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from driftline.operator import alerts
from tests.alert_receiver import alert_receiver, connection_env
from tests.conftest import corrupt, repo_settings, sqlite_url
from tests.integration.conftest import airflow_env, run, run_date

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def env(tmp_path_factory, seeded_source) -> dict[str, str]:
    root = tmp_path_factory.mktemp("airflow-run")
    source = root / "source.db"
    shutil.copyfile(seeded_source, source)
    return airflow_env(root, sqlite_url(source))


def dags_test(env: dict[str, str], day: dt.date) -> subprocess.CompletedProcess:
    return run(env, "airflow", "dags", "test", "flights_etl", run_date(day))


def test_two_nights_load_their_partitions_and_a_rerun_changes_nothing(env):
    settings = repo_settings(Path(env["DRIFTLINE_HOME"]))
    expected = {dt.date(2013, 1, 1): 842, dt.date(2013, 1, 2): 943}
    with alert_receiver(keep=True) as (url, received):
        for day in expected:
            done = dags_test({**env, **connection_env(url)}, day)
            assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert received.alerts == []  # green nights alert nobody
    for day, rows in expected.items():
        partition = settings.partition_dir("flights", day) / "part-0.parquet"
        frame = pd.read_parquet(partition)
        assert len(frame) == rows
        assert frame["sched_time"].dt.tz_convert("America/New_York").dt.date.eq(day).all()
        assert settings.validation_result_path("flights", day).exists()

    jan1 = settings.partition_dir("flights", dt.date(2013, 1, 1)) / "part-0.parquet"
    before = jan1.read_bytes()
    rerun = dags_test(env, dt.date(2013, 1, 1))
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    assert jan1.read_bytes() == before
    assert sorted(p.parent.name for p in settings.curated_dir("flights").glob("*/*.parquet")) \
        == ["date=2013-01-01", "date=2013-01-02"]


def test_a_corrupted_night_fails_names_the_expectation_and_loads_nothing(
    env, tmp_path, seeded_source, usecase
):
    broken = tmp_path / "broken.db"
    shutil.copyfile(seeded_source, broken)
    day = dt.date(2013, 1, 3)
    corrupt(broken, usecase, day,
            "UPDATE flights SET origin = 'XXX' WHERE rowid = (SELECT rowid FROM flights "
            "WHERE time_hour >= :start AND time_hour < :end LIMIT 1)")
    env = {**env, "DRIFTLINE_FLIGHTS_SOURCE_URL": sqlite_url(broken)}
    with alert_receiver(keep=True) as (url, received):
        done = dags_test({**env, **connection_env(url)}, day)
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert "expect_column_values_to_be_in_set on origin" in log
    assert "['XXX']" in log
    settings = repo_settings(Path(env["DRIFTLINE_HOME"]))
    assert (settings.quarantine_dir("flights", day) / "batch.parquet").exists()
    assert not settings.partition_dir("flights", day).exists()
    # one alert: the quarantine, naming the failed expectation (not a second, generic one)
    (alert,) = received.alerts
    assert alert["title"].startswith("[driftline] flights_etl: batch quarantined: flights batch "
                                     "for 2013-01-03 failed 1 of "), alert
    body = alert["message"]
    assert body.startswith(f"event: {alerts.QUARANTINE}\ndag: flights_etl\ntask: validate_batch")
    assert "  - expect_column_values_to_be_in_set on origin: " in body and "XXX" in body
    assert f"quarantine: {settings.quarantine_dir('flights', day)}" in body
