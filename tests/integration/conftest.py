"""A migrated Airflow home and a state folder, shared by the DAG tests of one module."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pendulum

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def run_date(day: dt.date) -> str:
    """The logical date of the nightly run that processes `day` (midnight New York after it)."""
    return pendulum.datetime(day.year, day.month, day.day, tz="America/New_York").add(
        days=1).isoformat()


def airflow_env(root: Path, source_url: str) -> dict[str, str]:
    """Environment of a real Airflow (SQLite metadata DB, migrated) over driftline's DAGs."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DRIFTLINE_HOME": str(root / "state"),
        "DRIFTLINE_FLIGHTS_SOURCE_URL": source_url,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    done = run(env, "airflow", "db", "migrate")
    assert done.returncode == 0, done.stderr[-3000:]
    return env


def run(env: dict[str, str], tool: str, *args: str, timeout: int = 600):
    """Run a tool of this venv (airflow, driftline) or, failing that, of the PATH (git)."""
    executable = BIN / tool if (BIN / tool).exists() else tool
    return subprocess.run([str(executable), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def curated_env(root: Path, source: Path, curated: Path, last_day: dt.date) -> dict[str, str]:
    """`airflow_env` + a curated store holding 1 January .. `last_day` 2013, copied from the
    session's `curated_days`."""
    from tests.conftest import copy_curated, sqlite_url

    env = airflow_env(root, sqlite_url(source))
    copy_curated(curated, Path(env["DRIFTLINE_HOME"]), last_day)
    return env
