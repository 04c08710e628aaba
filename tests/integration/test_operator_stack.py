"""The operator's stack as an operator meets it, and as it survives a crash: `make up`, a
login, the scheduler catching up nights two at a time while it is SIGKILLed and restarted,
two retrainings triggered at once through the REST API client, a training run's MLflow link
followed in headless Chromium, and `make down` leaving no process behind.

One stack for the module (its start-up is the costliest part): a use-case override bounds
the calendar to the first NIGHTS days of January (end_date), so unpausing flights_etl makes
the scheduler run exactly those nights, with a 2-day holdout so both trainings fit in them.

- Nights in parallel (max_active_runs=2); the scheduler killed while a task runs after
  KILL_AFTER nights, then `driftline stack restart scheduler`; every run green and every
  partition byte-identical to the same day loaded alone in-process. 6 nights prove what 30
  did: `bench/bench_scheduler_load.py` runs this test with DRIFTLINE_LOAD_NIGHTS=30 for the
  load figure.
- Concurrency: two retrainings triggered at the same moment run one after the other
  (max_active_runs=1, DVC's workspace locked) and register two distinct versions.

With DRIFTLINE_STACK_HOME set (`make ui-test`), the tests use the stack `make up` started
there instead of starting their own (the crash and the retrainings are then skipped), and
write their screenshots into docs/screenshots/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from airflow_client.client.exceptions import ApiException

from tests.conftest import REPO, repo_settings, sqlite_url
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
ETL, TRAINING = "flights_etl", "flights_training"
DAGS = {ETL, TRAINING, "flights_monitoring"}
MODEL = "flights_delay"
# 6 nights prove what 30 did (two at a time, a crash mid-night, byte-identical partitions)
NIGHTS = int(os.environ.get("DRIFTLINE_LOAD_NIGHTS", "6"))
KILL_AFTER = 2  # nights done before the scheduler is killed while the next one runs
FIRST = dt.date(2013, 1, 1)
LAST = FIRST + dt.timedelta(days=NIGHTS - 1)
# Two windows of 2 days with a 2-day holdout, both inside the first 6 loaded nights; the
# second is the run the browser test follows to MLflow.
TRAININGS = {
    "faults_test__first": {"window_end": "2013-01-02", "window_days": 2, "reason": "test A"},
    "browser_test_retraining": {
        "window_end": "2013-01-04", "window_days": 2, "reason": "browser test"},
}
RUN_ID = "browser_test_retraining"
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
    printed = make("up", env)
    TIMINGS["stack up"] = time.monotonic() - began
    state = stack_state(home)
    try:
        yield {"home": home, "env": env, "state": state, "own": True, "printed": printed}
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
    for service in ("airflow", "mlflow", "evidently"):
        assert state["urls"][service] in printed
    for service in ("airflow", "mlflow"):
        password = state["login"][service]["password"]
        assert password in printed and len(password) >= 16
    secrets_file = stack["home"] / "stack" / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600


def test_every_page_requires_a_login(stack):
    urls = stack["state"]["urls"]
    assert httpx.get(f"{urls['airflow']}/api/v2/dags").status_code == 401
    assert httpx.get(f"{urls['airflow']}/driftline/history/flights").status_code == 401
    assert (
        httpx.get(f"{urls['mlflow']}/api/2.0/mlflow/experiments/search?max_results=1").status_code
        == 401
    )
    wrong = httpx.post(
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
        assert not any(str(r.state.value) == "failed" for r in runs), diagnostics(home)
        assert time.monotonic() < deadline, f"no night running after {KILL_AFTER} done: {runs}"
        time.sleep(1)
    pid = stack_state(home)["pids"]["scheduler"]
    os.kill(pid, signal.SIGKILL)
    return pid, busy


def test_nights_two_at_a_time_survive_a_scheduler_crash_and_load_correct_partitions(stack, api):
    own_stack(stack)
    home, env = stack["home"], stack["env"]
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


def test_two_retrainings_triggered_at_once_run_one_at_a_time(stack, api):
    own_stack(stack)
    home = stack["home"]
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
        view.get_by_role("link", name="flights").click()
        expect(view.get_by_text("flights: drift history")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(shots / "airflow-drift-history.png"))
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
