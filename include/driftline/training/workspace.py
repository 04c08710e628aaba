"""The training workspace: a git + DVC repository in the platform's state folder.

Training never touches the project checkout. Each run writes its window snapshot and
params into the workspace, runs `dvc repro`, commits (the commit is the version's DVC
address) and pushes the data to the DVC remote, from which `driftline reproduce` restores it.
"""

from __future__ import annotations

import configparser
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from driftline.config import DVC_REMOTE_ENDPOINT_ENV, project_root

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "driftline",
    "GIT_AUTHOR_EMAIL": "driftline@localhost",
    "GIT_COMMITTER_NAME": "driftline",
    "GIT_COMMITTER_EMAIL": "driftline@localhost",
}
WINDOW_FILE = "data/window.parquet"  # the snapshot (dvc add); the stages' files: stages.py


class WorkspaceError(RuntimeError):
    """A git or DVC command in the training workspace failed; the message has its output."""


def _env() -> dict[str, str]:
    """The current env, with this interpreter's bin first (stage commands run `python`)."""
    env = {**os.environ, **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass(frozen=True)
class Workspace:
    root: Path

    def run(self, *args: str, check: bool = True) -> str:
        tool = args[0]
        executable = str(Path(sys.executable).parent / "dvc") if tool == "dvc" else tool
        done = subprocess.run(
            [executable, *args[1:]],
            cwd=self.root,
            env=_env(),
            capture_output=True,
            text=True,
        )
        if check and done.returncode != 0:
            output = (done.stdout + done.stderr).strip()[-3000:]
            raise WorkspaceError(f"`{' '.join(args)}` failed in {self.root}:\n{output}")
        return done.stdout.strip()

    @classmethod
    def ensure(cls, root: Path, remote: str) -> Workspace:
        """Open the workspace, creating it (git, DVC) on first use, and point it at `remote`.

        Creation happens in a sibling folder renamed into place, so a failed first run
        leaves nothing half-made behind.
        """
        if not (root / ".dvc").is_dir():
            root.parent.mkdir(parents=True, exist_ok=True)
            building = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
            try:
                fresh = cls(building)
                fresh.run("git", "init", "-q", "-b", "main")
                fresh.run("dvc", "init", "-q")
                fresh.run("dvc", "config", "core.analytics", "false")
                fresh.run("git", "add", "-A")
                fresh.run("git", "commit", "-q", "-m", "driftline training workspace")
                building.rename(root)
            finally:
                shutil.rmtree(building, ignore_errors=True)
        workspace = cls(root)
        workspace.set_remote(remote)
        return workspace

    def set_remote(self, remote: str) -> None:
        """The default remote is whatever the settings say now (committed with the next run).

        Reads .dvc/config (INI) itself and calls DVC only on a change: every training step
        opens the workspace, and a `dvc remote list` costs about 0.8 s.
        """
        endpoint = os.environ.get(DVC_REMOTE_ENDPOINT_ENV)
        section, is_default = self._remote_config()
        if (
            section.get("url") == remote
            and is_default
            and (endpoint is None or section.get("endpointurl") == endpoint)
        ):
            return
        with self.lock():
            self.run("dvc", "remote", "add", "-d", "-f", "storage", remote)
            if endpoint:
                self.run("dvc", "remote", "modify", "storage", "endpointurl", endpoint)

    @contextmanager
    def at_commit(self, commit: str) -> Iterator[Workspace]:
        """Locked, and only if the workspace is exactly `commit` with nothing changed since:
        what a later task reads is what the earlier task committed."""
        with self.lock():
            head = self.run("git", "rev-parse", "HEAD")
            changed = self.run("git", "status", "--porcelain")
            if head != commit or changed:
                raise WorkspaceError(
                    f"{self.root} moved on from {commit[:12]} (now {head[:12]}"
                    f"{', with changes' if changed else ''}): another training run used it; "
                    "trigger this one again"
                )
            yield self

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One training run at a time per workspace (DVC's own lock waits only ~3 s)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".driftline.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write_pipeline(self, params: dict[str, Any]) -> None:
        """dvc.yaml and params.yaml from the project, plus this run's sections.

        The root .gitignore keeps the entries DVC wrote (`/model`): DVC writes them only when
        it runs a stage, so a stage it skips as cached would otherwise land in git.
        """
        source = project_root()
        shutil.copyfile(source / "dvc.yaml", self.root / "dvc.yaml")
        merged = {**yaml.safe_load((source / "params.yaml").read_text()), **params}
        (self.root / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
        self._ignore(["/.driftline.lock"])
        self.untrack_outputs()

    def cached_outputs(self) -> list[str]:
        """The stage outputs DVC caches (dvc.yaml `outs`): git must never track them."""
        path = self.root / "dvc.yaml"
        pipeline = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
        found = []
        for stage in (pipeline.get("stages") or {}).values():
            for out in stage.get("outs") or []:
                path, options = (out, {}) if isinstance(out, str) else next(iter(out.items()))
                if (options or {}).get("cache", True):
                    found.append(path)
        return found

    def untrack_outputs(self) -> None:
        """Take cached stage outputs out of git and ignore them, as DVC would have.

        Also repairs a workspace where an earlier driftline committed `model/` into git
        (after which every `dvc repro` failed: "output 'model' is already tracked by SCM").
        """
        outputs = self.cached_outputs()
        tracked = self.run("git", "ls-files", "--", *outputs) if outputs else ""
        if tracked:
            self.run("git", "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", *outputs)
        for output in outputs:
            folder, name = os.path.split(output)
            self._ignore([f"/{name}"], Path(folder))

    def _ignore(self, entries: list[str], folder: Path = Path(".")) -> None:
        """Add `entries` to `folder`/.gitignore, keeping every line already there."""
        path = self.root / folder / ".gitignore"
        lines = path.read_text().splitlines() if path.exists() else []
        missing = [entry for entry in entries if entry not in lines]
        if missing:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{line}\n" for line in [*lines, *missing]))

    def restore_head(self) -> None:
        """Back to the last committed version: git files and the DVC outputs it recorded
        (from the cache), after a run that failed before its commit."""
        self.run("git", "reset", "-q", "--hard", "HEAD")
        self.run("dvc", "checkout", "-q", "--force", check=False)  # empty before any version

    def track_snapshot(self) -> None:
        self.run("dvc", "add", "-q", WINDOW_FILE)

    def repro(self) -> str:
        return self.run("dvc", "repro")

    def commit(self, message: str) -> str:
        """Commit the workspace; refuses if a cached stage output would go into git."""
        self.run("git", "add", "-A")
        outputs = self.cached_outputs()
        staged = self.run("git", "ls-files", "--", *outputs) if outputs else ""
        if staged:
            self.run("git", "reset", "-q")
            raise WorkspaceError(
                f"{self.root}: DVC outputs would be committed into git ({staged.splitlines()[:5]});"
                " their .gitignore entries are missing"
            )
        self.run("git", "commit", "-q", "--allow-empty", "-m", message)
        return self.run("git", "rev-parse", "HEAD")

    def _remote_config(self) -> tuple[Mapping[str, str], bool]:
        """The `storage` remote's section of .dvc/config, and whether it is the default."""
        config = configparser.ConfigParser()
        config.read(self.root / ".dvc" / "config")
        names = [n for n in ("'remote \"storage\"'", 'remote "storage"') if config.has_section(n)]
        section = config[names[0]] if names else {}  # DVC writes the name in quotes
        return section, config.get("core", "remote", fallback=None) == "storage"

    def push(self) -> None:
        """`dvc push`; a failure names the remote (and DVC's own reason: not quiet, since
        `-q` also hides the error)."""
        try:
            self.run("dvc", "push")
        except WorkspaceError as exc:
            section, _ = self._remote_config()
            where = section.get("url", "?")
            if section.get("endpointurl"):
                where += f" (endpoint {section['endpointurl']})"
            raise WorkspaceError(f"the DVC remote {where} is unavailable: {exc}") from exc

    def tag(self, name: str, commit: str) -> None:
        self.run("git", "tag", "-f", name, commit)

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.root / "metrics.json").read_text())

    def snapshot_md5(self) -> str:
        return yaml.safe_load((self.root / f"{WINDOW_FILE}.dvc").read_text())["outs"][0]["md5"]

    def hashes(self) -> dict[str, str]:
        """md5 of the snapshot and of every stage output, as DVC recorded them."""
        found = {WINDOW_FILE: self.snapshot_md5()}
        lock = yaml.safe_load((self.root / "dvc.lock").read_text())
        for stage in lock["stages"].values():
            for out in stage.get("outs", []):
                found[out["path"]] = out["md5"]
        return found

    def cached_file(self, commit: str, path: str) -> Path:
        """The file a stage wrote to `path` in the version at `commit`, from the DVC cache
        (content-addressed, never rewritten): readable whatever the workspace holds now,
        e.g. while another training runs."""
        lock = yaml.safe_load(self.run("git", "show", f"{commit}:dvc.lock"))
        for stage in lock["stages"].values():
            for out in stage.get("outs", []):
                if out["path"] == path:
                    md5 = out["md5"]
                    cached = self.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
                    if not cached.is_file():
                        raise WorkspaceError(
                            f"{path} of {commit[:12]} (md5 {md5}) is not in the DVC cache of "
                            f"{self.root}: `dvc pull` it from the remote"
                        )
                    return cached
        raise WorkspaceError(f"{commit[:12]} has no stage output {path} in its dvc.lock")

    def clone_at(self, commit: str, target: Path) -> Workspace:
        """A fresh clone at `commit` with an empty DVC cache: data can only come from the remote."""
        subprocess.run(
            ["git", "clone", "-q", str(self.root), str(target)], check=True, capture_output=True
        )
        clone = Workspace(target)
        clone.run("git", "checkout", "-q", commit)
        return clone
