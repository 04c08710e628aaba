"""The production configuration run natively on this machine, end to end through the scheduler.

`driftline stack up --production` with Airflow's metadata DB on the local PostgreSQL, the
CeleryExecutor with the local Redis as broker and a real Celery worker, the MLflow tracking
server on PostgreSQL, the flights source and the drift history on PostgreSQL too. The
scheduler (not `dags test`) then runs the ETL for four days, a training and two monitored
nights, and every DAG run and task instance must end green.

Kept small by a use-case override (DRIFTLINE_USECASES_DIR): a 1-day window with 1 holdout
day, nights judged alone, a rule that never fires, and `end_date` on the last day loaded, so
that unpausing flights_etl (catchup) makes the scheduler run exactly those four days. The
training starts as soon as its two days are loaded, while the ETL of the nights goes on.
Every database is fresh and uniquely named; Redis keys carry a unique prefix.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml
from airflow_client.client.api.backfill_api import BackfillApi
from airflow_client.client.api.extra_links_api import ExtraLinksApi
from airflow_client.client.api.task_instance_api import TaskInstanceApi
from airflow_client.client.models.backfill_post_body import BackfillPostBody

from tests.conftest import REPO
from tests.integration.conftest import flights
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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/7"
BIN = Path(sys.executable).parent
USECASE = "flights"
ETL, TRAINING, MONITORING = "flights_etl", "flights_training", "flights_monitoring"
MODEL = "flights_delay"

# 1 January: training window; 2 January: holdout; 3-4 January: the two monitored nights.
FIRST_DAY = dt.date(2013, 1, 1)
WINDOW_DAYS = 1
WINDOW_END = dt.date(2013, 1, 1)
NIGHTS = (dt.date(2013, 1, 3), dt.date(2013, 1, 4))
LAST_DAY = NIGHTS[-1]
TRAIN_RUN = "production_test__train"
SETUP: dict[str, float] = {}  # seconds the fixture took, printed with the test's own


def midnight(day: dt.date) -> dt.datetime:
    """The logical date of the nightly run covering `day` (its data interval's start)."""
    return flights().day_start(day)


def small_usecases(folder: Path) -> Path:
    """flights.yaml, shrunk: four days in all, a 1-day window, a rule that stays quiet."""
    config = yaml.safe_load((REPO / "usecases" / f"{USECASE}.yaml").read_text())
    config["end_date"] = LAST_DAY.isoformat()  # bounds flights_etl's catchup
    config["training"].update(window_days=WINDOW_DAYS, holdout_days=1, min_train_rows=500)
    config["training"]["gate"]["floor"] = 0.5  # no champion yet: the floor alone decides
    monitoring = config["monitoring"]
    monitoring["current_days"] = 1
    monitoring["rule"].update(
        drift_share=1.0,
        nights_drifted=1,
        nights_window=1,
        quality_drop=None,
        min_labelled_rows=100,
        cooldown_days=0,
        from_onset=False,  # a 1-day window could never hold a week from an onset
    )
    folder.mkdir(parents=True)
    (folder / f"{USECASE}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def query(url: str, sql: str, **params) -> list:
    """The rows of one query on a database of the stack."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """Fresh databases on the local server, dropped (connections terminated) afterwards."""
    tag = f"driftline_prod_{uuid.uuid4().hex[:8]}"
    parts = ("airflow", "mlflow", "source", "monitoring", "predictions")
    names = {part: f"{tag}_{part}" for part in parts}
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    created: list[str] = []
    try:
        try:
            with admin.connect() as conn:
                for name in names.values():
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                    created.append(name)
        except sa.exc.OperationalError as exc:
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is not usable ({exc.orig})")
        yield {"tag": tag, **{part: f"{SERVER}/{name}" for part, name in names.items()}}
    finally:
        with admin.connect() if created else nullcontext() as conn:
            for name in created:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def redis_prefix(databases) -> Iterator[str]:
    """A key prefix of our own in Redis DB 7: only our keys are removed, before and after."""
    import redis

    prefix = f"{databases['tag']}:"
    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS} is not usable ({exc})")

    def forget() -> None:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)

    forget()
    try:
        yield prefix
    finally:
        forget()
        client.close()


@pytest.fixture(scope="module")
def production_stack(tmp_path_factory, databases, redis_prefix) -> Iterator[tuple[Path, dict]]:
    """`driftline stack up --production` over the fresh databases (the source seeded with
    its four days while the stack starts); `driftline stack down` afterwards leaves no
    process of it behind. One stack for the module: starting it costs ~100 s, and the FAB
    roles test runs after the nights test, on what that one left."""
    tmp_path = tmp_path_factory.mktemp("production")
    home = tmp_path / "home"
    env = stack_env(
        home,
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": databases["airflow"],
            "AIRFLOW__CELERY__BROKER_URL": REDIS,
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": redis_prefix,
            "DRIFTLINE_MLFLOW_BACKEND_STORE_URI": databases["mlflow"],
            "DRIFTLINE_FLIGHTS_SOURCE_URL": databases["source"],
            "DRIFTLINE_HISTORY_URL": databases["monitoring"],
            "DRIFTLINE_PREDICTIONS_URL": databases["predictions"],
            "DRIFTLINE_USECASES_DIR": str(small_usecases(tmp_path / "usecases")),
            "DRIFTLINE_EXPECTATIONS_DIR": str(REPO / "expectations"),
            # CPU for the tasks on 2 cores: the DAG files are parsed once (they do not change)
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        },
    )
    seeding = subprocess.Popen(
        [str(BIN / "driftline"), "seed", "--db", databases["source"],
         "--start", FIRST_DAY.isoformat(), "--end", LAST_DAY.isoformat()],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running: dict[int, int] = {}
    began = time.monotonic()
    try:
        up = subprocess.run(
            [str(BIN / "driftline"), "stack", "up", "--production", "--timeout", "300"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert up.returncode == 0, (
            f"stack up --production failed:\n{up.stdout}\n{up.stderr}\n{diagnostics(home)}"
        )
        SETUP["stack up"] = time.monotonic() - began
        seeded, _ = seeding.communicate(timeout=600)
        assert seeding.returncode == 0, f"driftline seed failed:\n{seeded}"
        SETUP["seeded"] = time.monotonic() - began
        yield home, env
    finally:
        if seeding.poll() is None:
            seeding.kill()
            seeding.wait()
        if (home / "stack" / "state.json").exists():
            running = stack_members(home)
        down = subprocess.run(
            [str(BIN / "driftline"), "stack", "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert down.returncode == 0, f"stack down failed:\n{down.stdout}\n{down.stderr}"
        assert survivors(running) == [], "stack processes survived `down`"
        leftovers = processes_mentioning(f"port:{env['DRIFTLINE_AIRFLOW_PORT']}", str(home))
        assert leftovers == [], f"stack processes survived `down`: {leftovers}"


def finished(runs: list, count: int, before: dt.date | None = None) -> bool:
    """`count` runs (of those whose logical date is before `before`, if given) have ended."""
    watched = [r for r in runs if before is None or r.logical_date < midnight(before)]
    return len(watched) >= count and all(
        str(r.state.value) in ("success", "failed") for r in watched
    )


def test_production_stack_runs_etl_training_and_two_monitored_nights(production_stack, monkeypatch):
    home, env = production_stack
    began = time.monotonic()
    timings: dict[str, float] = {}
    state = stack_state(home)
    assert state["profile"] == "production"
    airflow_url, mlflow_url = state["urls"]["airflow"], state["urls"]["mlflow"]
    api = AirflowApi(
        airflow_url, state["login"]["airflow"]["user"], state["login"]["airflow"]["password"]
    )
    api.wait_for_dags({ETL, TRAINING, MONITORING})
    assert api.import_errors() == []
    timings["parsed"] = time.monotonic() - began

    # ETL: the scheduler catches up 1..4 January (the override's end_date bounds it)
    assert not api.is_paused(TRAINING)  # never paused on creation: nothing waits unseen
    for dag_id in (MONITORING, ETL):
        api.unpause(dag_id)
    etl_days = (LAST_DAY - FIRST_DAY).days + 1
    holdout = WINDOW_END + dt.timedelta(days=1)
    needed = (holdout - FIRST_DAY).days + 1
    wait_for_runs(
        api,
        home,
        ETL,
        lambda runs: finished(runs, needed, before=NIGHTS[0]),
        f"done with the {needed} days training needs",
    )
    timings["etl of the training days"] = time.monotonic() - began

    # training, triggered through the REST API (window 1 January, holdout 2 January) while
    # the ETL of the two nights goes on
    conf = {
        "window_end": WINDOW_END.isoformat(),
        "window_days": WINDOW_DAYS,
        "reason": "production test",
    }
    api.trigger(TRAINING, conf, run_id=TRAIN_RUN)
    wait_for_runs(api, home, ETL, lambda runs: finished(runs, etl_days), "done")
    timings["etl"] = time.monotonic() - began
    wait_for_runs(api, home, TRAINING, lambda runs: finished(runs, 1), "done")
    timings["training"] = time.monotonic() - began

    # monitoring: a backfill of the two nights after the holdout, in order
    BackfillApi(api.client).create_backfill(
        BackfillPostBody(
            dag_id=MONITORING,
            from_date=midnight(NIGHTS[0]),
            to_date=midnight(NIGHTS[-1]),
            max_active_runs=1,
        )
    )
    wait_for_runs(api, home, MONITORING, lambda runs: finished(runs, len(NIGHTS)), "done")
    # a night whose rule fired triggered flights_training again: wait for that one too
    wait_for_runs(api, home, TRAINING, lambda runs: finished(runs, len(runs)), "done")
    timings["monitoring"] = time.monotonic() - began

    # every run green, every task instance success or skipped
    runs = {dag_id: api.runs(dag_id) for dag_id in (ETL, TRAINING, MONITORING)}
    lines, red, received_needed = [], [], 0
    for dag_id, dag_runs in runs.items():
        for run in dag_runs:
            lines.append(f"{dag_id} {run.dag_run_id} [{run.run_type.value}]: {run.state.value}")
            instances = (
                TaskInstanceApi(api.client)
                .get_task_instances(dag_id, run.dag_run_id)
                .task_instances
            )
            for ti in instances:
                ti_state = str(ti.state.value) if ti.state else "none"
                lines.append(f"    {ti.task_id}: {ti_state} (try {ti.try_number})")
                if ti_state not in GREEN:
                    red.append((dag_id, run.dag_run_id, ti.task_id))
                received_needed += ti_state == "success"
    summary = "\n".join(lines)
    not_green = [
        line for line in lines if not line.startswith("    ") and not line.endswith(": success")
    ]
    assert not red and not not_green, f"not all green:\n{summary}\n{diagnostics(home, red)}"
    assert len(runs[ETL]) == etl_days, summary
    assert len(runs[MONITORING]) == len(NIGHTS), summary
    assert {str(r.run_type.value) for r in runs[MONITORING]} == {"backfill"}, summary
    assert {str(r.run_type.value) for r in runs[ETL]} == {"scheduled"}, summary

    # it really was Celery: the worker received (at least) every task that succeeded
    worker_log = (home / "stack" / "logs" / "celery-worker.log").read_text(errors="replace")
    received = worker_log.count("] received")
    assert received >= received_needed, f"worker received {received} tasks:\n{worker_log[-3000:]}"

    # Airflow's metadata is on PostgreSQL: the runs are in its dag_run table
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    airflow_db = sa.create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    try:
        with airflow_db.connect() as conn:
            counted = dict(
                conn.execute(sa.text("SELECT dag_id, count(*) FROM dag_run GROUP BY dag_id")).all()
            )
            # the login is FAB's (not the development auth manager): its one user, an Admin
            admins = conn.execute(
                sa.text(
                    "SELECT u.username, r.name FROM ab_user u"
                    " JOIN ab_user_role ur ON ur.user_id = u.id JOIN ab_role r ON r.id = ur.role_id"
                )
            ).all()
    finally:
        airflow_db.dispose()
    assert counted == {dag_id: len(dag_runs) for dag_id, dag_runs in runs.items()}
    assert [tuple(row) for row in admins] == [(state["login"]["airflow"]["user"], "Admin")]
    wrong = httpx.post(
        f"{airflow_url}/auth/token",
        json={"username": state["login"]["airflow"]["user"], "password": "admin"},
        timeout=30,
    )
    assert wrong.status_code == 401, wrong.text[:500]

    # the model is registered in the tracking server, whose store is PostgreSQL
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", state["login"]["mlflow"]["user"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", state["login"]["mlflow"]["password"])
    client = mlflow.MlflowClient(tracking_uri=mlflow_url)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["airflow_run_id"] == TRAIN_RUN
    assert champion.tags["gate.decision"] == "promoted"
    assert champion.tags["dvc_commit"]  # the version's DVC address, as on the embedded store
    assert not (Path(env["DRIFTLINE_HOME"]) / "mlflow" / "mlflow.db").exists()  # no local store
    mlflow_db = sa.create_engine(env["DRIFTLINE_MLFLOW_BACKEND_STORE_URI"])
    try:
        with mlflow_db.connect() as conn:
            stored = conn.execute(
                sa.text("SELECT version, run_id FROM model_versions WHERE name = :name"),
                {"name": MODEL},
            ).all()
    finally:
        mlflow_db.dispose()
    assert (int(champion.version), champion.run_id) in {(int(v), r) for v, r in stored}

    # the drift history on PostgreSQL holds the two nights, each judged by the sensor
    nights = query(
        env["DRIFTLINE_HISTORY_URL"],
        "SELECT day, model_version, decision FROM drift_history WHERE usecase = :usecase "
        "ORDER BY day",
        usecase=USECASE,
    )
    assert [n.day for n in nights] == list(NIGHTS)
    assert all(n.model_version == champion.version and n.decision for n in nights), nights

    # the predictions published on PostgreSQL: the night of 3 January scored the 4th ahead
    # (the 4th's night had no next day to score: the use-case ends), once per flight
    published = query(
        env["DRIFTLINE_PREDICTIONS_URL"],
        "SELECT day, model_version, count(*) AS n, count(DISTINCT key) AS keys "
        "FROM predictions WHERE usecase = :usecase GROUP BY day, model_version",
        usecase=USECASE,
    )
    assert [(p.day, p.model_version) for p in published] == [(LAST_DAY, champion.version)]
    assert published[0].n == published[0].keys > 500, published
    assert not (home / "source").exists()  # the ETL read PostgreSQL, not a SQLite default

    # the extra links, and the plugin pages behind them (served behind Airflow's login)
    token = api.client.configuration.access_token
    extra = ExtraLinksApi(api.client)

    def link(dag_id: str, run_id: str, task_id: str, name: str) -> str:
        found = extra.get_extra_links(dag_id, run_id, task_id).extra_links
        assert found.get(name), f"{dag_id} {run_id} {task_id}: no {name!r} link in {found}"
        return found[name]

    def etl_run(day: dt.date) -> str:
        logical = midnight(day)
        return next(r.dag_run_id for r in runs[ETL] if r.logical_date == logical)

    night = NIGHTS[-1]
    monitoring_run = next(
        r.dag_run_id for r in runs[MONITORING] if r.logical_date == midnight(night)
    )
    docs = link(ETL, etl_run(night), "validate_batch", "Data Docs")
    report = link(MONITORING, monitoring_run, "report_drift", "Drift report")
    assert docs == f"/driftline/data-docs/{USECASE}/{night}"
    assert report == f"/driftline/reports/{USECASE}/{night}/drift"
    mlflow_run = link(TRAINING, TRAIN_RUN, "register_model", "MLflow run")
    assert mlflow_run.startswith(f"{mlflow_url}/#/experiments/")
    assert mlflow_run.endswith(f"/runs/{champion.run_id}")
    with httpx.Client(base_url=airflow_url, timeout=60) as http:
        for page in (docs, report):
            answer = http.get(page, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, (page, answer.status_code, answer.text[:500])
            assert "<html" in answer.text[:2000].lower(), page
            # the page runs sandboxed: its scripts get no access to Airflow's origin
            assert answer.headers["content-security-policy"].startswith("sandbox"), page
            assert http.get(page).status_code == 401, f"{page} is served without a login"

    timings["total"] = time.monotonic() - began
    print(
        "production mode timings (s): setup",
        {k: round(v) for k, v in SETUP.items()},
        "then since the stack was up",
        {k: round(v) for k, v in timings.items()},
    )


# --- who reads and rolls back through the driftline pages, by FAB role --------------------

FAB_USERS = """\
import sys
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    reader = sm.find_role("flights_reader") or sm.add_role("flights_reader")
    for dag_id in ("flights_etl", "flights_training", "flights_monitoring"):
        sm.add_permission_to_role(reader, sm.create_permission("can_read", f"DAG:{dag_id}"))
    for name, role in (("reader", reader), ("viewer", sm.find_role("Viewer"))):
        if sm.find_user(username=name) is None:
            assert sm.add_user(name, name, "User", f"{name}@driftline.invalid", role, sys.argv[1])
"""


def test_driftline_pages_and_rollback_follow_fab_roles(production_stack):
    """Three FAB users on the production profile: the Admin reads every use-case's pages and
    may roll back; a Viewer reads them all but may not roll back; a user whose role reads
    only flights' DAGs reads flights' pages, gets 403 on another use-case's report, Data Docs
    and history, sees no rollback and may not post one. A paused training DAG with a queued
    run is said on the champion page."""
    home, env = production_stack
    state = stack_state(home)
    airflow_url = state["urls"]["airflow"]
    # a second use-case the plugin knows (starting in 2099: no run, whatever is parsed)
    config = yaml.safe_load((Path(env["DRIFTLINE_USECASES_DIR"]) / "flights.yaml").read_text())
    config.update(name="taxis", start_date="2099-01-01", end_date="2099-01-02")
    (Path(env["DRIFTLINE_USECASES_DIR"]) / "taxis.yaml").write_text(yaml.safe_dump(config))
    night = NIGHTS[0]
    for usecase in (USECASE, "taxis"):
        folder = Path(env["DRIFTLINE_HOME"]) / "reports" / usecase / night.isoformat()
        folder.mkdir(parents=True, exist_ok=True)  # flights': the nights test's own report
        if not (folder / "drift.html").exists():
            (folder / "drift.html").write_text(f"<html>{usecase} drift</html>")

    api = AirflowApi(
        airflow_url, state["login"]["airflow"]["user"], state["login"]["airflow"]["password"]
    )
    api.wait_for_dags({ETL, TRAINING, MONITORING})
    password = uuid.uuid4().hex
    made = subprocess.run(
        [sys.executable, "-c", FAB_USERS, password],
        env={
            **env,
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
            ),
            "AIRFLOW__FAB__CONFIG_FILE": str(home / "stack" / "webserver_config.py"),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    # flights_training paused with a run waiting: the page must say so
    from airflow_client.client.api.dag_api import DAGApi
    from airflow_client.client.models.dag_patch_body import DAGPatchBody

    DAGApi(api.client).patch_dag(TRAINING, DAGPatchBody(is_paused=True))
    api.trigger(TRAINING, {"window_end": WINDOW_END.isoformat(), "reason": "waits"})

    def bearer(user: str, secret: str) -> dict[str, str]:
        answer = httpx.post(
            f"{airflow_url}/auth/token", json={"username": user, "password": secret}, timeout=60
        )
        assert answer.status_code in (200, 201), answer.text[:500]
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    admin = bearer(state["login"]["airflow"]["user"], state["login"]["airflow"]["password"])
    viewer, reader = bearer("viewer", password), bearer("reader", password)
    pages = {
        "flights report": f"/driftline/reports/{USECASE}/{night}/drift",
        "taxis report": f"/driftline/reports/taxis/{night}/drift",
        "taxis history": "/driftline/history/taxis",
        "taxis Data Docs": f"/driftline/data-docs/taxis/{night}",
        "flights history": f"/driftline/history/{USECASE}",
        "flights champion": f"/driftline/champion/{USECASE}",
    }
    expected = {  # status per user and page (Data Docs of a day never validated: 404)
        "admin": [200, 200, 200, 404, 200, 200],
        "viewer": [200, 200, 200, 404, 200, 200],
        "reader": [200, 403, 403, 403, 200, 200],
    }
    with httpx.Client(base_url=airflow_url, timeout=120) as http:
        seen = {
            user: [http.get(url, headers=headers).status_code for url in pages.values()]
            for user, headers in (("admin", admin), ("viewer", viewer), ("reader", reader))
        }
        assert seen == expected, seen
        refused = http.get(pages["taxis report"], headers=reader)
        assert "taxis_etl" in refused.json()["detail"], refused.text
        served = http.get(pages["flights report"], headers=reader)
        report = Path(env["DRIFTLINE_HOME"]) / "reports" / USECASE / night.isoformat()
        assert served.text == (report / "drift.html").read_text()
        # the nav entry opens on the one use-case the reader may read
        index = http.get("/driftline/history", headers=reader, follow_redirects=False)
        assert index.status_code == 303, index.text[:300]
        assert index.headers["location"].endswith(f"/driftline/history/{USECASE}")

        champion = {u: http.get(pages["flights champion"], headers=h).text
                    for u, h in (("admin", admin), ("viewer", viewer), ("reader", reader))}
        assert "Rolling back needs edit access" not in champion["admin"]
        # one version (the nights test's champion): nothing earlier to go back to
        assert "Nothing to roll back to" in champion["admin"]
        for user in ("viewer", "reader"):
            assert "Rolling back needs edit access" in champion[user], user
            assert "<form" not in champion[user], user
        assert f"{TRAINING} is paused with 1 queued run(s)" in champion["admin"]
        rollback = f"/driftline/champion/{USECASE}/rollback"
        for user, headers in (("viewer", viewer), ("reader", reader)):
            answer = http.post(rollback, data={"reason": "not mine"}, headers=headers)
            assert answer.status_code == 403, (user, answer.text[:300])
        # the admin gets through to the registry, which has nothing to roll back to
        answer = http.post(rollback, data={"reason": "try"}, headers=admin)
        assert answer.status_code == 409 and "previous" in answer.json()["detail"], answer.text
