"""Start and drive a real driftline stack from tests: `make up` / `make down` and Airflow's REST
API through the official `apache-airflow-client` package."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import airflow_client.client as airflow_client
import httpx
import pytest
from airflow_client.client.api.dag_api import DAGApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.api.import_error_api import ImportErrorApi
from airflow_client.client.api.task_instance_api import TaskInstanceApi
from airflow_client.client.models.dag_patch_body import DAGPatchBody
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

from tests.conftest import REPO

FINISHED = {"success", "failed"}
GREEN = {"success", "skipped"}  # what every task instance of a good run ends as


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment whose stack lives in `home`, on ports nobody else uses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING"))}
    env.update(
        {
            "DRIFTLINE_HOME": str(home),
            "AIRFLOW_HOME": str(home / "airflow"),
            "DRIFTLINE_AIRFLOW_PORT": str(free_port()),
            "DRIFTLINE_MLFLOW_PORT": str(free_port()),
            "DRIFTLINE_EVIDENTLY_PORT": str(free_port()),
            "DRIFTLINE_SCORING_PORT": str(free_port()),
            "DRIFTLINE_WORKER_LOG_PORT": str(free_port()),
            "DRIFTLINE_TRIGGER_LOG_PORT": str(free_port()),
        }
    )
    env.update(extra or {})
    return env


def make(target: str, env: Mapping[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO), target],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"make {target} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def stack_state(home: Path) -> dict:
    return json.loads((home / "stack" / "state.json").read_text())


def stack_members(home: Path) -> dict[int, int]:
    """Every live process of the stack started in `home` (services, their trees, the id)."""
    from driftline.operator.stack import StackState, members

    return members(StackState.load(home / "stack" / "state.json"))


def processes_mentioning(*texts: str) -> list[str]:
    """Command lines (titles included: setproctitle rewrites them) naming any of `texts`: an
    independent look for leftovers, e.g. "airflow api_server -- host:127.0.0.1 port:NNNN"."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(text in line for text in texts):
            found.append(f"{entry.name}: {line.strip()}")
    return found


def survivors(found: dict[int, int]) -> list[int]:
    """Those of `found` (pid -> start time) that still run."""
    from driftline.operator.stack import still_running

    return still_running(found)


@dataclass
class AirflowApi:
    """Airflow's REST API as an operator's script would use it: token, then the client."""

    url: str
    user: str
    password: str

    def __post_init__(self) -> None:
        token = httpx.post(
            f"{self.url}/auth/token",
            json={"username": self.user, "password": self.password},
            timeout=30,
        )
        token.raise_for_status()
        config = airflow_client.Configuration(host=self.url)
        config.access_token = token.json()["access_token"]
        self.client = airflow_client.ApiClient(config)

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 180) -> None:
        """The dag-processor has parsed them (`dags list` is empty until then)."""
        deadline = time.monotonic() + timeout
        while True:
            known = {d.dag_id for d in DAGApi(self.client).get_dags(limit=100).dags}
            if dag_ids <= known:
                return
            assert time.monotonic() < deadline, f"DAGs not parsed in {timeout}s: {dag_ids - known}"
            time.sleep(2)

    def import_errors(self) -> list[str]:
        errors = ImportErrorApi(self.client).get_import_errors().import_errors
        return [f"{e.filename}: {e.stack_trace}" for e in errors]

    def is_paused(self, dag_id: str) -> bool:
        return bool(DAGApi(self.client).get_dag(dag_id).is_paused)

    def unpause(self, dag_id: str) -> None:
        DAGApi(self.client).patch_dag(dag_id, DAGPatchBody(is_paused=False))

    def trigger(self, dag_id: str, conf: dict, run_id: str | None = None) -> str:
        body = TriggerDAGRunPostBody(logical_date=None, conf=conf, dag_run_id=run_id)
        return DagRunApi(self.client).trigger_dag_run(dag_id, body).dag_run_id

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = str(DagRunApi(self.client).get_dag_run(dag_id, run_id).state.value)
            if state in FINISHED:
                return state
            assert time.monotonic() < deadline, f"{dag_id} {run_id} still {state} after {timeout}s"
            time.sleep(3)

    def runs(self, dag_id: str) -> list:
        return DagRunApi(self.client).get_dag_runs(dag_id, limit=100).dag_runs

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        instances = TaskInstanceApi(self.client).get_task_instances(dag_id, run_id).task_instances
        return {ti.task_id: str(ti.state.value) if ti.state else "none" for ti in instances}


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


def diagnostics(home: Path, failed: list[tuple[str, str, str]] = ()) -> str:
    """Tails of the stack's logs and of the task logs of `failed` (dag, run, task)."""
    parts = [
        f"--- {log.name}\n{tail(log)}" for log in sorted((home / "stack" / "logs").glob("*.log"))
    ]
    task_logs = home / "airflow" / "logs"
    for dag_id, run_id, task_id in failed:
        for log in sorted(task_logs.glob(f"dag_id={dag_id}/*/task_id={task_id}/**/*.log")):
            if f"run_id={run_id}" in str(log):
                parts.append(f"--- task log {log.relative_to(task_logs)}\n{tail(log, 80)}")
    return "\n".join(parts)


def wait_for_runs(
    api: AirflowApi,
    home: Path,
    dag_id: str,
    ready: Callable[[list], bool],
    what: str,
    timeout: float = 720,
) -> list:
    """Poll the DAG's runs until `ready(runs)` holds; fail at once when one of them fails."""
    deadline = time.monotonic() + timeout
    while True:
        runs = api.runs(dag_id)
        failed = [r.dag_run_id for r in runs if str(r.state.value) == "failed"]
        if failed:
            states = {run_id: api.task_states(dag_id, run_id) for run_id in failed}
            red = [
                (dag_id, run_id, task_id)
                for run_id, tasks in states.items()
                for task_id, state in tasks.items()
                if state not in GREEN
            ]
            pytest.fail(f"{dag_id} runs failed: {states}\n{diagnostics(home, red)}")
        if ready(runs):
            return runs
        if time.monotonic() > deadline:
            detail = {r.dag_run_id: api.task_states(dag_id, r.dag_run_id) for r in runs}
            pytest.fail(f"{dag_id} not {what} in {timeout:.0f} s: {detail}\n{diagnostics(home)}")
        time.sleep(3)
