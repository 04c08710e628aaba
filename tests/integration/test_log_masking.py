"""Secrets stay out of task logs when tasks run the way production runs them.

A tiny DAG (its own dags folder, not the project's) fetches a connection defined by
AIRFLOW_CONN_<ID> and logs and prints its password and URI; a second task runs driftline's
extract against a source URL with a password, which fails. Both passwords are fresh per run.

`airflow dags test` alone runs tasks inside the CLI process and prints their logs unmasked,
writing no log file: it is not what production does. Production runs a task through an executor
and the task supervisor, which writes $AIRFLOW_HOME/logs/... through Airflow's secrets masker
(what the UI shows). So the DAG runs with `airflow dags test --use-executor` (LocalExecutor, the
supervisor, a real task subprocess) against an execution-API server started for this module,
and the assertions read the log files. (The executor's copy of task output on the CLI's stdout
is NOT masked in Airflow 3.3.2; nothing here asserts on it.)
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import BIN, copy_sqlite, migrated_metadata_db, run

pytestmark = pytest.mark.integration

DAG_ID = "driftline_masking_probe"
CONN_ID = "driftline_masking_probe"

PROBE_DAG = """
import datetime as dt
import logging

import pendulum
from airflow.sdk import BaseHook, Connection, dag, task

log = logging.getLogger("driftline.masking_probe")


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     catchup=False)
def probe():
    @task(retries=0)
    def use_connection():
        conn = Connection.get("{conn_id}")
        hooked = BaseHook.get_connection("{conn_id}")
        log.info("connection password: %s", conn.password)
        log.info("connection uri: %s", conn.get_uri())
        log.info("hook password: %s uri: %s", hooked.password, hooked.get_uri())
        print(f"printed password: {{conn.password}} uri: {{conn.get_uri()}}")
        log.info("probe done")

    @task(retries=0)
    def extract_source():
        from driftline.ingest import etl
        from driftline.config import Settings, load_usecase

        settings = Settings.from_env()
        usecase = load_usecase("flights", settings)
        window = etl.BatchWindow.for_day(dt.date(2013, 1, 1), usecase)
        etl.extract_to_staging(usecase, settings, window, "probe")

    use_connection()
    extract_source()


probe()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"api-server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"api-server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """End the api-server this module started (its own process group), and only it."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("log-masking")
    (root / "dags").mkdir()
    (root / "plugins").mkdir()
    (root / "dags" / "probe.py").write_text(PROBE_DAG.format(dag_id=DAG_ID, conn_id=CONN_ID))
    conn_password = secrets.token_hex(10)  # fresh per run: nothing else can contain them
    source_password = secrets.token_hex(11)
    source_url = f"postgresql://flights:{source_password}@127.0.0.1:1/flights"
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING", "DRIFTLINE_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            f"AIRFLOW_CONN_{CONN_ID.upper()}": (
                f"postgresql://probe:{conn_password}@127.0.0.1:1/probe"
            ),
            "DRIFTLINE_HOME": str(root / "state"),
            "DRIFTLINE_USECASES_DIR": str(REPO / "usecases"),
            "DRIFTLINE_EXPECTATIONS_DIR": str(REPO / "expectations"),
            # nothing listens on port 1: the extract fails, and its error must not show the password
            "DRIFTLINE_FLIGHTS_SOURCE_URL": source_url,
            "GX_ANALYTICS_ENABLED": "False",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    (root / "airflow").mkdir()
    copy_sqlite(migrated_metadata_db(), root / "airflow" / "airflow.db")  # = airflow db migrate

    server_log = root / "api-server.log"
    with open(server_log, "wb") as out:
        server = subprocess.Popen(
            [
                str(BIN / "airflow"),
                "api-server",
                "--apps",
                "execution",
                "--workers",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/execution/health", server, server_log)
        done = run(env, "airflow", "dags", "test", "--use-executor", DAG_ID, timeout=600)
    finally:
        _stop(server)
    logs = {
        path.parent.name.removeprefix("task_id="): path.read_text()
        for path in (root / "airflow" / "logs" / f"dag_id={DAG_ID}").glob("*/*/attempt=1.log")
    }
    assert set(logs) == {"use_connection", "extract_source"}, (done.stdout + done.stderr)[-4000:]
    return {
        "logs": logs,
        "all_logs": {
            p: p.read_text() for p in (root / "airflow" / "logs").rglob("*") if p.is_file()
        },
        "conn_password": conn_password,
        "source_password": source_password,
        "returncode": done.returncode,
    }


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_connection_password_is_masked_in_the_task_log(probe_run):
    log = probe_run["logs"]["use_connection"]
    messages = [e["event"] for e in _events(log)]
    assert "probe done" in messages  # the task ran to the end
    assert "connection password: ***" in messages
    assert "connection uri: postgres://probe:***@127.0.0.1:1/probe" in messages
    assert "hook password: *** uri: postgres://probe:***@127.0.0.1:1/probe" in messages
    assert "printed password: *** uri: postgres://probe:***@127.0.0.1:1/probe" in messages
    assert probe_run["conn_password"] not in log


def test_the_source_url_password_never_reaches_the_task_log(probe_run):
    log = probe_run["logs"]["extract_source"]
    assert probe_run["returncode"] != 0  # the extract failed, as it must with nothing on port 1
    failed = [e for e in _events(log) if e["event"] == "Task failed with exception"]
    assert failed, log[-3000:]
    error = json.dumps(failed[0])
    assert "SourceUnavailableError" in error
    assert "postgresql://flights:***@127.0.0.1:1/flights" in error
    assert probe_run["source_password"] not in log


def test_no_file_under_the_log_folder_holds_either_password(probe_run):
    assert probe_run["all_logs"]
    for path, text in probe_run["all_logs"].items():
        assert probe_run["conn_password"] not in text, path
        assert probe_run["source_password"] not in text, path
