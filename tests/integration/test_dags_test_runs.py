"""`make demo`'s nights run by `airflow dags test`: their durations are real, not years."""

from __future__ import annotations

import json
import sys

import pendulum
import pytest

from tests.integration.conftest import airflow_env, run

pytestmark = pytest.mark.integration

TINY_DAG = """
import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("tiny", schedule="@daily", start_date=pendulum.datetime(2013, 1, 1), catchup=False,
         tags=["test"]):
    EmptyOperator(task_id="nothing")
"""


def test_a_dags_test_run_of_2013_gets_its_real_start_and_duration(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "tiny.py").write_text(TINY_DAG)
    env = {**airflow_env(tmp_path, "sqlite://"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    began = pendulum.now("UTC")
    done = run(env, "airflow", "dags", "test", "tiny", "2013-01-02")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

    def the_run() -> dict:
        listed = run(env, "airflow", "dags", "list-runs", "tiny", "-o", "json")
        assert listed.returncode == 0, listed.stderr[-3000:]
        (found,) = json.loads(listed.stdout.strip().splitlines()[-1])  # after log lines
        return found

    assert pendulum.parse(the_run()["start_date"]).year == 2013  # apache/airflow#66127
    fixed = run(env, sys.executable, "-m", "driftline.operator.dags_test_runs")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "corrected on 1 " in fixed.stdout
    started = pendulum.parse(the_run()["start_date"])
    ended = pendulum.parse(the_run()["end_date"])
    assert began.subtract(seconds=5) <= started <= ended
    assert (ended - started).in_seconds() < 300
    again = run(env, sys.executable, "-m", "driftline.operator.dags_test_runs")
    assert "corrected on 0 " in again.stdout  # a second call changes nothing
