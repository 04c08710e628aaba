"""The operator's stack on one machine: Airflow's four processes, the MLflow UI, the Evidently UI.

`make up` / `make down` call `up` and `down` here. Each service runs in a process group of
its own and carries a stack id in its environment, so `down` stops exactly what `up` started
(and their children), nothing else. Credentials are generated on the first `up`, kept in
`$DRIFTLINE_HOME/stack/` (mode 0600) and reused; login is required by Airflow and MLflow.

Two profiles, one code path: the embedded default (LocalExecutor, SQLite, local files) and
`production` (metadata DB, Celery broker and MLflow store taken from the environment, a
Celery worker, tasks logging to the MLflow server), as docker-compose.yaml runs it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from driftline import airflow_admin
from driftline.config import Settings, project_root

STACK_ID_ENV = "DRIFTLINE_STACK_ID"
MLFLOW_UI_ENV = "DRIFTLINE_MLFLOW_UI_URL"
EVIDENTLY_UI_ENV = "DRIFTLINE_EVIDENTLY_UI_URL"
ADMIN = "admin"
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
AIRFLOW_COMPONENTS = ("scheduler", "triggerer", "dag_processor")  # in the api-server's health
HOST = "127.0.0.1"


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


@dataclass
class StackState:
    """What `up` started: written to stack/state.json, read by `down` and by tests."""

    stack_id: str
    profile: str
    home: str
    urls: dict[str, str]
    login: dict[str, dict[str, str]]
    pids: dict[str, int] = field(default_factory=dict)
    # each service's start time (/proc/<pid>/stat, clock ticks since boot): a recorded pid is
    # this stack's process only while the process with that pid started at that time
    started: dict[str, int] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        _write_private(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> StackState:
        return cls(**json.loads(path.read_text()))


def stack_dir(settings: Settings) -> Path:
    return settings.home / "stack"


def state_path(settings: Settings) -> Path:
    return stack_dir(settings) / "state.json"


def credentials(settings: Settings) -> dict[str, str]:
    """The stack's secrets: generated once, then reused (a restart keeps sessions valid)."""
    from cryptography.fernet import Fernet

    path = stack_dir(settings) / "secrets.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    makers = {
        "airflow_password": lambda: secrets.token_urlsafe(16),
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
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
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
                # created by driftline.airflow_admin after `airflow db migrate`
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
        planned.append(
            Service("celery-worker", [*warm, "celery", "worker", "--concurrency", "2"])
        )
    return planned


def up(
    settings: Settings,
    ports: Ports | None = None,
    production: bool = False,
    base_env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
) -> StackState:
    """Start every service, wait until each is healthy, return what was started.

    On any failure everything already started is stopped again and the error names the
    service and ends with the tail of its log.
    """
    base_env = dict(os.environ if base_env is None else base_env)
    ports = ports or Ports.from_env(base_env)
    state_file = state_path(settings)
    if state_file.exists():
        running = StackState.load(state_file)
        if members(running):  # by start time and stack id, not by pid alone: pids are reused
            raise StackError(f"a stack is already running from {settings.home}: `make down` first")
        state_file.unlink()
    for name, port in asdict(ports).items():
        if not _port_free(port):
            raise StackError(f"port {port} for {name} is taken: set DRIFTLINE_{name.upper()}_PORT")

    prod = Production.from_env(base_env, settings.home) if production else None
    secret = credentials(settings)
    stack_id = secrets.token_hex(8)
    env = environment(settings, ports, secret, stack_id, prod, base_env)
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
            [sys.executable, "-m", "driftline.airflow_admin"],
            {
                **env,
                airflow_admin.USERNAME_ENV: ADMIN,
                airflow_admin.PASSWORD_ENV: secret["airflow_password"],
            },
            logs / "airflow-admin.log",
            "creating the Airflow admin",
        )

    state = StackState(
        stack_id=stack_id,
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
        },
    )
    planned = services(settings, ports, prod)
    try:
        for service in planned:
            _start(service, env, settings, state)
        deadline = time.monotonic() + timeout
        for service in planned:
            _wait_healthy(service, state.pids[service.name], logs, deadline)
        _wait_airflow_components(state.urls["airflow"], deadline, logs)
    except BaseException:
        down(settings)
        raise
    return state


def down(settings: Settings, grace: float = 30.0) -> list[str]:
    """Stop what `up` started: each service with every process below it, and any process
    left that still carries this stack's id.

    The tree is taken before any signal: Airflow's api-server and Celery's worker start
    children in sessions of their own and retitle them (setproctitle), which hides the stack
    id in /proc/<pid>/environ; once their parent is gone nothing else leads to them. What a
    crashed service left in its session is found by the session (see `members`).
    """
    state_file = state_path(settings)
    if not state_file.exists():
        return []
    state = StackState.load(state_file)
    found = members(state)
    for pid in _leaders(state):
        _signal_group(pid, signal.SIGTERM)
    try:
        _stop(found, grace, again=lambda: members(state))
    except StackError as exc:
        raise StackError(f"stack {state.stack_id}: {exc}") from exc
    state_file.unlink()
    return sorted(state.pids)


def restart(
    settings: Settings,
    name: str,
    base_env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
) -> StackState:
    """Stop one service of the running stack (whatever is left of it, if it crashed) and start
    it again with the stack's environment; `base_env` must give the ports `up` was given."""
    base_env = dict(os.environ if base_env is None else base_env)
    state_file = state_path(settings)
    if not state_file.exists():
        raise StackError(f"no stack is running from {settings.home}: `make up` first")
    state = StackState.load(state_file)
    ports = Ports.from_env(base_env)
    prod = Production.from_env(base_env, settings.home) if state.profile == "production" else None
    known = {service.name: service for service in services(settings, ports, prod)}
    if name not in known or name not in state.pids:
        raise StackError(f"no service {name!r} in this stack: {sorted(state.pids)}")
    _stop(members(state, [name]))
    env = environment(settings, ports, credentials(settings), state.stack_id, prod, base_env)
    _start(known[name], env, settings, state)
    deadline = time.monotonic() + timeout
    _wait_healthy(known[name], state.pids[name], stack_dir(settings) / "logs", deadline)
    if name in ("api-server", "scheduler", "dag-processor", "triggerer"):
        _wait_airflow_components(state.urls["airflow"], deadline, stack_dir(settings) / "logs")
    return state


def _start(service: Service, env: Mapping[str, str], settings: Settings, state: StackState) -> None:
    """Start `service` in a session of its own, logging to stack/logs; record it in `state`."""
    logs = stack_dir(settings) / "logs"
    with open(logs / f"{service.name}.log", "ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own binaries, argv list
            service.argv,
            env=env,
            cwd=settings.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    state.pids[service.name] = process.pid
    state.started[service.name] = _start_time(process.pid) or 0
    state.save(state_path(settings))


def _stop(
    found: dict[int, int],
    grace: float = 30.0,
    again: Callable[[], dict[int, int]] | None = None,
) -> None:
    """SIGTERM `found` (pid -> start time), SIGKILL what is left after `grace` seconds, with
    what `again()` finds then (children started meanwhile)."""
    for pid in found:
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


def members(state: StackState, names: Iterable[str] | None = None) -> dict[int, int]:
    """Every live process of the stack (or of the services `names`), pid -> start time: the
    services that are still the processes `up` started, the sessions they started (what a
    crashed service leaves behind: LocalExecutor's workers outlive a killed scheduler),
    everything below those, and (for the whole stack) whatever carries the stack id."""
    chosen = set(state.pids if names is None else names)
    table = _processes()  # one pass over /proc for the roots, the tree and the start times
    roots = set(_leaders(state, chosen)) | set(_orphans(state, chosen, table))
    if names is None:
        roots |= set(stack_processes(state.stack_id))
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return {pid: table[pid][2] for pid in found if pid in table}


def _leaders(state: StackState, names: Iterable[str] | None = None) -> list[int]:
    """The recorded services whose pid still names the process `up` started."""
    return [
        pid
        for name, pid in state.pids.items()
        if (names is None or name in names)
        and name in state.started
        and _start_time(pid) == state.started[name]
    ]


def _orphans(
    state: StackState, names: Iterable[str], table: dict[int, tuple[int, int, int]]
) -> list[int]:
    """Processes in the session of a recorded service that started after it. `up` starts
    each service in a session of its own (session id = its pid), and a pid is not reused
    while its session has members: so unless the pid now names another process (whose
    session it then is), they are what the service left when it died."""
    sessions = {
        state.pids[name]: state.started[name]
        for name in names
        if name in state.started and _start_time(state.pids[name]) in (None, state.started[name])
    }
    return [
        pid
        for pid, (_, session, started) in table.items()
        if session in sessions and started >= sessions[session]
    ]


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


def describe(state: StackState) -> str:
    lines = [f"driftline stack ({state.profile}) is up; `make down` stops it.", ""]
    lines.append(
        f"  Airflow    {state.urls['airflow']}   login: {state.login['airflow']['user']}"
        f" / {state.login['airflow']['password']}"
    )
    lines.append(
        f"  MLflow     {state.urls['mlflow']}   login: {state.login['mlflow']['user']}"
        f" / {state.login['mlflow']['password']}"
    )
    lines.append(f"  Evidently  {state.urls['evidently']}   (no login: bound to {HOST} only)")
    if "scoring" in state.urls:  # a stack started before the scoring server existed has none
        lines.append(
            f"  Scoring    {state.urls['scoring']}/invocations   (the champion over REST; "
            f"no login: bound to {HOST} only)"
        )
    lines.append("")
    lines.append(f"  Drift history inside Airflow: {state.urls['airflow']}/driftline/history")
    lines.append(
        f"  Credentials (generated, mode 0600): {Path(state.home) / 'stack' / 'secrets.json'}"
    )
    lines.append(f"  Logs: {Path(state.home) / 'stack' / 'logs'}")
    return "\n".join(lines)


def _prepare_files(settings: Settings, secret: Mapping[str, str], prod: Production | None) -> None:
    stack = stack_dir(settings)
    if prod is None:
        _write_private(
            stack / "airflow-passwords.json", json.dumps({ADMIN: secret["airflow_password"]})
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


def _wait_healthy(service: Service, pid: int, logs: Path, deadline: float) -> None:
    while True:
        if not _alive(pid):
            raise StackError(
                f"{service.name} exited during start-up:\n{_tail(logs / f'{service.name}.log')}"
            )
        if service.health_url is None or _answers(service.health_url):
            return
        if time.monotonic() > deadline:
            raise StackError(
                f"{service.name} not healthy at {service.health_url}:\n"
                f"{_tail(logs / f'{service.name}.log')}"
            )
        time.sleep(1)


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


def _alive(pid: int) -> bool:
    return _stat(pid) is not None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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
