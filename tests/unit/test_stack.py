"""The stack launcher's promises that need no running Airflow: generated secrets, one
configuration per profile, clear refusals, and a `down` that stops exactly its own processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from driftline import stack


def test_credentials_are_generated_private_and_kept(settings):
    first = stack.credentials(settings)
    assert len(first["jwt_secret"]) >= 64 and first["airflow_password"] != first["mlflow_password"]
    path = stack.stack_dir(settings) / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack.credentials(settings) == first  # a restart keeps logins and sessions valid


def test_local_and_production_profiles_differ_only_where_they_must(settings):
    secret = stack.credentials(settings)
    ports = stack.Ports.from_env(
        {
            "DRIFTLINE_AIRFLOW_PORT": "18080",
            "DRIFTLINE_MLFLOW_PORT": "15000",
            "DRIFTLINE_WORKER_LOG_PORT": "18793",
        }
    )
    assert (ports.evidently, ports.trigger_log) == (8000, 8794)  # the defaults
    local = stack.environment(settings, ports, secret, "id", None, {})
    assert local["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18793"
    assert local["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "8794"
    assert local["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert "MLFLOW_TRACKING_URI" not in local  # tasks write the embedded store directly
    assert local["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18080"
    assert local["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"

    env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://postgres@127.0.0.1/af",
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/7",
        "DRIFTLINE_MLFLOW_BACKEND_STORE_URI": "postgresql://postgres@127.0.0.1/ml",
    }
    production = stack.Production.from_env(env, settings.home)
    prod = stack.environment(settings, ports, secret, "id", production, env)
    assert prod["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert prod["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql://postgres@127.0.0.1/af"
    assert prod["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
    same = {k for k in local if k not in prod or local[k] == prod[k]}
    assert same >= {
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__PLUGINS_FOLDER",
    }
    # the development auth manager on the local profile only; production logs in through FAB
    assert local["AIRFLOW__CORE__AUTH_MANAGER"] == stack.SIMPLE_AUTH_MANAGER
    assert prod["AIRFLOW__CORE__AUTH_MANAGER"] == stack.FAB_AUTH_MANAGER
    assert not [key for key in prod if "SIMPLE_AUTH_MANAGER" in key]
    assert prod["AIRFLOW__FAB__CONFIG_FILE"].startswith(str(stack.stack_dir(settings)))
    names = [s.name for s in stack.services(settings, ports, production)]
    assert "celery-worker" in names
    assert "celery-worker" not in [s.name for s in stack.services(settings, ports, None)]


def test_the_processes_that_fork_tasks_start_warm_and_run_airflow_itself(settings, tmp_path):
    ports = stack.Ports.from_env({})
    env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://postgres@127.0.0.1/af",
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/7",
        "DRIFTLINE_MLFLOW_BACKEND_STORE_URI": "postgresql://postgres@127.0.0.1/ml",
    }
    production = stack.Production.from_env(env, settings.home)
    local = {s.name: s.argv for s in stack.services(settings, ports, None)}
    celery = {s.name: s.argv for s in stack.services(settings, ports, production)}
    warm = [sys.executable, "-m", "driftline.warm_start"]
    assert local["scheduler"] == [*warm, "scheduler"]  # LocalExecutor forks tasks from it
    assert celery["celery-worker"][:4] == [*warm, "celery"]  # the worker does, with Celery
    assert celery["scheduler"][0].endswith("/airflow")  # ... and the scheduler does not
    assert local["dag-processor"][0].endswith("/airflow")  # parses DAG files: stays light

    done = subprocess.run(
        [*warm, "version"],
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("3.")  # Airflow's own CLI answered
    assert "task libraries imported in" in done.stderr


def test_production_profile_names_what_is_missing(settings):
    with pytest.raises(stack.StackError, match="AIRFLOW__CELERY__BROKER_URL"):
        stack.Production.from_env(
            {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://x"}, settings.home
        )


def test_down_stops_its_own_processes_and_their_escaped_children_only(settings):
    stack_id = "test" + os.urandom(4).hex()
    env = {**os.environ, stack.STACK_ID_ENV: stack_id}
    # a service whose child leaves its process group (a session of its own) and hides the
    # stack id, as Airflow's api-server and Celery's worker do (setproctitle overwrites the
    # environment /proc shows): only the tree taken before any signal leads to it
    escaping = (
        "import os, subprocess, sys, time;"
        f"env = {{k: v for k, v in os.environ.items() if k != '{stack.STACK_ID_ENV}'}};"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
        " start_new_session=True, env=env);"
        "print(child.pid, flush=True); time.sleep(300)"
    )
    ours = [
        subprocess.Popen(
            [sys.executable, "-c", escaping],
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(["sleep", "300"], env=env, start_new_session=True),
    ]
    hidden = int(ours[0].stdout.readline())
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        started = {name: stack._start_time(p.pid) for name, p in zip("ab", ours, strict=True)}
        state = stack.StackState(
            stack_id,
            "local",
            str(settings.home),
            {},
            {},
            {"a": ours[0].pid, "b": ours[1].pid},
            started,
        )
        state.save(stack.state_path(settings))
        assert hidden not in list(stack.stack_processes(stack_id))  # the marker cannot see it
        assert set(stack.members(state)) == {ours[0].pid, ours[1].pid, hidden}

        assert stack.down(settings, grace=5) == ["a", "b"]
        for process in ours:
            process.wait(timeout=5)
        assert stack._start_time(hidden) is None  # the hidden child is gone too
        assert bystander.poll() is None  # not ours: untouched
        assert not stack.state_path(settings).exists()
        assert stack.down(settings) == []
    finally:
        bystander.kill()
        if stack._start_time(hidden) is not None:
            os.kill(hidden, 9)
        for process in ours:
            process.kill()


def test_a_second_up_is_refused_while_one_runs(settings):
    marked = {**os.environ, stack.STACK_ID_ENV: "x"}
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True, env=marked)
    try:
        stack.StackState(
            "x", "local", str(settings.home), {}, {}, {"api-server": sleeper.pid}
        ).save(stack.state_path(settings))
        with pytest.raises(stack.StackError, match="already running"):
            stack.up(settings)
        assert (
            json.loads(stack.state_path(settings).read_text())["pids"]["api-server"] == sleeper.pid
        )
    finally:
        sleeper.kill()


def test_a_stale_state_never_signals_a_process_that_is_not_the_stacks(settings):
    """After a reboot the recorded pids may belong to anyone: `down` checks the stack id."""
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        stack.StackState(
            "gone", "local", str(settings.home), {}, {}, {"api-server": stranger.pid}
        ).save(stack.state_path(settings))
        assert stack.down(settings, grace=1) == ["api-server"]
        assert stranger.poll() is None  # still running
        assert not stack.state_path(settings).exists()
    finally:
        stranger.kill()


def test_what_a_crashed_service_left_in_its_session_is_found_and_stopped(settings):
    """LocalExecutor's workers outlive a SIGKILLed scheduler: reparented, retitled, still in
    the scheduler's session. `members` finds them by that session; `down` stops them."""
    stack_id = "test" + os.urandom(4).hex()
    leaving = (
        "import os, subprocess, sys, time;"
        f"env = {{k: v for k, v in os.environ.items() if k != '{stack.STACK_ID_ENV}'}};"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], env=env);"
        "print(child.pid, flush=True); time.sleep(300)"
    )
    service = subprocess.Popen(
        [sys.executable, "-c", leaving],
        env={**os.environ, stack.STACK_ID_ENV: stack_id},
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    orphan = int(service.stdout.readline())
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        state = stack.StackState(
            stack_id,
            "local",
            str(settings.home),
            {},
            {},
            {"scheduler": service.pid},
            {"scheduler": stack._start_time(service.pid)},
        )
        state.save(stack.state_path(settings))
        service.kill()  # the crash
        service.wait(timeout=5)
        assert stack._start_time(orphan) is not None  # left behind, no marker, no parent
        assert set(stack.members(state, ["scheduler"])) == {orphan}
        assert set(stack.members(state)) == {orphan}

        assert stack.down(settings, grace=5) == ["scheduler"]
        assert stack._start_time(orphan) is None
        assert bystander.poll() is None
    finally:
        bystander.kill()
        if stack._start_time(orphan) is not None:
            os.kill(orphan, 9)
        service.stdout.close()
