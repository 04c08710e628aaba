"""The operator's stack as an operator meets it, and a compressed month of operations through
the real scheduler: `make up`, a login, the scheduler catching up nights two at a time while
it is SIGKILLed and restarted, a rejected night fixed in the source and cleared, a first
champion, a monitored night whose drift sensor starts a retraining, the sensor's window and
another window retrained at once through the REST API client, a rollback, the next night
monitored by the right champion; then every run, the registry, the workspace, the drift
history and the curated store must agree. A training run's MLflow link is followed in headless
Chromium, and `make down` leaves no process behind.

One stack for the module (its start-up is the costliest part): a use-case override bounds
the calendar to the first NIGHTS days of January (end_date), so unpausing flights_etl makes
the scheduler run exactly those nights, with 2-day windows and holdouts so every training fits
in them, and a rule that fires on any drift outside a 3-day cool-down.

- Nights in parallel (max_active_runs=2); the scheduler killed while a task runs after
  KILL_AFTER nights, then `driftline stack restart scheduler`; BAD_DAY is rejected by the
  suite, fixed in the source and its run cleared; every run green in the end and every
  partition byte-identical to the same day loaded alone in-process. 6 nights prove what 30
  did: `bench/bench_scheduler_load.py` runs this test with DRIFTLINE_LOAD_NIGHTS=30 for the
  load figure.
- Concurrency: two retrainings triggered at the same moment run one after the other
  (max_active_runs=1, DVC's workspace locked) and register two distinct versions.
- The CLI's month (tests/integration/test_operations_month.py) takes the same kind of steps
  in-process, with more of them checked in detail.

With DRIFTLINE_STACK_HOME set (`make ui-test`), the tests use the stack `make up` started
there instead of starting their own (the month is then skipped), and write their screenshots
into docs/screenshots/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from airflow_client.client.api.backfill_api import BackfillApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.api.task_instance_api import TaskInstanceApi
from airflow_client.client.exceptions import ApiException, ServiceException
from airflow_client.client.models.backfill_post_body import BackfillPostBody
from airflow_client.client.models.dag_run_clear_body import DAGRunClearBody

from driftline.config import load_usecase
from driftline.ingest import etl
from driftline.monitoring.history import DriftHistory
from driftline.operator import alerts
from tests import warm_cli
from tests.alert_receiver import alert_receiver, connection_env
from tests.conftest import BREAK_ONE_ORIGIN, FIX_ORIGIN, REPO, corrupt, repo_settings, sqlite_url
from tests.integration.conftest import flights
from tests.stack_helpers import (
    GREEN,
    AirflowApi,
    diagnostics,
    make,
    processes_mentioning,
    stack_env,
    stack_members,
    stack_state,
    survivors,
    wait_for_runs,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

BIN = Path(sys.executable).parent
ETL, TRAINING, MONITORING = "flights_etl", "flights_training", "flights_monitoring"
DAGS = {ETL, TRAINING, MONITORING}
MODEL = "flights_delay"
# 6 nights prove what 30 did (two at a time, a crash mid-night, byte-identical partitions)
NIGHTS = int(os.environ.get("DRIFTLINE_LOAD_NIGHTS", "6"))
KILL_AFTER = 2  # nights done before the scheduler is killed while the next one runs
FIRST = dt.date(2013, 1, 1)
LAST = FIRST + dt.timedelta(days=NIGHTS - 1)
BAD_DAY = dt.date(2013, 1, 3)  # one JFK flight from 'XXX' in the source: rejected, then fixed
WINDOW_DAYS = HOLDOUT_DAYS = 2
COOLDOWN_DAYS = 3  # from the champion's window end, or the last firing if later
# The month: v1 trains on 1-2 January (holdout 3-4); the night of 5 January fires (3 days
# after v1's window) and the sensor retrains 2-3 January; that window again by hand and
# 3-4 January (forced) at once; a rollback; 6 January is then monitored (inside the
# cool-down of the 5th's firing).
FIRST_CHAMPION = {"window_end": "2013-01-02", "window_days": 2, "reason": "first champion"}
FIRING_NIGHT = dt.date(2013, 1, 5)
ONE_DAY = dt.timedelta(days=1)  # a night scores the next day ahead
SENSOR_RUN = f"drift__{FIRING_NIGHT}"
SENSOR_WINDOW = {"window_end": "2013-01-03", "window_days": 2}
NEXT_NIGHT = dt.date(2013, 1, 6)
TRAININGS = {  # triggered at the same moment
    "month__same_window": {**SENSOR_WINDOW, "reason": "the sensor's window by hand"},
    "month__other_window": {
        "window_end": "2013-01-04", "window_days": 2, "force_promote": True,
        "reason": "another window, pushed by hand"},
}
RUN_ID = "month__same_window"  # the run the browser test follows to MLflow
WINDOW = TRAININGS[RUN_ID]
# a stack started elsewhere (make ui-test, the shipped use-case: 7 holdout days) gets this
# window's days loaded for its training run
ELSEWHERE = {"window_end": "2013-01-03", "window_days": 3, "reason": "browser test"}
ETL_DAYS = ("2013-01-01", "2013-01-10")
TIMINGS: dict[str, float] = {}

CHROMIUM = "/usr/bin/chromium"
# As root in a container without a session bus: no sandbox, no GPU, no calls home.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


DEADLINE_HOURS = 0.0003  # ~1 s after a night's run is queued: no run finishes by then


def bounded_nights(folder: Path) -> Path:
    """flights.yaml for the compressed month: NIGHTS days, 2-day windows and holdouts, a rule
    that fires on any drift (nights judged alone) outside the cool-down."""
    config = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    config["end_date"] = LAST.isoformat()
    config["training"].update(
        window_days=WINDOW_DAYS, holdout_days=HOLDOUT_DAYS, min_train_rows=500)
    config["training"]["gate"]["floor"] = 0.5
    config["monitoring"]["tests"].update(num_threshold=0.01, cat_threshold=0.01)
    # the configured window, and any firing starts the cool-down (flights ships from_onset
    # and retry_days; a 2-day window could never hold a week from an onset)
    config["monitoring"]["rule"].update(
        drift_share=0.05, nights_drifted=1, nights_window=1, cooldown_days=COOLDOWN_DAYS,
        from_onset=False, retry_days=None)
    config["night_deadline_hours"] = DEADLINE_HOURS  # every night misses it: one alert each
    folder.mkdir(parents=True)
    (folder / "flights.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def driftline(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """`driftline args` with the stack's environment: a warm process (tests.warm_cli), but for
    `driftline stack`, whose services must not descend from the tests' fork server."""
    if args[0] == "stack":
        done = subprocess.run(
            [str(BIN / "driftline"), *args], env=env, capture_output=True, text=True,
            timeout=timeout,
        )
    else:
        done = warm_cli.run("driftline", list(args), env, timeout=timeout)
    assert done.returncode == 0, f"driftline {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, seeded_source: Path):
    """A running stack: started by `make up` here (and stopped by the last test), or the one
    DRIFTLINE_STACK_HOME names."""
    existing = os.environ.get("DRIFTLINE_STACK_HOME")
    if existing:
        home = Path(existing)
        yield {"home": home, "env": stack_env(home), "state": stack_state(home), "own": False}
        return
    root = tmp_path_factory.mktemp("stack")
    home = root / "home"
    (home / "source").mkdir(parents=True)
    shutil.copyfile(seeded_source, home / "source" / "flights.db")
    # every alert the stack sends arrives here (test_every_event_alerts_once_through_the_stack)
    with alert_receiver(keep=True) as (alerts_url, received):
        env = stack_env(
            home,
            {
                "DRIFTLINE_USECASES_DIR": str(bounded_nights(root / "usecases")),
                "DRIFTLINE_EXPECTATIONS_DIR": str(REPO / "expectations"),
                # a task whose process died with the scheduler is noticed after 60 s, not 300 s
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
                # ... and the tasks of the killed scheduler's job are reset (orphans) after
                # about 30 s, not at the next 300 s check (measured: the killed night waited
                # 5 min 20 s for its retry)
                "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
                **connection_env(alerts_url),
            },
        )
        began = time.monotonic()
        printed = make("up", env)
        TIMINGS["stack up"] = time.monotonic() - began
        state = stack_state(home)
        try:
            yield {"home": home, "env": env, "state": state, "own": True, "printed": printed,
                   "alerts": received}
        finally:
            if (home / "stack" / "state.json").exists():
                make("down", env)


@pytest.fixture(scope="module")
def api(stack) -> AirflowApi:
    state = stack["state"]
    api = AirflowApi(state["urls"]["airflow"], "admin", state["login"]["airflow"]["password"])
    api.wait_for_dags(DAGS)
    return api


def own_stack(stack) -> None:
    if not stack["own"]:
        pytest.skip("crashes and trains only on a stack of its own")


@pytest.fixture(scope="module")
def training_run(stack, api: AirflowApi) -> str:
    """A retraining started through the REST API with the official client, finished: on our
    own stack the second of the two concurrent ones, elsewhere one started here."""
    if RUN_ID in {r.dag_run_id for r in api.runs(TRAINING)}:
        state = api.wait_for_run(TRAINING, RUN_ID, timeout=900)
        assert state == "success", api.task_states(TRAINING, RUN_ID)
        return RUN_ID
    if stack["own"]:
        pytest.fail("the concurrent-retrainings test did not start the run this test follows")
    done = subprocess.run(
        [str(BIN / "driftline"), "etl", "--start", ETL_DAYS[0], "--end", ETL_DAYS[1]],
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    api.unpause(TRAINING)
    assert api.trigger(TRAINING, ELSEWHERE, run_id=RUN_ID) == RUN_ID
    state = api.wait_for_run(TRAINING, RUN_ID, timeout=900)
    assert state == "success", api.task_states(TRAINING, RUN_ID)
    return RUN_ID


def test_make_up_prints_urls_and_generated_logins(stack):
    if not stack["own"]:
        pytest.skip("uses a stack started elsewhere")
    state, printed = stack["state"], stack["printed"]
    for service in ("airflow", "mlflow", "evidently", "scoring"):
        assert state["urls"][service] in printed
    # the users and the file that holds the passwords, never the passwords: this output
    # ends up in logs
    secrets_file = stack["home"] / "stack" / "secrets.json"
    assert str(secrets_file) in printed
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    kept = json.loads(secrets_file.read_text())
    for service in ("airflow", "mlflow"):
        password = state["login"][service]["password"]
        assert len(password) >= 16 and password not in printed
        assert kept[f"{service}_password"] == password
        assert f"login: {state['login'][service]['user']}" in printed
    viewer = state["login"]["airflow_viewer"]  # the read-only login, kept in the same file
    assert viewer["password"] not in printed
    assert kept["airflow_viewer_password"] == viewer["password"]
    assert f"read-only login: {viewer['user']}" in printed
    # this stack alerts a local receiver: `make up` says so, and where to
    assert "Alerts: on -> json://127.0.0.1:" in printed


def test_every_page_requires_a_login(stack):
    urls = stack["state"]["urls"]
    # a generous timeout: a busy machine (CI runs test files in parallel) answers slowly
    web = httpx.Client(timeout=60)
    assert web.get(f"{urls['airflow']}/api/v2/dags").status_code == 401
    assert web.get(f"{urls['airflow']}/driftline/history/flights").status_code == 401
    assert (
        web.get(f"{urls['mlflow']}/api/2.0/mlflow/experiments/search?max_results=1").status_code
        == 401
    )
    wrong = web.post(
        f"{urls['airflow']}/auth/token", json={"username": "admin", "password": "admin"}
    )
    assert wrong.status_code == 401


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
        failed = {night(r) for r in runs if str(r.state.value) == "failed"}
        assert failed <= {BAD_DAY}, diagnostics(home)
        assert time.monotonic() < deadline, f"no night running after {KILL_AFTER} done: {runs}"
        time.sleep(1)
    pid = stack_state(home)["pids"]["scheduler"]
    os.kill(pid, signal.SIGKILL)
    return pid, busy


def night(run) -> dt.date:
    """The day a nightly run covers: its data interval's start, in New York."""
    return flights().run_day(run.data_interval_start)


def run_of(api: AirflowApi, dag_id: str, day: dt.date) -> str:
    (run_id,) = [r.dag_run_id for r in api.runs(dag_id) if night(r) == day]
    return run_id


def midnight(day: dt.date) -> dt.datetime:
    """The logical date of the nightly run covering `day` (its data interval's start)."""
    return flights().day_start(day)


def task_log(home: Path, dag_id: str, run_id: str, task_id: str) -> str:
    logs = home / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return "\n".join(p.read_text(errors="replace") for p in logs.glob(f"task_id={task_id}/*.log"))


def finished(runs: list, count: int) -> bool:
    return len(runs) == count and all(str(r.state.value) in ("success", "failed") for r in runs)


def test_nights_two_at_a_time_survive_a_scheduler_crash_and_load_correct_partitions(
    stack, api, seeded_source
):
    own_stack(stack)
    home, env = stack["home"], stack["env"]
    settings = repo_settings(home)
    usecase = load_usecase("flights", settings)
    source = home / "source" / "flights.db"
    corrupt(source, usecase, BAD_DAY, BREAK_ONE_ORIGIN)
    began = time.monotonic()
    api.unpause(ETL)
    killed, busy = kill_scheduler_mid_night(home, api)
    TIMINGS["scheduler killed after"] = time.monotonic() - began
    driftline(env, "stack", "restart", "scheduler", timeout=600)
    assert stack_state(home)["pids"]["scheduler"] != killed

    deadline = time.monotonic() + 1800
    while not finished(runs := api.runs(ETL), NIGHTS):
        assert time.monotonic() < deadline, f"not done with {NIGHTS} nights:\n{diagnostics(home)}"
        time.sleep(3)
    TIMINGS[f"{NIGHTS} nights"] = time.monotonic() - began
    states = {r.dag_run_id: api.task_states(ETL, r.dag_run_id) for r in runs}
    red = {run: tasks for run, tasks in states.items() if set(tasks.values()) - GREEN}
    # the bad day alone is red, rejected by the suite, and nothing of it was loaded
    bad = run_of(api, ETL, BAD_DAY)
    assert list(red) == [bad], f"not green: {red}\n{diagnostics(home)}"
    assert red[bad]["validate_batch"] == "failed" and red[bad]["load_partition"] != "success"
    assert not settings.partition_dir("flights", BAD_DAY).exists()
    rejected = settings.quarantine_dir("flights", BAD_DAY)
    assert sorted(p.name for p in rejected.iterdir()) == ["batch.parquet", "validation.json"]
    assert "'XXX'" in task_log(home, ETL, bad, "validate_batch")

    # the operator fixes the source and clears the whole run, as the DAG's docs say (clearing
    # only the failed task would validate the same staged rows again); the same run goes green
    corrupt(source, usecase, BAD_DAY, FIX_ORIGIN)
    fixed = time.monotonic()
    DagRunApi(api.client).clear_dag_run(
        ETL, bad, DAGRunClearBody(dry_run=False, only_failed=False)
    )
    assert api.wait_for_run(ETL, bad, timeout=600) == "success", diagnostics(home)
    TIMINGS["bad day rerun"] = time.monotonic() - fixed

    runs = api.runs(ETL)
    assert {str(r.state.value) for r in runs} == {"success"}
    assert {str(r.run_type.value) for r in runs} == {"scheduled"}
    assert len(runs) == NIGHTS
    # the suite failed it, the rerun passed (a try killed with the scheduler may come first)
    tries = TaskInstanceApi(api.client).get_task_instance_tries(ETL, bad, "validate_batch")
    states = [str(t.state.value) for t in tries.task_instances]
    assert states[-2:] == ["failed", "success"], states
    sys.stderr.write(f"\n{NIGHTS} nights through the scheduler: {TIMINGS} (killed during {busy})\n")
    print("LOAD-TIMINGS", json.dumps({"nights": NIGHTS, **TIMINGS}))  # bench_scheduler_load

    # every partition is exactly what the day gives when it is loaded alone, in-process, from
    # the source as it was before it was broken
    alone = repo_settings(home.parent / "alone")
    loaded = etl.list_partitions(usecase, settings)
    assert [day for day, _, _ in loaded] == [FIRST + dt.timedelta(days=n) for n in range(NIGHTS)]
    for day, path, rows in loaded:
        reference = etl.run_day(usecase, alone, day, sqlite_url(seeded_source))
        assert (rows, path.read_bytes()) == (reference.rows, reference.path.read_bytes()), day


def monitor(api: AirflowApi, home: Path, day: dt.date) -> str:
    """A backfill of the one night `day` through the scheduler, as an operator starts a
    catch-up from the UI; the night's run id once it is done."""
    body = BackfillPostBody(
        dag_id=MONITORING, from_date=midnight(day), to_date=midnight(day), max_active_runs=1
    )
    # On SQLite Airflow answers a backfill request that meets a write lock with 503 "Database
    # is locked" (it creates every run in one transaction); an operator asks again
    for attempt in range(10):
        try:
            BackfillApi(api.client).create_backfill(body)
            break
        except ServiceException as exc:
            if "Database is locked" not in str(exc.body) or attempt == 9:
                raise
            time.sleep(3)
    deadline = time.monotonic() + 900
    while True:
        runs = [r for r in api.runs(MONITORING) if night(r) == day]
        if runs and str(runs[0].state.value) in ("success", "failed"):
            break
        assert time.monotonic() < deadline, f"night {day} not done:\n{diagnostics(home)}"
        time.sleep(3)
    (run,) = runs
    tasks = api.task_states(MONITORING, run.dag_run_id)
    red = [(MONITORING, run.dag_run_id, t) for t, state in tasks.items() if state not in GREEN]
    assert str(run.state.value) == "success", f"{tasks}\n{diagnostics(home, red)}"
    return run.dag_run_id


def trained(api: AirflowApi, home: Path, count: int) -> dict[str, object]:
    """Wait until flights_training has `count` runs, all green; the runs by id."""
    runs = wait_for_runs(
        api,
        home,
        TRAINING,
        lambda runs: finished(runs, count),
        f"done with {count} trainings",
        timeout=1200,
    )
    return {r.dag_run_id: r for r in runs}


def lineage(env: dict[str, str], version: str) -> dict:
    return json.loads(driftline(env, "lineage", version, "--json"))


def git(workspace: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(workspace), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_month_goes_on_through_the_scheduler(stack, api):
    """After the nights: the first champion, a night whose sensor retrains, two retrainings
    at once, a rollback, the next night; then every store agrees with the others."""
    own_stack(stack)
    home, env = stack["home"], stack["env"]
    settings = repo_settings(home)
    began = time.monotonic()
    # nothing waits unseen: the training DAG is never paused on creation, so the sensor's
    # and the trigger form's runs start at once
    assert not api.is_paused(TRAINING)
    api.unpause(MONITORING)

    # the first champion, by hand
    api.trigger(TRAINING, FIRST_CHAMPION, run_id="month__first_champion")
    trained(api, home, 1)
    first = lineage(env, "1")
    assert (first["airflow_run_id"], first["gate"]["decision"]) == (
        "month__first_champion",
        "promoted",
    )
    TIMINGS["first champion"] = time.monotonic() - began

    # the night of 5 January: v1 scores it, the rule fires, the sensor starts a retraining of
    # the newest window whose holdout ends on that night
    fired_run = monitor(api, home, FIRING_NIGHT)
    states = api.task_states(MONITORING, fired_run)
    assert (states["drift_sensor"], states["trigger_retraining"]) == ("success", "success")
    runs = trained(api, home, 2)
    # started by the sensor's TriggerDagRunOperator, not by a person
    assert str(runs[SENSOR_RUN].run_type.value) == "operator_triggered"
    sensor = lineage(env, "2")
    assert sensor["airflow_run_id"] == SENSOR_RUN and sensor["trigger_reason"] == "drift"
    assert sensor["window"] == "2013-01-02..2013-01-03"
    assert sensor["holdout"] == f"2013-01-04..{FIRING_NIGHT}"
    promoted = sensor["gate"]["decision"] == "promoted"
    champion = "2" if promoted else "1"
    TIMINGS["sensor's retraining"] = time.monotonic() - began

    # the sensor's window again and another window, triggered at the same moment: they run
    # one after the other and get a version each, in the order they ran
    for run_id, conf in TRAININGS.items():
        api.trigger(TRAINING, conf, run_id=run_id)
    runs = trained(api, home, 4)
    first_run, second_run = sorted(
        (runs[run_id] for run_id in TRAININGS), key=lambda r: r.start_date
    )
    assert first_run.end_date <= second_run.start_date, "the two trainings overlapped"
    version = {first_run.dag_run_id: "3", second_run.dag_run_id: "4"}
    same, other = (lineage(env, version[run_id]) for run_id in TRAININGS)
    # the same data gives the same model (DVC's cache), which beats neither itself nor a
    # champion it lost to; after the forced window, too little of its holdout (5 January)
    # lies outside that champion's window to compare; the forced window is promoted
    assert same["window"] == sensor["window"]
    assert same["dvc_hashes"]["model"] == sensor["dvc_hashes"]["model"]
    assert same["gate"]["decision"] == "not promoted", same["gate"]
    if first_run.dag_run_id == "month__other_window":
        expected = f"not compared with champion version {version['month__other_window']}"
    elif promoted:
        expected = "does not beat the champion's"
    else:
        expected = sensor["gate"]["reason"]
    assert expected in same["gate"]["reason"], same["gate"]
    assert other["gate"]["decision"] == "promoted", other["gate"]
    champion, previous = version["month__other_window"], champion
    TIMINGS["two retrainings at once"] = time.monotonic() - began

    # a rollback: the champion before the forced one serves again
    out = driftline(env, "rollback", "--reason", "the forced window is worse at JFK")
    demoted = version["month__other_window"]
    assert f"champion is version {previous} again (version {demoted} is now `previous`)" in out
    champion, previous = previous, demoted
    # the stack's scoring server answers with the restored champion at once
    usecase = load_usecase("flights", settings)
    rows = etl.read_curated(usecase, settings, FIRING_NIGHT, FIRING_NIGHT).head(5)
    split = json.loads(rows[usecase.features.all].to_json(orient="split", index=False))
    answer = httpx.post(f"{stack['state']['urls']['scoring']}/invocations",
                        json={"dataframe_split": split}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == champion and len(answer.json()["predictions"]) == 5

    # the next night is judged by the champion the rollback restored (the history below);
    # inside the cool-down. It is the use-case's last day: there is no day to score ahead
    next_run = monitor(api, home, NEXT_NIGHT)
    assert api.task_states(MONITORING, next_run)["trigger_retraining"] == "skipped"
    assert not settings.predictions_path("flights", NEXT_NIGHT + ONE_DAY).exists()
    TIMINGS["next night"] = time.monotonic() - began

    # every run in the state it should be: all green (the bad day's first try was red)
    for dag_id, count in ((ETL, NIGHTS), (TRAINING, 4), (MONITORING, 2)):
        dag_runs = api.runs(dag_id)
        assert len(dag_runs) == count, dag_runs
        states = {r.dag_run_id: api.task_states(dag_id, r.dag_run_id) for r in dag_runs}
        not_green = {
            r.dag_run_id: states[r.dag_run_id]
            for r in dag_runs
            if str(r.state.value) != "success" or set(states[r.dag_run_id].values()) - GREEN
        }
        assert not not_green, f"{dag_id}: {not_green}\n{diagnostics(home)}"
    assert [str(r.run_type.value) for r in api.runs(MONITORING)] == ["backfill"] * 2

    # the registry: each version made by its run, each a tagged commit of the workspace
    made_by = {"month__first_champion": "1", SENSOR_RUN: "2", **version}
    aliases: dict[str, str] = {}
    commits = set()
    workspace = settings.workspace_dir("flights")
    for run_id, number in made_by.items():
        info = lineage(env, number)
        assert info["airflow_run_id"] == run_id, (number, info)
        assert git(workspace, "rev-parse", f"{MODEL}-v{number}^{{commit}}") == info["dvc_commit"]
        commits.add(info["dvc_commit"])
        aliases.update({alias: number for alias in info["aliases"]})
    assert len(commits) == 4, "each version is a commit of its own"
    assert (aliases["champion"], aliases["previous"], aliases["challenger"]) == (
        champion,
        previous,
        "4",
    )
    assert sorted(git(workspace, "tag", "--list").split()) == [
        f"{MODEL}-v{n}" for n in ("1", "2", "3", "4")
    ]
    assert git(workspace, "status", "--porcelain") == ""
    in_git = [p for p in git(workspace, "ls-files").split() if p.startswith("model/")]
    assert in_git == [], f"DVC outputs tracked by git in the workspace: {in_git}"

    # the drift history: the fired night leads to the retraining and its decision
    ledger = DriftHistory(settings.history_url)
    try:
        rows = {n.day: n for n in ledger.nights("flights", dt.date.max, 100)}
    finally:
        ledger.dispose()
    assert sorted(rows) == [FIRING_NIGHT, NEXT_NIGHT]
    fired, after = rows[FIRING_NIGHT], rows[NEXT_NIGHT]
    assert (fired.model_version, fired.decision) == ("1", "fired"), fired
    fired_scores = pd.read_parquet(settings.predictions_path("flights", FIRING_NIGHT + ONE_DAY))
    assert set(fired_scores["model_version"].astype(str)) == {"1"}
    assert "drift share" in fired.fired_by, fired
    assert fired.training_run == f"{TRAINING}/{SENSOR_RUN}", fired
    assert fired.training_decision.startswith(
        f"version 2 {'promoted' if promoted else 'not promoted'}: "
    ), fired
    assert (after.model_version, after.decision) == (champion, "skipped: cool-down"), after

    # the curated store and the quarantine as `driftline status` tells them
    out = driftline(env, "status")
    assert f"{NIGHTS} days ({FIRST} .. {LAST})" in out, out
    assert "quarantine         1 batches" in out, out
    assert re.search(rf"{BAD_DAY}: .*\(resolved: the day was loaded later\)", out), out
    assert re.search(rf"@champion\s+version {champion}:", out), out
    sys.stderr.write(f"\nthe month through the scheduler: {TIMINGS}\n")


def test_every_event_alerts_once_through_the_stack(stack, api):
    """What the month sent to the stack's webhook: one alert per event, from the scheduler's
    own task runs, the triggerer (deadlines) and the CLI (the rollback)."""
    own_stack(stack)
    received = stack["alerts"]
    # the bad day: its quarantine (its validate_batch failed once), naming the expectation
    (quarantined,) = received.of(alerts.QUARANTINE)
    assert "dag: flights_etl\ntask: validate_batch" in quarantined["message"]
    assert "expect_column_values_to_be_in_set on origin" in quarantined["message"]
    assert "XXX" in quarantined["message"]
    # the night of 5 January fired once, with its evidence
    (fired,) = received.of(alerts.DRIFT_FIRED)
    assert f"night: {FIRING_NIGHT}" in fired["message"] and "drift share: " in fired["message"]
    # every training run's gate: one decision each, both scores
    decisions = received.of(alerts.PROMOTED) + received.of(alerts.KEPT)
    runs = sorted(line.removeprefix("run: ") for a in decisions
                  for line in a["message"].splitlines() if line.startswith("run: "))
    assert runs == sorted(["month__first_champion", SENSOR_RUN, *TRAININGS]), runs
    # the rollback by the CLI
    (rolled,) = received.of(alerts.ROLLBACK)
    assert "reason: the forced window is worse at JFK" in rolled["message"]
    # the triggerer: each night's run missed its ~1 s deadline, one alert each
    late = [line.removeprefix("dag: ") + "/" + a["message"].split("\nrun: ")[1].split("\n")[0]
            for a in received.of(alerts.DEADLINE_MISSED) for line in a["message"].splitlines()
            if line.startswith("dag: ")]
    nightly = [f"{dag_id}/{r.dag_run_id}" for dag_id in (ETL, MONITORING) for r in api.runs(dag_id)]
    assert sorted(late) == sorted(nightly), (late, nightly)


def test_the_rest_api_client_refuses_a_bad_conf_and_runs_a_good_one(api, training_run):
    with pytest.raises(ApiException) as refused:
        api.trigger(TRAINING, {**WINDOW, "window_days": 0})
    assert refused.value.status == 400 and "window_days" in str(refused.value.body)
    states = api.task_states(TRAINING, training_run)
    assert set(states.values()) == {"success"}, states
    assert api.import_errors() == []


def test_browser_login_dags_training_run_and_its_mlflow_link(stack, training_run, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    shots = Path(os.environ.get("DRIFTLINE_SCREENSHOTS_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    state = stack["state"]
    airflow, mlflow = state["urls"]["airflow"], state["urls"]["mlflow"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = browser.new_context(
            viewport={"width": 1400, "height": 900},
            http_credentials={
                "username": "admin",
                "password": state["login"]["mlflow"]["password"],
            },
        )
        page = context.new_page()
        page.goto(airflow)
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(state["login"]["airflow"]["password"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "login" not in url)

        page.goto(f"{airflow}/dags")
        for dag_id in sorted(DAGS):
            expect(page.get_by_role("link", name=dag_id, exact=True).first).to_be_visible(
                timeout=60_000
            )
        expect(page.get_by_text("import error", exact=False)).to_have_count(0)
        page.screenshot(path=str(shots / "airflow-dags.png"))

        page.goto(f"{airflow}/dags/flights_training/runs/{training_run}/tasks/register_model")
        page.get_by_role("link", name="Details", exact=True).click()  # the task's Details tab
        link = page.get_by_role("link", name="MLflow run")
        expect(link).to_be_visible(timeout=60_000)
        expect(page.get_by_role("link", name="MLflow model version")).to_be_visible()
        assert link.get_attribute("href").startswith(f"{mlflow}/#/experiments/")
        page.screenshot(path=str(shots / "airflow-training-extra-links.png"))

        with context.expect_page() as opened:
            link.click()
        run_page = opened.value
        run_page.wait_for_load_state()
        expect(run_page.get_by_text(f"flights_training_{training_run}").first).to_be_visible(
            timeout=60_000
        )
        expect(run_page.get_by_text("trigger_reason").first).to_be_visible()
        run_page.screenshot(path=str(shots / "mlflow-run.png"))

        page.goto(f"{airflow}/plugin/drift-history")  # the plugin's view, in Airflow's nav
        view = page.frame_locator("iframe")
        # one use-case: the nav entry opens on its history directly
        expect(view.get_by_text("flights: drift history")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(shots / "airflow-drift-history.png"))
        report_link = view.get_by_role("link", name="drift", exact=True)
        if stack["own"] or report_link.count():  # (a stack elsewhere may have no night yet)
            with context.expect_page() as opened:  # a report opens in a tab of its own
                report_link.first.click()
            report = opened.value
            report.wait_for_load_state()
            assert "/driftline/reports/flights/" in report.url, report.url
            report_url = report.url
            report.close()
            # the report's URL without a session: the login page, not JSON
            anonymous = browser.new_context()
            stranger = anonymous.new_page()
            stranger.goto(report_url)
            stranger.wait_for_url(lambda url: "login" in url, timeout=30_000)
            expect(stranger.get_by_label("Username")).to_be_visible(timeout=30_000)
            anonymous.close()

        # the champion at a glance (the admin may roll back), and a rollback with a reason
        page.set_viewport_size({"width": 1400, "height": 1400})  # the whole page in the shot
        page.goto(f"{airflow}/plugin/champion")
        view = page.frame_locator("iframe")
        expect(view.get_by_text("flights: champion")).to_be_visible(timeout=60_000)
        expect(view.get_by_text("@champion", exact=True)).to_be_visible()
        form = view.locator("form.rollback")
        if stack["own"] or form.count():  # (a stack elsewhere may have no previous version)
            expect(form).to_be_visible()
            page.screenshot(path=str(shots / "airflow-champion-admin.png"), full_page=True)
            reason = "browser test: rolled back from the Airflow UI"
            form.get_by_label("Reason").fill(reason)
            form.get_by_role("button", name="Roll back").click()
            notice = view.get_by_text("Rolled back: the champion is version")
            expect(notice).to_be_visible(timeout=60_000)
            restored = re.search(r"version (\d+) again", notice.inner_text()).group(1)
            expect(view.get_by_text(f"restored by a rollback: {reason}")).to_be_visible()
            if stack["own"]:  # the scoring server answers with the restored champion at once
                served = view.locator("p.served")
                expect(served).to_contain_text(f"version {restored} (the champion)")
            status = driftline(stack["env"], "status")
            assert re.search(rf"@champion\s+version {restored}:", status), status
            if stack["own"]:  # recorded and alerted as the CLI's rollback is, with who did it
                from_ui = [a for a in stack["alerts"].of(alerts.ROLLBACK) if reason in a["message"]]
                assert len(from_ui) == 1, stack["alerts"].of(alerts.ROLLBACK)
                assert "by: admin (Airflow UI)" in from_ui[0]["message"], from_ui[0]

        # a viewer: reads the champion, sees no rollback, and a rollback it posts is refused
        viewer = browser.new_context(viewport={"width": 1400, "height": 1400})
        login = state["login"]["airflow_viewer"]  # make up's read-only login
        viewer_page = viewer.new_page()
        viewer_page.goto(airflow)
        viewer_page.get_by_label("Username").fill(login["user"])
        viewer_page.get_by_label("Password").fill(login["password"])
        viewer_page.get_by_role("button", name="Sign in").click()
        viewer_page.wait_for_url(lambda url: "login" not in url)
        viewer_page.goto(f"{airflow}/plugin/champion")
        viewer_view = viewer_page.frame_locator("iframe")
        expect(viewer_view.get_by_text("flights: champion")).to_be_visible(timeout=60_000)
        expect(viewer_view.get_by_text("Rolling back needs edit access to")).to_be_visible()
        expect(viewer_view.locator("form")).to_have_count(0)
        viewer_page.screenshot(path=str(shots / "airflow-champion-viewer.png"), full_page=True)
        refused = viewer.request.post(
            f"{airflow}/driftline/champion/flights/rollback",
            form={"reason": "a viewer tries"},
            headers={"Origin": airflow},
        )
        assert refused.status == 403, refused.text()
        viewer.close()
        browser.close()


def test_make_down_leaves_no_process_behind(stack):
    if not stack["own"]:
        pytest.skip("the stack belongs to whoever started it")
    running = stack_members(stack["home"])
    assert len(running) >= 6, "the stack's processes should be running before"
    make("down", stack["env"])
    assert survivors(running) == []
    port = stack["env"]["DRIFTLINE_AIRFLOW_PORT"]
    assert processes_mentioning(f"port:{port}", str(stack["home"])) == []
    assert not (stack["home"] / "stack" / "state.json").exists()
    assert "no stack was running" in make("down", stack["env"])
