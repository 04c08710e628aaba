"""The operator's stack as an operator meets it: `make up`, a login, the DAGs, a retraining
triggered through the REST API client, the training run's MLflow link followed in headless
Chromium, and `make down` leaving no process behind.

With DRIFTLINE_STACK_HOME set (`make ui-test`), the tests use the stack `make up` started
there instead of starting their own, and write their screenshots into docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from airflow_client.client.exceptions import ApiException

from tests.stack_helpers import (
    AirflowApi,
    make,
    processes_mentioning,
    stack_env,
    stack_members,
    stack_state,
    survivors,
)

pytestmark = pytest.mark.timeout(1200)

DAGS = {"flights_etl", "flights_training", "flights_monitoring"}
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
RUN_ID = "browser_test_retraining"
WINDOW = {"window_end": "2013-01-03", "window_days": 3, "reason": "browser test"}
ETL_DAYS = ("2013-01-01", "2013-01-10")  # the window and its 7 holdout days


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, seeded_source: Path):
    """A running stack: started by `make up` here (and stopped by the last test), or the one
    DRIFTLINE_STACK_HOME names."""
    existing = os.environ.get("DRIFTLINE_STACK_HOME")
    if existing:
        home = Path(existing)
        yield {"home": home, "env": stack_env(home), "state": stack_state(home), "own": False}
        return
    home = tmp_path_factory.mktemp("stack") / "home"
    (home / "source").mkdir(parents=True)
    shutil.copyfile(seeded_source, home / "source" / "flights.db")
    env = stack_env(home)
    printed = make("up", env)
    state = stack_state(home)
    try:
        yield {"home": home, "env": env, "state": state, "own": True, "printed": printed}
    finally:
        if (home / "stack" / "state.json").exists():
            make("down", env)


@pytest.fixture(scope="module")
def api(stack) -> AirflowApi:
    state = stack["state"]
    return AirflowApi(state["urls"]["airflow"], "admin", state["login"]["airflow"]["password"])


@pytest.fixture(scope="module")
def training_run(stack, api: AirflowApi) -> str:
    """A retraining started through the REST API with the official client, finished."""
    if RUN_ID in {r.dag_run_id for r in api.runs("flights_training")}:
        return RUN_ID
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "driftline"),
            "etl",
            "--start",
            ETL_DAYS[0],
            "--end",
            ETL_DAYS[1],
        ],
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    api.wait_for_dags(DAGS)
    api.unpause("flights_training")
    assert api.trigger("flights_training", WINDOW, run_id=RUN_ID) == RUN_ID
    state = api.wait_for_run("flights_training", RUN_ID, timeout=900)
    assert state == "success", api.task_states("flights_training", RUN_ID)
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


def test_the_rest_api_client_refuses_a_bad_conf_and_runs_a_good_one(api, training_run):
    with pytest.raises(ApiException) as refused:
        api.trigger("flights_training", {**WINDOW, "window_days": 0})
    assert refused.value.status == 400 and "window_days" in str(refused.value.body)
    states = api.task_states("flights_training", training_run)
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
