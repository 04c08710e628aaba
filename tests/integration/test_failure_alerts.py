"""A task's failure alert comes from its last try only: a real task run (`airflow dags test`)
of a DAG with driftline's default_args that fails every try, against a real local webhook."""

from __future__ import annotations

import re
import textwrap

import pytest

from driftline.operator import alerts
from tests.alert_receiver import alert_receiver, connection_env
from tests.conftest import REPO
from tests.integration.conftest import airflow_env, run

pytestmark = pytest.mark.integration

ALWAYS_FAILS = textwrap.dedent(
    f'''
    import datetime as dt
    import sys

    sys.path.insert(0, {str(REPO / "dags")!r})  # driftline_defaults, as the DAG files import it

    from airflow.sdk import dag, task

    from driftline_defaults import default_args

    ARGS = {{**default_args(dt.timedelta(minutes=5)), "retry_delay": dt.timedelta(0),
            "retry_exponential_backoff": False}}


    @dag(dag_id="always_fails", schedule=None, start_date=dt.datetime(2013, 1, 1),
         default_args=ARGS)
    def always_fails():
        @task
        def flaky_source():
            raise ConnectionError("source database unreachable")

        flaky_source()


    always_fails()
    '''
)


def test_a_task_retried_twice_alerts_once_after_its_last_try(tmp_path, seeded_source):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "always_fails.py").write_text(ALWAYS_FAILS)
    env = {**airflow_env(tmp_path / "run", f"sqlite:///{seeded_source}"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    with alert_receiver(keep=True) as (url, received):
        done = run({**env, **connection_env(url)}, "airflow", "dags", "test", "always_fails")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert len(re.findall(r"source database unreachable", output)) >= 3, output[-4000:]
    (alert,) = received.alerts  # three tries, one alert
    assert alert["title"] == ("[driftline] always_fails.flaky_source failed: ConnectionError: "
                              "source database unreachable")
    assert alert["type"] == "failure"
    facts = dict(line.split(": ", 1) for line in alert["message"].splitlines() if ": " in line)
    assert (facts["event"], facts["task"], facts["try"]) == (alerts.TASK_FAILED, "flaky_source",
                                                            "3 of 3")
    assert facts["log"].endswith("/tasks/flaky_source?try_number=3")
