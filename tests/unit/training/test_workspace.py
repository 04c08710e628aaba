"""The training workspace follows the configured DVC remote without re-running DVC needlessly."""

from __future__ import annotations

import configparser

import pytest

from driftline.training.workspace import Workspace


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
        "import sys, time; from pathlib import Path\n"
        "from driftline.training.workspace import Workspace\n"
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


TOY_PIPELINE = """\
stages:
  train:
    cmd: >-
      python -c "import pathlib as p; m = p.Path('model'); m.mkdir(exist_ok=True);
      (m / 'weights').write_bytes(p.Path('data/window.parquet').read_bytes())"
    deps:
      - data/window.parquet
    params:
      - run
    outs:
      - model
"""


def _train(ws: Workspace, window: bytes, message: str) -> str:
    """One training's workspace steps, as training.snapshot_window + run_pipeline do them."""
    (ws.root / "data").mkdir(exist_ok=True)
    (ws.root / "data" / "window.parquet").write_bytes(window)
    ws.write_pipeline({"run": {"window": message}})
    ws.track_snapshot()
    ws.repro()
    return ws.commit(message)


@pytest.fixture
def toy_workspace(tmp_path, monkeypatch) -> Workspace:
    """A real git + DVC workspace whose project pipeline is TOY_PIPELINE (no XGBoost)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text(TOY_PIPELINE)
    (project / "params.yaml").write_text("train: {}\n")
    monkeypatch.setattr("driftline.training.workspace.project_root", lambda: project)
    ws = Workspace.ensure(tmp_path / "ws", str(tmp_path / "remote"))
    return ws


def test_the_same_window_twice_then_another_window_keeps_dvc_outputs_out_of_git(toy_workspace):
    """The second run of a window finds every stage cached, so DVC writes no .gitignore entry
    for `model`; the workspace must still ignore it, or `model/` goes into git and every later
    `dvc repro` fails ("output 'model' is already tracked by SCM")."""
    ws = toy_workspace
    _train(ws, b"window A", "A")
    _train(ws, b"window A", "A")  # the same window again: every stage is cached
    assert ws.run("git", "ls-files", "model") == ""
    _train(ws, b"window B", "B")  # before the fix: already tracked by SCM
    assert ws.run("git", "ls-files", "model") == ""
    assert (ws.root / "model" / "weights").read_bytes() == b"window B"
    assert "/model" in (ws.root / ".gitignore").read_text().splitlines()


def test_a_workspace_with_model_committed_into_git_is_repaired_by_the_next_run(toy_workspace):
    """Workspaces damaged by earlier driftline versions train again without a manual fix."""
    ws = toy_workspace
    _train(ws, b"window A", "A")
    (ws.root / ".gitignore").write_text("/.driftline.lock\n")  # what driftline used to write
    ws.run("git", "add", "-A")
    ws.run("git", "commit", "-q", "-m", "damaged: model/ in git")
    assert ws.run("git", "ls-files", "model") == "model/weights"
    _train(ws, b"window B", "B")
    assert ws.run("git", "ls-files", "model") == ""
    assert ws.run("git", "status", "--porcelain") == ""
