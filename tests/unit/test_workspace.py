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
