"""The training workspace follows the configured DVC remote without re-running DVC needlessly."""

from __future__ import annotations

import configparser

from driftline.workspace import Workspace


def _remote(root) -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(root / ".dvc" / "config")
    return {**config["'remote \"storage\"'"], "default": config.get("core", "remote")}


def test_the_workspace_follows_the_remote_in_the_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("DRIFTLINE_DVC_REMOTE_ENDPOINT", raising=False)
    root = tmp_path / "ws"
    Workspace.ensure(root, str(tmp_path / "remote-a"))
    assert _remote(root) == {"url": str(tmp_path / "remote-a"), "default": "storage"}
    config = root / ".dvc" / "config"
    written = config.stat().st_mtime_ns
    Workspace.ensure(root, str(tmp_path / "remote-a"))
    assert config.stat().st_mtime_ns == written  # unchanged settings: nothing rewritten
    monkeypatch.setenv("DRIFTLINE_DVC_REMOTE_ENDPOINT", "http://127.0.0.1:9000")
    Workspace.ensure(root, "s3://bucket/dvc")
    assert _remote(root) == {"url": "s3://bucket/dvc", "endpointurl": "http://127.0.0.1:9000",
                             "default": "storage"}
    assert not list(tmp_path.glob(".ws-*"))  # no half-made workspace left behind


def test_a_second_process_waits_for_the_workspace_lock(tmp_path):
    """DVC's own lock gives up after ~3 s; driftline's waits: a second training's DVC steps
    start only when the first's are done, whichever process runs them (DAG task or CLI)."""
    import subprocess
    import sys
    import time

    root = tmp_path / "ws"
    holder = (
        "import sys, time; from pathlib import Path; from driftline.workspace import Workspace\n"
        "with Workspace(Path(sys.argv[1])).lock():\n"
        "    print('locked', flush=True); time.sleep(4)\n"
        "    Path(sys.argv[2]).write_text(str(time.time()))\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", holder, str(root), str(tmp_path / "first")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert first.stdout.readline().strip() == "locked"
    began = time.time()
    with Workspace(root).lock():
        acquired = time.time()
    first.wait(timeout=30)
    first.stdout.close()
    released = float((tmp_path / "first").read_text())
    assert acquired >= released, "the lock was taken while the first process held it"
    assert acquired - began > 3  # longer than DVC would have waited
