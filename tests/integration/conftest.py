"""A migrated Airflow home and a state folder, shared by the DAG tests of one module."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from filelock import FileLock

from driftline.config import UseCase, parse_usecase
from tests import warm_cli
from tests.conftest import REPO

BIN = Path(sys.executable).parent


@functools.cache
def flights() -> UseCase:
    """flights.yaml, whose zone the nightly runs of these tests are counted in."""
    return parse_usecase(REPO / "usecases" / "flights.yaml")


def run_date(day: dt.date) -> str:
    """The logical date `airflow dags test` takes to run the night of `day`: the local
    midnight after it (the end of the run's data interval)."""
    return flights().day_start(day + dt.timedelta(days=1)).isoformat()


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
    (root / "airflow").mkdir(parents=True, exist_ok=True)
    copy_sqlite(migrated_metadata_db(), root / "airflow" / "airflow.db")
    return env


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database, its write-ahead log included (Airflow's
    metadata DB runs in WAL mode: the file alone misses the last transactions)."""
    with contextlib.closing(sqlite3.connect(source)) as db, contextlib.closing(
        sqlite3.connect(target)
    ) as copy:
        db.backup(copy)


@functools.cache
def migrated_metadata_db() -> Path:
    """An Airflow metadata DB (SQLite) migrated once per session by `airflow db migrate`
    (one for all xdist workers: they share the run's id); each module's Airflow home starts
    from a copy of it."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id:
        home = Path(tempfile.gettempdir()) / f"driftline-airflow-template-{run_id}"
        home.mkdir(exist_ok=True)
    else:
        home = Path(tempfile.mkdtemp(prefix="driftline-airflow-template-"))
    with FileLock(home / "migrate.lock"):
        if not (home / "migrated").exists():
            env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
            done = run(env, "airflow", "db", "migrate")
            assert done.returncode == 0, done.stderr[-3000:]
            (home / "migrated").touch()
    return home / "airflow.db"


def run(env: dict[str, str], tool: str, *args: str, timeout: int = 600):
    """Run a tool of this venv (airflow, driftline: in a warm process, tests.warm_cli) or,
    failing that, of the PATH (git)."""
    if tool in warm_cli.CLIS:
        return warm_cli.run(tool, list(args), env, timeout=timeout)
    executable = BIN / tool if (BIN / tool).exists() else tool
    return subprocess.run([str(executable), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def curated_env(root: Path, source: Path, curated: Path, last_day: dt.date) -> dict[str, str]:
    """`airflow_env` + a curated store holding 1 January .. `last_day` 2013, copied from the
    session's `curated_days`; the source is also where the home's default URL points, so
    in-process calls (scoring ahead) read the same one as Airflow's tasks."""
    from tests.conftest import copy_curated, repo_settings, sqlite_url

    env = airflow_env(root, sqlite_url(source))
    home = Path(env["DRIFTLINE_HOME"])
    copy_curated(curated, home, last_day)
    default = Path(repo_settings(home).default_source_url("flights").removeprefix("sqlite:///"))
    default.parent.mkdir(parents=True, exist_ok=True)
    default.symlink_to(source)
    return env
