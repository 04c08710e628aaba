"""The nightly ETL under load and faults, through a real scheduler: `driftline stack up`
(the embedded default: LocalExecutor, SQLite metadata DB, default parallelism).

- Nights in parallel: the scheduler catches up 6 nights of flights_etl, two at a time
  (max_active_runs=2). `bench/bench_scheduler_load.py` runs this module with
  DRIFTLINE_LOAD_NIGHTS=30 for the 30-night load figure.
- Scheduler crash: SIGKILL of the scheduler while a night's tasks run, then
  `driftline stack restart scheduler`; every run still ends green.
- Correct outputs: each night's partition is byte-identical to the same day loaded alone
  in-process, so two nights loaded side by side did not touch each other's files.
- Concurrency: two retrainings triggered at the same moment run one after the other
  (max_active_runs=1, DVC's workspace locked) and register two distinct versions.

A use-case override bounds the calendar to the first NIGHTS days of January (end_date), so
unpausing flights_etl makes the scheduler run exactly those nights.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, repo_settings, sqlite_url
from tests.stack_helpers import (
    GREEN,
    AirflowApi,
    diagnostics,
    processes_mentioning,
    stack_env,
    stack_members,
    stack_state,
    survivors,
    wait_for_runs,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

BIN = Path(sys.executable).parent
ETL, TRAINING = "flights_etl", "flights_training"
# 6 nights prove what 30 did (two at a time, a crash mid-night, byte-identical partitions)
NIGHTS = int(os.environ.get("DRIFTLINE_LOAD_NIGHTS", "6"))
KILL_AFTER = 2  # nights done before the scheduler is killed while the next one runs
FIRST = dt.date(2013, 1, 1)
LAST = FIRST + dt.timedelta(days=NIGHTS - 1)
MODEL = "flights_delay"
# Two windows of 2 days with a 2-day holdout, both inside the first 6 loaded nights.
TRAININGS = {
    "faults_test__first": {"window_end": "2013-01-02", "window_days": 2, "reason": "test A"},
    "faults_test__second": {"window_end": "2013-01-04", "window_days": 2, "reason": "test B"},
}
TIMINGS: dict[str, float] = {}


def bounded_nights(folder: Path) -> Path:
    config = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    config["end_date"] = LAST.isoformat()
    config["training"].update(holdout_days=2, min_train_rows=500)
    config["training"]["gate"]["floor"] = 0.5
    folder.mkdir(parents=True)
    (folder / "flights.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def driftline(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(BIN / "driftline"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"driftline {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory, seeded_source) -> Iterator[tuple[Path, dict[str, str], AirflowApi]]:
    root = tmp_path_factory.mktemp("faults")
    home = root / "home"
    (home / "source").mkdir(parents=True)
    shutil.copyfile(seeded_source, home / "source" / "flights.db")
    env = stack_env(
        home,
        {
            "DRIFTLINE_USECASES_DIR": str(bounded_nights(root / "usecases")),
            "DRIFTLINE_EXPECTATIONS_DIR": str(REPO / "expectations"),
            # a task whose process died with the scheduler is noticed after 60 s, not 300 s
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        },
    )
    began = time.monotonic()
    running: dict[int, int] = {}
    try:
        driftline(env, "stack", "up", "--timeout", "300", timeout=600)
        TIMINGS["stack up"] = time.monotonic() - began
        state = stack_state(home)
        login = state["login"]["airflow"]
        api = AirflowApi(state["urls"]["airflow"], login["user"], login["password"])
        api.wait_for_dags({ETL, TRAINING})
        assert api.import_errors() == []
        yield home, env, api
    finally:
        if (home / "stack" / "state.json").exists():
            running = stack_members(home)
        driftline(env, "stack", "down", timeout=300)
        assert survivors(running) == [], "stack processes survived `down`"
        leftovers = processes_mentioning(f"port:{env['DRIFTLINE_AIRFLOW_PORT']}", str(home))
        assert leftovers == [], f"stack processes survived `down`: {leftovers}"


def running_tasks(api: AirflowApi, dag_id: str) -> list[str]:
    return [
        f"{run.dag_run_id}.{task}"
        for run in api.runs(dag_id)
        if str(run.state.value) == "running"
        for task, state in api.task_states(dag_id, run.dag_run_id).items()
        if state == "running"
    ]


def kill_scheduler_mid_night(home: Path, api: AirflowApi) -> tuple[int, list[str]]:
    """Wait until KILL_AFTER nights are done and a task runs, then SIGKILL the scheduler."""
    deadline = time.monotonic() + 900
    while True:
        runs = api.runs(ETL)
        done = sum(str(r.state.value) == "success" for r in runs)
        busy = running_tasks(api, ETL) if done >= KILL_AFTER else []
        if busy:
            break
        assert not any(str(r.state.value) == "failed" for r in runs), diagnostics(home)
        assert time.monotonic() < deadline, f"no night running after {KILL_AFTER} done: {runs}"
        time.sleep(1)
    pid = stack_state(home)["pids"]["scheduler"]
    os.kill(pid, signal.SIGKILL)
    return pid, busy


def test_nights_two_at_a_time_survive_a_scheduler_crash_and_load_correct_partitions(stack):
    home, env, api = stack
    began = time.monotonic()
    api.unpause(ETL)
    killed, busy = kill_scheduler_mid_night(home, api)
    TIMINGS["scheduler killed after"] = time.monotonic() - began
    driftline(env, "stack", "restart", "scheduler", timeout=600)
    assert stack_state(home)["pids"]["scheduler"] != killed

    runs = wait_for_runs(
        api,
        home,
        ETL,
        lambda runs: (
            len(runs) == NIGHTS and all(str(r.state.value) in ("success", "failed") for r in runs)
        ),
        f"done with {NIGHTS} nights",
        timeout=1800,
    )
    TIMINGS[f"{NIGHTS} nights"] = time.monotonic() - began
    states = {r.dag_run_id: api.task_states(ETL, r.dag_run_id) for r in runs}
    red = {run: tasks for run, tasks in states.items() if set(tasks.values()) - GREEN}
    assert not red, f"not green: {red}\n{diagnostics(home)}"
    assert {str(r.state.value) for r in runs} == {"success"}
    assert {str(r.run_type.value) for r in runs} == {"scheduled"}
    sys.stderr.write(f"\n{NIGHTS} nights through the scheduler: {TIMINGS} (killed during {busy})\n")
    print("LOAD-TIMINGS", json.dumps({"nights": NIGHTS, **TIMINGS}))  # bench_scheduler_load

    # every partition is exactly what the day gives when it is loaded alone, in-process
    from driftline import etl
    from driftline.config import load_usecase

    settings = repo_settings(home)
    alone = repo_settings(home.parent / "alone")
    usecase = load_usecase("flights", settings)
    loaded = etl.list_partitions(usecase, settings)
    assert [day for day, _, _ in loaded] == [FIRST + dt.timedelta(days=n) for n in range(NIGHTS)]
    source = sqlite_url(home / "source" / "flights.db")
    for day, path, rows in loaded:
        reference = etl.run_day(usecase, alone, day, source)
        assert (rows, path.read_bytes()) == (reference.rows, reference.path.read_bytes()), day


def test_two_retrainings_triggered_at_once_run_one_at_a_time(stack):
    home, env, api = stack
    api.unpause(TRAINING)
    for run_id, conf in TRAININGS.items():
        api.trigger(TRAINING, conf, run_id=run_id)
    runs = wait_for_runs(
        api,
        home,
        TRAINING,
        lambda runs: (
            len(runs) == 2 and all(str(r.state.value) in ("success", "failed") for r in runs)
        ),
        "done with both trainings",
        timeout=1200,
    )
    assert {str(r.state.value) for r in runs} == {"success"}
    first, second = sorted(runs, key=lambda r: r.start_date)
    assert first.end_date <= second.start_date, "the two trainings overlapped"

    import mlflow

    settings = repo_settings(home)
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    made_by = {v.tags.get("airflow_run_id"): int(v.version) for v in versions}
    assert made_by == {first.dag_run_id: 1, second.dag_run_id: 2}
    # each version is its own commit of the one DVC workspace, tagged with its number
    workspace = settings.workspace_dir("flights")
    tags = subprocess.run(
        ["git", "-C", str(workspace), "tag"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert tags == [f"{MODEL}-v1", f"{MODEL}-v2"]
