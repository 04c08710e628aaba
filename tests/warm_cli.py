"""Run driftline's and Airflow's command lines in warm processes: forked from a fork server
that imported the tasks' libraries once (multiprocessing's forkserver with a preload), as
`driftline.warm_start` does for the scheduler. Each call is still a process of its own, with
its own environment set before Airflow is imported (Airflow reads its config at import), its
own exit code and its own stdout and stderr; it only skips importing GX, MLflow, XGBoost and
Evidently again (~15 s a call on 2 cores).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from multiprocessing import forkserver
from pathlib import Path

# No Airflow here: it must be imported after the call's environment is in place.
PRELOAD = ["tests.warm_preload"]
CLIS = {"airflow": ("airflow.__main__", "main"), "driftline": ("driftline.cli", "run")}

REPO = Path(__file__).resolve().parents[1]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


@functools.cache
def _fork_server() -> None:
    """Start the fork server from the checkout's root (its preload is imported relative to
    its working directory), and check that the preload really happened: multiprocessing
    ignores a preload that fails to import."""
    with contextlib.chdir(REPO):
        forkserver.ensure_running()
    check = _context.Process(target=_check_preloaded)
    check.start()
    check.join(120)
    if check.exitcode != 0:
        raise RuntimeError(f"the fork server did not import {PRELOAD} (exit {check.exitcode})")


def _check_preloaded() -> None:
    sys.exit(0 if {"great_expectations", "mlflow"} <= set(sys.modules) else 1)


def _main(tool: str, args: list[str], env: dict[str, str], out: str, err: str) -> None:
    import importlib

    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the process's stdin for its lifetime
    os.environ.clear()
    os.environ.update(env)
    module, function = CLIS[tool]
    sys.argv = [tool, *args]
    code = getattr(importlib.import_module(module), function)()
    sys.exit(code if isinstance(code, int) else 0)


def run(tool: str, args: list[str], env: Mapping[str, str], timeout: float = 600):
    """`tool args` (airflow or driftline) as a warm process; a subprocess.CompletedProcess."""
    _fork_server()
    with tempfile.TemporaryDirectory(prefix="driftline-warm-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        process = _context.Process(target=_main, args=(tool, args, dict(env), str(out), str(err)))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([tool, *args], timeout)
        return subprocess.CompletedProcess(
            [tool, *args],
            process.exitcode,
            out.read_text(errors="replace") if out.exists() else "",
            err.read_text(errors="replace") if err.exists() else "",
        )
