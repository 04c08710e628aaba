"""The stack launcher's promises that need no running Airflow: generated secrets, one
configuration per profile, clear refusals, and, on a stack of cheap fake services under a real
supervisord, a crashed service restarted and a `down` that stops exactly its own processes."""

from __future__ import annotations

import configparser
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from driftline.operator import stack


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


def test_the_supervisord_config_restarts_and_stops_each_service_with_its_group(settings):
    ports = stack.Ports.from_env({})
    planned = stack.services(settings, ports, None)
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(stack.supervisord_config(settings, planned))
    programs = [name.split(":", 1)[1] for name in ini if name.startswith("program:")]
    assert programs == [service.name for service in planned]
    assert ini[f"group:{stack.GROUP}"]["programs"].split(",") == programs
    for name in programs:
        program = ini[f"program:{name}"]
        assert program["autorestart"] == "true"
        assert program["stopasgroup"] == program["killasgroup"] == "true"
        assert int(program["stopwaitsecs"]) == stack.STOP_WAIT
        assert program["stdout_logfile"] == str(stack.stack_dir(settings) / "logs" / f"{name}.log")
    assert ini["unix_http_server"]["file"] == str(stack.socket_path(settings))
    assert ini["unix_http_server"]["chmod"] == "0700"
    assert ini["supervisord"]["pidfile"].startswith(str(stack.stack_dir(settings)))
    # the services inherit supervisord's environment: no secret is written into the config
    text = stack.supervisord_config(settings, planned)
    assert not [value for value in stack.credentials(settings).values() if value in text]


def test_describe_names_the_users_and_the_file_with_the_passwords_not_the_passwords(settings):
    secret = stack.credentials(settings)
    state = stack.StackState(
        "id",
        "local",
        str(settings.home),
        {
            name: f"http://127.0.0.1:{port}"
            for name, port in [("airflow", 1), ("mlflow", 2), ("evidently", 3), ("scoring", 4)]
        },
        {
            "airflow": {"user": "admin", "password": secret["airflow_password"]},
            "mlflow": {"user": "admin", "password": secret["mlflow_password"]},
        },
    )
    printed = stack.describe(state)
    assert secret["airflow_password"] not in printed
    assert secret["mlflow_password"] not in printed
    assert str(stack.stack_dir(settings) / "secrets.json") in printed
    assert "login: admin" in printed
    assert "Alerts" not in printed
    assert "Alerts: on (email)" in stack.describe(state, alerts="on (email)")


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# A service whose child leaves its process group and session and hides the stack id, as
# Airflow's api-server and Celery's worker do (setproctitle overwrites the environment /proc
# shows): supervisord's group kill does not reach it, only the tree taken before `down` does.
ESCAPING = (
    "import os, subprocess, sys, time;"
    f"env = {{k: v for k, v in os.environ.items() if k != '{stack.STACK_ID_ENV}'}};"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
    " start_new_session=True, env=env);"
    "print('child', child.pid, flush=True); time.sleep(300)"
)
# A service whose child stays in its group, without the stack id: what LocalExecutor's workers
# are to the scheduler. Killed alone, the service leaves it behind (reparented, same session).
LEAVING = ESCAPING.replace(" start_new_session=True,", "")


def child_pid(settings, service: str, timeout: float = 10) -> int:
    """The pid the fake service printed last (a restarted one prints its new child's)."""
    log = stack.stack_dir(settings) / "logs" / f"{service}.log"
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in log.read_text().splitlines() if line.startswith("child ")]
        if lines:
            return int(lines[-1].split()[1])
        assert time.monotonic() < deadline, f"{service} printed no child: {log.read_text()}"
        time.sleep(0.1)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        time.sleep(0.1)


@pytest.fixture
def fake_stack(settings) -> Iterator[Callable[[list[stack.Service]], stack.StackState]]:
    """Start cheap fake services under the stack's supervisord; `down` at the end whatever
    happened."""

    def start(planned: list[stack.Service]) -> stack.StackState:
        stack_id = "test" + os.urandom(4).hex()
        state = stack.StackState(stack_id, "local", str(settings.home), {}, {})
        env = {**os.environ, stack.STACK_ID_ENV: stack_id}
        return stack.start(settings, planned, env, state, timeout=30)

    yield start
    stack.down(settings, grace=5)


def test_a_crashed_service_is_restarted_by_supervisord(settings, fake_stack):
    state = fake_stack(
        [
            stack.Service("a", ["sleep", "300"], startsecs=1),
            stack.Service("b", ["sleep", "300"], startsecs=1),
        ]
    )
    assert sorted(state.pids) == ["a", "b"]
    before = {s.name: s for s in stack.status(settings)}
    assert {s.state for s in before.values()} == {"RUNNING"}
    os.kill(before["b"].pid, signal.SIGKILL)  # the crash

    def restarted() -> bool:
        now = {s.name: s for s in stack.status(settings)}
        return now["b"].state == "RUNNING" and now["b"].pid not in (0, before["b"].pid)

    began = time.monotonic()
    wait_until(restarted, "restarted", timeout=10)
    assert time.monotonic() - began < 5
    assert {s.name: s.pid for s in stack.status(settings)}["a"] == before["a"].pid  # untouched

    # and on demand: `driftline stack restart b` gives it a new pid, recorded in state.json
    crashed_again = {s.name: s.pid for s in stack.status(settings)}["b"]
    stack.restart(settings, "b", timeout=30)
    recorded = json.loads(stack.state_path(settings).read_text())["pids"]
    assert recorded["b"] == {s.name: s.pid for s in stack.status(settings)}["b"] != crashed_again
    with pytest.raises(stack.StackError, match="no service 'c'"):
        stack.restart(settings, "c")


def test_down_stops_its_own_processes_and_their_escaped_children_only(settings, fake_stack):
    state = fake_stack(
        [
            stack.Service("a", python(ESCAPING), startsecs=1),
            stack.Service("b", ["sleep", "300"], startsecs=1),
        ]
    )
    hidden = child_pid(settings, "a")
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        assert hidden not in list(stack.stack_processes(state.stack_id))  # the marker cannot see it
        services = {s.pid for s in stack.status(settings)}
        assert services | {hidden, state.supervisord} <= set(stack.members(state))
        assert bystander.pid not in stack.members(state)

        assert stack.down(settings, grace=5) == ["a", "b"]
        assert stack.still_running(stack.members(state)) == []
        assert stack._start_time(hidden) is None  # the escaped child is gone too
        assert stack._start_time(state.supervisord) is None
        assert bystander.poll() is None  # not ours: untouched
        assert not stack.state_path(settings).exists()
        assert not stack.socket_path(settings).exists()
        assert stack.down(settings) == []
    finally:
        bystander.kill()
        if stack._start_time(hidden) is not None:
            os.kill(hidden, signal.SIGKILL)


def test_what_a_crashed_service_left_behind_is_stopped_as_it_restarts(settings, fake_stack):
    """LocalExecutor's workers outlive a SIGKILLed scheduler: reparented, retitled, still in
    supervisord's session. The reaper (supervisord's event listener) stops them while
    supervisord starts the service again; `restart` and `down` would find them too."""
    state = fake_stack([stack.Service("scheduler", python(LEAVING), startsecs=1)])
    orphan = child_pid(settings, "scheduler")
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        assert orphan in stack.members(state) and stack._left_behind(state) == {}
        (service,) = stack.status(settings)
        os.kill(service.pid, signal.SIGKILL)  # the crash
        wait_until(lambda: stack._start_time(orphan) is None, "stopped", timeout=10)
        wait_until(lambda: child_pid(settings, "scheduler") != orphan, "restarted")
        assert stack.status(settings)[0].state in ("STARTING", "RUNNING")
        reaper_log = stack.stack_dir(settings) / "logs" / "reaper.log"
        wait_until(lambda: "stopped what it left" in reaper_log.read_text(), "logged")
        assert bystander.poll() is None
    finally:
        bystander.kill()
        if stack._start_time(orphan) is not None:
            os.kill(orphan, signal.SIGKILL)


def test_what_a_crashed_service_left_in_its_session_is_found_and_stopped(settings, fake_stack):
    """Without the reaper, `restart` finds what a crash left by supervisord's session."""
    state = fake_stack([stack.Service("scheduler", python(LEAVING), startsecs=1)])
    orphan = child_pid(settings, "scheduler")
    try:
        stack._supervisor(settings).stopProcess("reaper:reaper", True)
        (service,) = stack.status(settings)
        os.kill(service.pid, signal.SIGKILL)  # the crash
        wait_until(lambda: child_pid(settings, "scheduler") != orphan, "restarted")
        assert stack._start_time(orphan) is not None  # left behind, no marker, no parent
        assert set(stack._left_behind(state)) == {orphan}

        stack.restart(settings, "scheduler", timeout=30)
        assert stack._start_time(orphan) is None
    finally:
        if stack._start_time(orphan) is not None:
            os.kill(orphan, signal.SIGKILL)


def test_a_second_up_is_refused_while_one_runs(settings, fake_stack):
    state = fake_stack([stack.Service("a", ["sleep", "300"], startsecs=1)])
    with pytest.raises(stack.StackError, match="already running"):
        stack.up(settings)
    assert json.loads(stack.state_path(settings).read_text())["supervisord"] == state.supervisord
    stack.state_path(settings).unlink()  # even without its record, its socket still answers
    with pytest.raises(stack.StackError, match="supervisord answers"):
        stack.up(settings)
    state.save(stack.state_path(settings))


def test_a_service_that_cannot_start_fails_up_with_its_log(settings):
    state = stack.StackState("test" + os.urandom(4).hex(), "local", str(settings.home), {}, {})
    env = {**os.environ, stack.STACK_ID_ENV: state.stack_id}
    broken = stack.Service("broken", python("print('no config here'); raise SystemExit(3)"))
    with pytest.raises(stack.StackError, match="broken exited during start-up") as raised:
        stack.start(settings, [broken], env, state, timeout=30)
    assert "no config here" in str(raised.value)
    assert not stack.state_path(settings).exists()  # stopped again
    assert not stack.socket_path(settings).exists()


def test_a_stale_state_never_signals_a_process_that_is_not_the_stacks(settings):
    """After a reboot the recorded pids may belong to anyone: `down` checks start times."""
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        stack.StackState(
            "gone",
            "local",
            str(settings.home),
            {},
            {},
            {"api-server": stranger.pid},
            supervisord=stranger.pid,
            supervisord_started=1,
        ).save(stack.state_path(settings))
        assert stack.down(settings, grace=1) == ["api-server"]
        assert stranger.poll() is None  # still running
        assert not stack.state_path(settings).exists()
    finally:
        stranger.kill()
