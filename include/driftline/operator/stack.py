"""The operator's stack on one machine: Airflow's four processes, the MLflow UI, the Evidently
UI and the scoring server, run by a supervisord of the stack's own.

`make up` / `make down` call `up` and `down` here. driftline keeps its own part: each service's
command and environment (two profiles, ports, generated credentials), the one-time steps
(`airflow db migrate`, the admin user) and the health waits. supervisord (its config generated
into `$DRIFTLINE_HOME/stack/supervisord.conf`, driven over the unix socket beside it) starts the
services, restarts one that crashes and stops each with its whole process group. Every process
carries the stack id in its environment: `down` sweeps what escaped its group (a safety net, not
the mechanism). Credentials are generated on the first `up`, kept in
`$DRIFTLINE_HOME/stack/secrets.json` (mode 0600) and reused; login is required by Airflow and
MLflow.

Two profiles, one code path: the embedded default (LocalExecutor, SQLite, local files) and
`production` (metadata DB, Celery broker and MLflow store taken from the environment, a
Celery worker, tasks logging to the MLflow server), as docker-compose.yaml runs it.
"""

from __future__ import annotations

import configparser
import io
import json
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from driftline.config import Settings, project_root
from driftline.operator import airflow_admin, links

STACK_ID_ENV = "DRIFTLINE_STACK_ID"
MLFLOW_UI_ENV = "DRIFTLINE_MLFLOW_UI_URL"
EVIDENTLY_UI_ENV = "DRIFTLINE_EVIDENTLY_UI_URL"
ADMIN = "admin"
VIEWER = "viewer"  # the local profile's read-only Airflow login
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
AIRFLOW_COMPONENTS = ("scheduler", "triggerer", "dag_processor")  # in the api-server's health
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
HOST = "127.0.0.1"
GROUP = "stack"  # supervisord's group of every service: a group is stopped all at once
STOP_WAIT = 30  # seconds a service has after SIGTERM before supervisord SIGKILLs its group
NOT_UP = {"BACKOFF", "EXITED", "FATAL", "STOPPED", "STOPPING", "UNKNOWN"}  # supervisord states
NOT_RUNNING = 70  # supervisor.xmlrpc.Faults.NOT_RUNNING

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """The stack could not be started (or stopped); the message says which service and why."""


@dataclass(frozen=True)
class Ports:
    """The stack's localhost ports; each is overridden by DRIFTLINE_<NAME>_PORT. The two log
    servers (worker, triggerer) serve task logs to the api-server: a second stack on the
    same machine needs other ports for them too."""

    airflow: int = 8080
    mlflow: int = 5000
    evidently: int = 8000
    scoring: int = 5001
    worker_log: int = 8793
    trigger_log: int = 8794

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        defaults = cls()
        return cls(
            **{
                name: int(env.get(f"DRIFTLINE_{name.upper()}_PORT", default))
                for name, default in asdict(defaults).items()
            }
        )


@dataclass(frozen=True)
class Production:
    """Where the production profile keeps its state: all read from the environment."""

    metadata_db: str  # AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
    broker_url: str  # AIRFLOW__CELERY__BROKER_URL
    result_backend: str  # AIRFLOW__CELERY__RESULT_BACKEND
    mlflow_backend: str  # DRIFTLINE_MLFLOW_BACKEND_STORE_URI
    mlflow_artifacts: str  # DRIFTLINE_MLFLOW_ARTIFACTS_DESTINATION (default: under the home)

    REQUIRED = {
        "metadata_db": "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "broker_url": "AIRFLOW__CELERY__BROKER_URL",
        "mlflow_backend": "DRIFTLINE_MLFLOW_BACKEND_STORE_URI",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str], home: Path) -> Production:
        missing = [name for name in cls.REQUIRED.values() if not env.get(name)]
        if missing:
            raise StackError(f"the production profile needs {', '.join(missing)} to be set")
        metadata_db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        return cls(
            metadata_db=metadata_db,
            broker_url=env["AIRFLOW__CELERY__BROKER_URL"],
            result_backend=env.get("AIRFLOW__CELERY__RESULT_BACKEND")
            or "db+" + metadata_db.replace("+psycopg2", ""),
            mlflow_backend=env["DRIFTLINE_MLFLOW_BACKEND_STORE_URI"],
            mlflow_artifacts=env.get("DRIFTLINE_MLFLOW_ARTIFACTS_DESTINATION")
            or str(home / "mlflow" / "served-artifacts"),
        )


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    health_url: str | None = None  # polled until it answers 2xx/3xx/401
    # seconds it must stay up to count as started: one that dies sooner is retried a few times,
    # then given up (FATAL) rather than restarted forever; Airflow imports for seconds
    startsecs: int = 10


@dataclass(frozen=True)
class ServiceStatus:
    """supervisord's view of one service: RUNNING, STARTING, BACKOFF, FATAL..."""

    name: str
    state: str
    pid: int
    description: str  # the uptime, or why it is not running


@dataclass
class StackState:
    """What `up` started: written to stack/state.json (mode 0600: it holds the logins), read by
    `down`, `restart`, `status` and by tests."""

    stack_id: str
    profile: str
    home: str
    urls: dict[str, str]
    login: dict[str, dict[str, str]]
    pids: dict[str, int] = field(default_factory=dict)  # as supervisord last reported them
    health: dict[str, str | None] = field(default_factory=dict)  # service -> its health URL
    supervisord: int = 0  # its pid, and its start time (/proc/<pid>/stat, clock ticks since
    supervisord_started: int = 0  # boot): the pid is this stack's only while the two match

    def save(self, path: Path) -> None:
        _write_private(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> StackState:
        known = {f.name for f in fields(cls)}  # a state written by an older driftline loads too
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


def stack_dir(settings: Settings) -> Path:
    return settings.home / "stack"


def state_path(settings: Settings) -> Path:
    return stack_dir(settings) / "state.json"


def config_path(settings: Settings) -> Path:
    return stack_dir(settings) / "supervisord.conf"


def socket_path(settings: Settings) -> Path:
    return stack_dir(settings) / "supervisor.sock"


def credentials(settings: Settings) -> dict[str, str]:
    """The stack's secrets: generated once, then reused (a restart keeps sessions valid)."""
    from cryptography.fernet import Fernet

    path = stack_dir(settings) / "secrets.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    makers = {
        "airflow_password": lambda: secrets.token_urlsafe(16),
        "airflow_viewer_password": lambda: secrets.token_urlsafe(16),
        "mlflow_password": lambda: secrets.token_urlsafe(16),
        "jwt_secret": lambda: secrets.token_urlsafe(64),
        "api_secret_key": lambda: secrets.token_urlsafe(32),
        "mlflow_secret_key": lambda: secrets.token_urlsafe(32),
        "fernet_key": lambda: Fernet.generate_key().decode(),
    }
    if set(makers) - set(kept):
        kept = {name: kept.get(name) or make() for name, make in makers.items()}
        _write_private(path, json.dumps(kept, indent=2))
    return kept


def environment(
    settings: Settings,
    ports: Ports,
    secret: Mapping[str, str],
    stack_id: str,
    production: Production | None,
    base: Mapping[str, str],
) -> dict[str, str]:
    """The environment every service of the stack shares (Airflow's config is all here)."""
    root = project_root()
    stack = stack_dir(settings)
    airflow_url = f"http://{HOST}:{ports.airflow}"
    mlflow_url = f"http://{HOST}:{ports.mlflow}"
    env = dict(base)
    env.update(
        {
            STACK_ID_ENV: stack_id,
            "DRIFTLINE_HOME": str(settings.home),
            "AIRFLOW_HOME": env.get("AIRFLOW_HOME") or str(settings.home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": secret["fernet_key"],
            "AIRFLOW__API__BASE_URL": airflow_url,
            "AIRFLOW__API__PORT": str(ports.airflow),
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports.worker_log),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports.trigger_log),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secret["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": secret["api_secret_key"],
            "MLFLOW_AUTH_CONFIG_PATH": str(stack / "mlflow-auth.ini"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secret["mlflow_secret_key"],
            # MLflow's GenAI job runner (huey consumers): driftline runs no MLflow jobs
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            MLFLOW_UI_ENV: mlflow_url,
            EVIDENTLY_UI_ENV: f"http://{HOST}:{ports.evidently}",
            links.SCORING_ENV: f"http://{HOST}:{ports.scoring}",  # the champion page asks it
            "GX_ANALYTICS_ENABLED": "False",
            "DO_NOT_TRACK": "1",
            "DVC_NO_ANALYTICS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    if production is None:
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                # Airflow's development auth manager (its default): one user, its password in
                # a private file, login required whatever the caller's shell exports
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                # a read-only login beside the admin: reads every page, rolls nothing back
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin,{VIEWER}:viewer",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                    stack / "airflow-passwords.json"
                ),
            }
        )
    else:
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                # as the compose stack: FAB's users in the metadata database, the admin
                # created by driftline.operator.airflow_admin after `airflow db migrate`
                "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
                "AIRFLOW__FAB__CONFIG_FILE": str(stack / "webserver_config.py"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": production.metadata_db,
                "AIRFLOW__CELERY__BROKER_URL": production.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": production.result_backend,
                # read by `mlflow server` from here, not argv: `ps` would show its password
                "MLFLOW_BACKEND_STORE_URI": production.mlflow_backend,
                # tasks log through the tracking server, as the compose stack's workers do
                "MLFLOW_TRACKING_URI": mlflow_url,
                "MLFLOW_TRACKING_USERNAME": ADMIN,
                "MLFLOW_TRACKING_PASSWORD": secret["mlflow_password"],
            }
        )
    return env


def services(settings: Settings, ports: Ports, production: Production | None) -> list[Service]:
    bin_dir = Path(sys.executable).parent
    airflow = str(bin_dir / "airflow")
    warm = [sys.executable, "-m", "driftline.warm_start"]
    airflow_url = f"http://{HOST}:{ports.airflow}"
    if production is None:
        store = [
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--default-artifact-root",
            settings.mlflow_artifact_root,
        ]
    else:
        store = [  # the backend store URI comes from the environment (MLFLOW_BACKEND_STORE_URI)
            "--artifacts-destination",
            production.mlflow_artifacts,
        ]
    planned = [
        Service(
            "api-server",
            [airflow, "api-server", "--host", HOST, "--port", str(ports.airflow)],
            f"{airflow_url}/api/v2/monitor/health",
        ),
        # LocalExecutor forks every task from the scheduler: start it warm (driftline.warm_start)
        Service("scheduler", [*(warm if production is None else [airflow]), "scheduler"]),
        Service("dag-processor", [airflow, "dag-processor"]),
        Service("triggerer", [airflow, "triggerer"]),
        Service(
            "mlflow",
            [
                str(bin_dir / "mlflow"),
                "server",
                *store,
                "--app-name",
                "basic-auth",
                "--host",
                HOST,
                "--port",
                str(ports.mlflow),
                "--workers",
                "1",
            ],
            f"http://{HOST}:{ports.mlflow}/health",
        ),
        Service(
            "evidently",
            [
                str(bin_dir / "evidently"),
                "ui",
                "--workspace",
                str(settings.evidently_workspace),
                "--host",
                HOST,
                "--port",
                str(ports.evidently),
            ],
            f"http://{HOST}:{ports.evidently}/",
        ),
        # the champion over REST (driftline.serving.server), answering with the version it is
        Service(
            "scoring",
            [str(bin_dir / "driftline"), "serve", "--host", HOST, "--port", str(ports.scoring)],
            f"http://{HOST}:{ports.scoring}/health",
        ),
    ]
    if production is not None:
        planned.append(Service("celery-worker", [*warm, "celery", "worker", "--concurrency", "2"]))
    return planned


def up(
    settings: Settings,
    ports: Ports | None = None,
    production: bool = False,
    base_env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
) -> StackState:
    """Prepare the stack (secrets, files, `airflow db migrate`, the admin), then `start` it."""
    base_env = dict(os.environ if base_env is None else base_env)
    ports = ports or Ports.from_env(base_env)
    _refuse_if_running(settings)
    for name, port in asdict(ports).items():
        if not _port_free(port):
            raise StackError(f"port {port} for {name} is taken: set DRIFTLINE_{name.upper()}_PORT")

    prod = Production.from_env(base_env, settings.home) if production else None
    secret = credentials(settings)
    env = environment(settings, ports, secret, secrets.token_hex(8), prod, base_env)
    _prepare_files(settings, secret, prod)
    logs = stack_dir(settings) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _run_once(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env,
        logs / "db-migrate.log",
        "airflow db migrate",
    )
    if prod is not None:  # the password reaches it through the environment, not argv
        _run_once(
            [sys.executable, "-m", "driftline.operator.airflow_admin"],
            {
                **env,
                airflow_admin.USERNAME_ENV: ADMIN,
                airflow_admin.PASSWORD_ENV: secret["airflow_password"],
            },
            logs / "airflow-admin.log",
            "creating the Airflow admin",
        )
    state = StackState(
        stack_id=env[STACK_ID_ENV],
        profile="production" if prod else "local",
        home=str(settings.home),
        urls={
            "airflow": env["AIRFLOW__API__BASE_URL"],
            "mlflow": env[MLFLOW_UI_ENV],
            "evidently": env[EVIDENTLY_UI_ENV],
            "scoring": f"http://{HOST}:{ports.scoring}",
        },
        login={
            "airflow": {"user": ADMIN, "password": secret["airflow_password"]},
            "mlflow": {"user": ADMIN, "password": secret["mlflow_password"]},
            # the local profile's read-only login (production's users live in FAB)
            **(
                {"airflow_viewer": {"user": VIEWER, "password": secret["airflow_viewer_password"]}}
                if prod is None
                else {}
            ),
        },
    )
    return start(settings, services(settings, ports, prod), env, state, timeout)


def start(
    settings: Settings,
    planned: list[Service],
    env: Mapping[str, str],
    state: StackState,
    timeout: float = 180.0,
) -> StackState:
    """Run `planned` under a supervisord of the stack's own and wait until each is healthy. The
    services inherit its environment `env` (with the stack id): no secret in the config file or
    on a command line. On any failure the stack is stopped again and the error names the
    service and ends with the tail of its log."""
    _refuse_if_running(settings)
    logs = stack_dir(settings) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _write_private(config_path(settings), supervisord_config(settings, planned))
    daemon = subprocess.run(  # noqa: S603 - our own binary, argv list
        [str(Path(sys.executable).parent / "supervisord"), "-c", str(config_path(settings))],
        env=dict(env),
        cwd=settings.home,
        capture_output=True,
        text=True,
        check=False,
    )
    if daemon.returncode != 0:  # it reports a bad config or a taken socket before daemonizing
        raise StackError(
            f"supervisord did not start (exit {daemon.returncode}):\n{daemon.stdout}"
            f"{daemon.stderr}\n{_tail(logs / 'supervisord.log')}"
        )
    state.health = {service.name: service.health_url for service in planned}
    deadline = time.monotonic() + timeout
    try:
        state.supervisord = _wait_supervisord(settings, deadline)
        state.supervisord_started = _start_time(state.supervisord) or 0
        state.save(state_path(settings))  # from here `down` finds a half-started stack
        for service in planned:
            _wait_healthy(settings, service, deadline)
        if "api-server" in state.health:
            _wait_airflow_components(state.urls["airflow"], deadline, logs)
        state.pids = {service.name: service.pid for service in status(settings)}
        state.save(state_path(settings))
    except BaseException:
        down(settings)
        raise
    return state


def supervisord_config(settings: Settings, planned: list[Service]) -> str:
    """supervisord's INI: one program per service, all in one group (stopped together), each
    restarted when it exits and stopped (then killed) with its whole process group."""
    stack, logs = stack_dir(settings), stack_dir(settings) / "logs"
    ini = configparser.ConfigParser(interpolation=None)
    ini["unix_http_server"] = {"file": _ini(socket_path(settings)), "chmod": "0700"}
    ini["supervisord"] = {
        "logfile": _ini(logs / "supervisord.log"),
        "pidfile": _ini(stack / "supervisord.pid"),
        "directory": _ini(settings.home),
    }
    ini["rpcinterface:supervisor"] = {
        "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"
    }
    ini["supervisorctl"] = {"serverurl": "unix://" + _ini(socket_path(settings))}
    for service in planned:
        ini[f"program:{service.name}"] = {
            "command": _ini(shlex.join(service.argv)),
            "directory": _ini(settings.home),
            "autorestart": "true",
            "startsecs": str(service.startsecs),
            "stopwaitsecs": str(STOP_WAIT),
            "stopasgroup": "true",
            "killasgroup": "true",
            "redirect_stderr": "true",  # one log per service, in the order things happened
            "stdout_logfile": _ini(logs / f"{service.name}.log"),  # rotated at 50 MB
        }
    ini[f"group:{GROUP}"] = {"programs": ",".join(service.name for service in planned)}
    ini["eventlistener:reaper"] = {  # see `reap`
        "command": _ini(shlex.join([sys.executable, "-m", "driftline.operator.stack", str(stack)])),
        "events": "PROCESS_STATE_EXITED,PROCESS_STATE_BACKOFF",
        "autorestart": "true",
        "stderr_logfile": _ini(logs / "reaper.log"),
    }
    text = io.StringIO()
    ini.write(text)
    return text.getvalue()


def down(settings: Settings, grace: float = 30.0) -> list[str]:
    """Shut supervisord down (it stops every service with its process group), then stop what
    is left of the stack: children that left their group for a session of their own, what a
    crashed service left behind. The tree is taken before any signal: Airflow's api-server and
    Celery's worker retitle such children (setproctitle), which hides the stack id in
    /proc/<pid>/environ; once their parent is gone nothing else leads to them."""
    state_file = state_path(settings)
    if not state_file.exists():
        return []
    state = StackState.load(state_file)
    found = members(state)
    daemon = {state.supervisord: state.supervisord_started}
    if state.supervisord and still_running(daemon):
        try:
            _supervisor(settings).shutdown()
        except (OSError, xmlrpc.client.Error):
            _signal(state.supervisord, signal.SIGTERM)  # it stops its programs on SIGTERM too
        deadline = time.monotonic() + STOP_WAIT + 15
        while time.monotonic() < deadline and still_running(daemon):
            time.sleep(0.2)
    _stop(found, grace, again=lambda: members(state))
    state_file.unlink()
    return sorted(state.pids or state.health)


def restart(settings: Settings, name: str, timeout: float = 180.0) -> StackState:
    """Restart one service through supervisord (in the environment `up` gave it), with what a
    crashed service left behind stopped first, and wait until it is healthy again."""
    state = _running_state(settings)
    if name not in state.health:
        raise StackError(f"no service {name!r} in this stack: {sorted(state.health)}")
    daemon = _supervisor(settings)
    try:
        daemon.stopProcess(f"{GROUP}:{name}", True)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode != NOT_RUNNING:
            raise StackError(f"supervisord could not stop {name}: {fault.faultString}") from fault
    _stop(_left_behind(state), grace=10)
    daemon.startProcess(f"{GROUP}:{name}", False)
    deadline = time.monotonic() + timeout
    _wait_healthy(settings, Service(name, [], state.health[name], 0), deadline)
    if name in AIRFLOW_SERVICES and "api-server" in state.health:
        _wait_airflow_components(state.urls["airflow"], deadline, stack_dir(settings) / "logs")
    state.pids = {service.name: service.pid for service in status(settings)}
    state.save(state_path(settings))
    return state


def status(settings: Settings) -> list[ServiceStatus]:
    """supervisord's view of each service of the running stack."""
    _running_state(settings)
    try:
        infos = _supervisor(settings).getAllProcessInfo()
    except OSError as exc:
        raise StackError(f"supervisord does not answer on {socket_path(settings)}: {exc}") from exc
    return [
        ServiceStatus(info["name"], info["statename"], info["pid"], info["description"])
        for info in infos
        if info["group"] == GROUP  # not the reaper
    ]


def reap(stack: Path) -> None:
    """supervisord's event listener: a service that exits leaves its children behind
    (LocalExecutor's workers and their tasks outlive a crashed scheduler); stop them, as
    `restart` does, while supervisord starts the service again. stdout carries supervisord's
    protocol: the log goes to stderr."""
    from supervisor import childutils

    while True:
        headers, _ = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            if (stack / "state.json").exists():
                left = _left_behind(StackState.load(stack / "state.json"))
                _stop(left, grace=10)
                if left:
                    log.warning("%s: stopped what it left %s", headers["eventname"], sorted(left))
        except (StackError, OSError, ValueError):
            log.exception("%s: could not stop what it left", headers["eventname"])
        childutils.listener.ok(sys.stdout)


def members(state: StackState) -> dict[int, int]:
    """Every live process of the stack, pid -> start time: supervisord while its pid still
    names the process `up` started, its session (the services, and what a crashed one left:
    reparented, retitled, still in the session), whatever carries the stack id, and
    everything below those (children that left for a session of their own)."""
    table = _processes()
    roots = set(stack_processes(state.stack_id)) | set(_session(state, table))
    if state.supervisord and _start_time(state.supervisord) == state.supervisord_started:
        roots.add(state.supervisord)
    return {pid: table[pid][2] for pid in _tree(roots, table)}


def _left_behind(state: StackState) -> dict[int, int]:
    """What crashed services left in supervisord's session (LocalExecutor's workers outlive a
    SIGKILLed scheduler): members of the session no longer below supervisord."""
    table = _processes()
    below = _tree({state.supervisord}, table)
    left = _tree(set(_session(state, table)) - below, table) - below
    return {pid: table[pid][2] for pid in left}


def _session(state: StackState, table: dict[int, tuple[int, int, int]]) -> list[int]:
    """The processes in supervisord's session (its id is supervisord's pid: it calls setsid
    when it daemonizes) that started after it. A pid is not reused while its session has
    members, so unless the pid now names another process they are the stack's."""
    pid, started = state.supervisord, state.supervisord_started
    if not pid or _start_time(pid) not in (None, started):
        return []
    return [member for member, (_, sid, since) in table.items() if sid == pid and since >= started]


def _tree(roots: set[int], table: dict[int, tuple[int, int, int]]) -> set[int]:
    """`roots` and every live process below them."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found & table.keys()


def _stop(
    found: dict[int, int],
    grace: float = 30.0,
    again: Callable[[], dict[int, int]] | None = None,
) -> None:
    """SIGTERM `found` (pid -> start time), SIGKILL what is left after `grace` seconds, with
    what `again()` finds then (children started meanwhile)."""
    for pid in still_running(found):
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and still_running(found):
        time.sleep(0.5)
    if again is not None:
        found = {**found, **again()}
    for pid in still_running(found):
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and still_running(found):
        time.sleep(0.2)
    left = still_running(found)
    if left:
        raise StackError(f"processes survived SIGKILL: {left}")


def _refuse_if_running(settings: Settings) -> None:
    """One stack per home: refuse while anything of a recorded stack still runs (by start time
    and stack id, not by pid alone: pids are reused) or a supervisord answers on the socket."""
    state_file = state_path(settings)
    if state_file.exists():
        if members(StackState.load(state_file)):
            raise StackError(f"a stack is already running from {settings.home}: `make down` first")
        state_file.unlink()
    try:
        _supervisor(settings).getPID()
    except OSError:
        return
    raise StackError(f"a supervisord answers on {socket_path(settings)}: `make down` first")


def _running_state(settings: Settings) -> StackState:
    state_file = state_path(settings)
    if not state_file.exists():
        raise StackError(f"no stack is running from {settings.home}: `make up` first")
    return StackState.load(state_file)


def _supervisor(settings: Settings) -> Any:
    """supervisord's XML-RPC interface (`supervisor.*`) over the stack's unix socket."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{socket_path(settings)}")
    return xmlrpc.client.ServerProxy("http://localhost", transport=transport).supervisor


def _wait_supervisord(settings: Settings, deadline: float) -> int:
    """supervisord's pid, once it answers on its socket."""
    while True:
        try:
            return int(_supervisor(settings).getPID())
        except OSError as exc:
            if time.monotonic() > deadline:
                raise StackError(
                    f"supervisord does not answer on {socket_path(settings)}: {exc}\n"
                    f"{_tail(stack_dir(settings) / 'logs' / 'supervisord.log')}"
                ) from exc
            time.sleep(0.2)


def _wait_healthy(settings: Settings, service: Service, deadline: float) -> None:
    """Until the service answers its health URL (without one: until supervisord counts it as
    started). One that exits meanwhile fails the start at once, though supervisord would
    restart it: a service that cannot start says why in its log."""
    log = stack_dir(settings) / "logs" / f"{service.name}.log"
    first_pid = 0
    while True:
        info = _supervisor(settings).getProcessInfo(f"{GROUP}:{service.name}")
        first_pid = first_pid or info["pid"]
        not_yet = info["statename"] == "STOPPED" and not first_pid  # before its autostart
        if (info["statename"] in NOT_UP and not not_yet) or info["pid"] not in (0, first_pid):
            raise StackError(
                f"{service.name} exited during start-up ({info['statename']}: "
                f"{info['spawnerr'] or info['description']}):\n{_tail(log)}"
            )
        if service.health_url is not None and _answers(service.health_url):
            return
        if service.health_url is None and info["statename"] == "RUNNING":
            return
        if time.monotonic() > deadline:
            raise StackError(
                f"{service.name} not healthy at {service.health_url} ({info['statename']}):\n"
                f"{_tail(log)}"
            )
        time.sleep(0.5)


def still_running(found: dict[int, int]) -> list[int]:
    return [pid for pid, started in found.items() if _start_time(pid) == started]


def _processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, session id, start time) of every live process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                table[int(entry.name)] = (int(fields[1]), int(fields[3]), int(fields[19]))
    return table


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name; None for a gone or zombie one."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] == "Z" else fields


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def stack_processes(stack_id: str) -> Iterator[int]:
    """Every live process whose environment carries `stack_id` (zombies excluded); a process
    that retitled itself (setproctitle) no longer shows its environment here."""
    marker = f"{STACK_ID_ENV}={stack_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if _stat(int(entry.name)) is not None:
            yield int(entry.name)


def describe(state: StackState, alerts: str | None = None) -> str:
    """What an operator needs after `make up`: the URLs, the user names and the file holding the
    passwords, never the passwords themselves (this output ends up in logs). `alerts` is one line
    saying whether alerts are on (`driftline.operator.alerts.alerts_status`), when given."""
    stack = Path(state.home) / "stack"
    kept = stack / "secrets.json"
    lines = [f"driftline stack ({state.profile}) is up; `make down` stops it.", ""]
    for service, label in (("airflow", "Airflow  "), ("mlflow", "MLflow   ")):
        lines.append(
            f"  {label}  {state.urls[service]}   login: {state.login[service]['user']}, "
            f"password: {service}_password in {kept} (mode 0600)"
        )
        if service == "airflow" and "airflow_viewer" in state.login:
            lines.append(
                f"             read-only login: {state.login['airflow_viewer']['user']}, "
                "password: airflow_viewer_password in the same file"
            )
    lines.append(f"  Evidently  {state.urls['evidently']}   (no login: bound to {HOST} only)")
    if "scoring" in state.urls:  # a stack started before the scoring server existed has none
        lines.append(
            f"  Scoring    {state.urls['scoring']}/invocations   (the champion over REST; "
            f"no login: bound to {HOST} only)"
        )
    lines.append("")
    lines.append(f"  Drift history inside Airflow: {state.urls['airflow']}/driftline/history")
    lines.append(f"  Champion and rollback:        {state.urls['airflow']}/driftline/champion")
    if alerts is not None:
        lines.append(f"  Alerts: {alerts}")
    lines.append(
        "  Services run under supervisord (a crashed one is restarted): "
        "`driftline stack status`, `driftline stack restart NAME`"
    )
    lines.append(f"  Logs: {stack / 'logs'}")
    return "\n".join(lines)


def _prepare_files(settings: Settings, secret: Mapping[str, str], prod: Production | None) -> None:
    stack = stack_dir(settings)
    if prod is None:
        _write_private(
            stack / "airflow-passwords.json",
            json.dumps(
                {ADMIN: secret["airflow_password"], VIEWER: secret["airflow_viewer_password"]}
            ),
        )
    else:
        (stack / "airflow-passwords.json").unlink(missing_ok=True)
        _write_private(stack / "webserver_config.py", airflow_admin.FAB_CONFIG)
    _write_private(
        stack / "mlflow-auth.ini",
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{stack / 'mlflow-auth.db'}\n"
        f"admin_username = {ADMIN}\n"
        f"admin_password = {secret['mlflow_password']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    settings.evidently_workspace.mkdir(parents=True, exist_ok=True)
    (settings.home / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    if prod is not None and "://" not in prod.mlflow_artifacts:
        Path(prod.mlflow_artifacts).mkdir(parents=True, exist_ok=True)


def _run_once(argv: list[str], env: Mapping[str, str], log: Path, what: str) -> None:
    with open(log, "wb") as out:
        done = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    if done.returncode != 0:
        raise StackError(f"{what} failed (exit {done.returncode}):\n{_tail(log)}")


def _wait_airflow_components(airflow_url: str, deadline: float, logs: Path) -> None:
    """The api-server's health report covers the scheduler, triggerer and dag-processor."""
    url = f"{airflow_url}/api/v2/monitor/health"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - localhost
                health = json.load(response)
            # a component that has not heartbeated yet reports None: not healthy yet
            unhealthy = [
                name
                for name in ("metadatabase", *AIRFLOW_COMPONENTS)
                if (health.get(name) or {}).get("status") != "healthy"
            ]
            if not unhealthy:
                return
        except (urllib.error.URLError, OSError, ValueError):
            unhealthy = ["api-server"]
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {name}\n{_tail(logs / f'{name}.log')}"
                for name in ("scheduler", "triggerer", "dag-processor")
            )
            raise StackError(f"Airflow components not healthy: {unhealthy}\n{tails}")
        time.sleep(1)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):  # noqa: S310 - localhost
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # up, and asking for a login
    except (urllib.error.URLError, OSError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((HOST, port)) != 0


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def _ini(value: object) -> str:
    """A value for supervisord's INI: it expands %(name)s, and cuts a value at " ;" or " #"."""
    text = str(value)
    if re.search(r"\s[;#]", text):
        raise StackError(f"supervisord cannot take {text!r}: a space before ; or #")
    return text.replace("%", "%%")


if __name__ == "__main__":  # supervisord's reaper: python -m driftline.operator.stack <stack dir>
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    reap(Path(sys.argv[1]))
