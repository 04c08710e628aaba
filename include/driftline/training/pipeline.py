"""A training run: snapshot the window, `dvc repro`, register in MLflow, gate the challenger.

The Airflow DAG runs these steps as tasks; `driftline train` runs them in one process.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from driftline import storage
from driftline.config import Settings, UseCase, project_root
from driftline.ingest import etl
from driftline.training import registry, stages
from driftline.training.model import feature_schema
from driftline.training.request import TrainingRequest, TrainingRequestError
from driftline.training.workspace import WINDOW_FILE, Workspace, WorkspaceError

log = logging.getLogger(__name__)

VALIDATIONS_FILE = "validations.json"


def train_params(usecase: UseCase) -> dict[str, Any]:
    """The XGBoost parameters this use-case trains with: params.yaml's `train` section, with
    the use-case's `training.params` over it (another use-case's stay params.yaml's)."""
    shared = stages.read_params(project_root())["train"]
    return {**shared, **usecase.training.params}


def pipeline_params(usecase: UseCase, request: TrainingRequest) -> dict[str, Any]:
    """The sections a run adds to params.yaml, and its `train` section as this use-case sets
    it: what DVC needs to rerun the version alone."""
    gate = usecase.training.gate
    return {
        "train": train_params(usecase),
        "run": {
            "usecase": usecase.name,
            "timezone": usecase.timezone,
            "window_start": request.window_start.isoformat(),
            "window_end": request.window_end.isoformat(),
            "holdout_start": request.holdout_start.isoformat(),
            "holdout_end": request.holdout_end.isoformat(),
        },
        "schema": feature_schema(usecase).as_dict(),
        "evaluation": {"slices": dict(gate.slices), "min_slice_rows": gate.min_slice_rows},
        "reference": usecase.monitoring.reference.model_dump(),
        "code": stages.code_fingerprint(project_root()),
    }


def workspace(usecase: UseCase, settings: Settings) -> Workspace:
    return Workspace.ensure(settings.workspace_dir(usecase.name), settings.dvc_remote(usecase.name))


def snapshot_window(usecase: UseCase, settings: Settings, request: TrainingRequest) -> dict:
    """Copy the window and holdout days from the curated store into the workspace (DVC-added)."""
    missing = [
        d.isoformat()
        for d in request.days()
        if not (settings.partition_dir(usecase.name, d) / etl.PARTITION_FILE).exists()
    ]
    if missing:
        raise TrainingRequestError(
            f"no curated partition for {len(missing)} day(s) of the window and holdout "
            f"{request.window_start}..{request.holdout_end}: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; load them first ({usecase.name}_etl or "
            "`driftline etl`)"
        )
    rows = etl.read_curated(usecase, settings, request.window_start, request.holdout_end)
    rows = rows.sort_values([usecase.event_time, usecase.key], kind="stable").reset_index(drop=True)
    labelled = int(rows[usecase.label.name].notna().sum())
    local_day = rows[usecase.event_time].dt.tz_convert(usecase.tz).dt.date
    trainable = int((rows[usecase.label.name].notna() & (local_day <= request.window_end)).sum())
    if trainable < usecase.training.min_train_rows:
        raise TrainingRequestError(
            f"window_days: {request.window_start}..{request.window_end} holds {trainable} "
            f"labelled rows, fewer than min_train_rows {usecase.training.min_train_rows}"
        )
    ws = workspace(usecase, settings)
    with ws.lock():
        storage.write_parquet(rows, ws.root / WINDOW_FILE)
        storage.write_json(
            validation_summaries(usecase, settings, request), ws.root / VALIDATIONS_FILE
        )
        ws.write_pipeline(pipeline_params(usecase, request))
        ws.track_snapshot()
        md5 = ws.snapshot_md5()
    return {
        "rows": len(rows),
        "labelled": labelled,
        "days": len(request.days()),
        "snapshot_md5": md5,
    }


def validation_summaries(usecase: UseCase, settings: Settings, request: TrainingRequest) -> dict:
    """The suite verdict of each snapshotted day, from its partition's footer (a partition is
    only written after its batch passed; a later failed rerun leaves it, and this, as it was).
    Git-tracked in the workspace, so a version keeps it whatever happens to the day later."""
    summaries = {}
    for day in request.days():
        partition = settings.partition_dir(usecase.name, day) / etl.PARTITION_FILE
        meta = storage.read_parquet_metadata(partition) if partition.exists() else {}
        result = settings.validation_result_path(usecase.name, day)
        summaries[day.isoformat()] = {
            "partition": str(partition),
            "result": str(result) if result.exists() else None,
            "suite": meta.get("suite"),
            "success": True if meta else None,
            "evaluated_expectations": meta.get("evaluated_expectations"),
            "rows": meta.get("rows"),
        }
    return summaries


def run_pipeline(
    usecase: UseCase, settings: Settings, message: str, snapshot_md5: str | None = None
) -> dict:
    """`dvc repro`, commit the workspace (the version's DVC address), `dvc push`.

    `snapshot_md5` (from snapshot_window) makes sure the snapshot is still this run's own.
    """
    ws = workspace(usecase, settings)
    with ws.lock():
        if snapshot_md5 is not None and ws.snapshot_md5() != snapshot_md5:
            raise WorkspaceError(
                f"the snapshot in {ws.root} is no longer this run's ({snapshot_md5[:12]}): "
                "another training run replaced it, or a failed dvc repro restored the last "
                "version; trigger this one again"
            )
        began = time.perf_counter()
        try:
            ws.repro()
        except WorkspaceError:
            ws.restore_head()  # the workspace stays at the last version, not half this run's
            raise
        seconds = time.perf_counter() - began
        commit = ws.commit(message)
        try:
            ws.push()
        except WorkspaceError:
            ws.run("git", "tag", "-f", unregistered_tag(commit), commit, check=False)
            raise
        return {
            "commit": commit,
            "hashes": ws.hashes(),
            "metrics": _headline(ws.metrics()),
            "pipeline_seconds": round(seconds, 2),
        }


def unregistered_tag(commit: str) -> str:
    """The git tag on a workspace commit that no model version was made from (its push or
    its registration failed): `git tag -l 'unregistered/*'` lists failed attempts, and the
    commit's message names their run."""
    return f"unregistered/{commit[:12]}"


def commit_message(request: TrainingRequest, dag_id: str, run_id: str) -> str:
    """The workspace commit of a version: its window, the reason, and the run that made it."""
    return (
        f"train {request.window_start}..{request.window_end} ({request.reason}; {dag_id} {run_id})"
    )


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "slices"}


def code_revision() -> str:
    """The project's git commit (with `-dirty` for uncommitted changes), for lineage."""
    root = project_root()
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--",
                "include",
                "dags",
                "dvc.yaml",
                "params.yaml",
                "usecases",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def register(
    usecase: UseCase,
    settings: Settings,
    request: TrainingRequest,
    run_key: str,
    lineage: dict[str, str],
    pipeline: dict,
) -> dict:
    """Log the run into its MLflow run and register the version (alias `challenger`)."""
    tags = {
        **lineage,
        "code_revision": code_revision(),
        "dvc_commit": pipeline["commit"],
        "dvc_workspace": str(settings.workspace_dir(usecase.name)),
        "dvc_remote": settings.dvc_remote(usecase.name),
        **{f"dvc_md5.{path}": md5 for path, md5 in pipeline["hashes"].items()},
        "trigger_reason": request.reason,
        "window": f"{request.window_start}..{request.window_end}",
        "holdout": f"{request.holdout_start}..{request.holdout_end}",
        "force_promote": str(request.force_promote).lower(),
    }
    if request.evidence:
        tags["trigger_evidence"] = _json(request.evidence)[:5000]
    ws = workspace(usecase, settings)
    failed = unregistered_tag(pipeline["commit"])
    run_id = None
    try:
        run_id = registry.find_or_start_run(settings, usecase, run_key, tags)
        with ws.at_commit(pipeline["commit"]):
            params = {**pipeline_params(usecase, request)["run"], **_train_params(ws)}
            version = registry.log_model_version(settings, usecase, run_id, ws.root, params, tags)
            ws.tag(f"{usecase.training.registered_model}-v{version}", pipeline["commit"])
    except Exception as exc:
        if run_id is not None:
            registry.mark_failed(settings, run_id, "register_model", exc)
        ws.run("git", "tag", "-f", failed, pipeline["commit"], check=False)
        raise
    ws.run("git", "tag", "-d", failed, check=False)  # a retry that succeeded
    _link_night(
        settings,
        usecase,
        request,
        run=f"{lineage['airflow_dag_id']}/{lineage['airflow_run_id']}",
        mlflow_run=run_id,
    )
    return {
        "version": version,
        "run_id": run_id,
        "experiment_id": registry.experiment_id(settings, usecase),
        "model": usecase.training.registered_model,
    }


def _train_params(ws: Workspace) -> dict:
    return {f"train.{k}": v for k, v in stages.read_params(ws.root)["train"].items()}


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def gate(usecase: UseCase, settings: Settings, request: TrainingRequest, version: str) -> dict:
    """Score challenger and champion on the challenger's DVC-pinned holdout and decide.

    Only the holdout days neither model trained on are compared (a champion trained on a
    later window has seen some of them), and the decision says which. Reading the champion,
    deciding and moving the aliases happen under the promotion lock.
    """
    name = usecase.training.registered_model
    tags = registry.version_info(settings, usecase, version)["tags"]
    if "gate.decision" in tags:  # a retry after the decision was made: do not decide twice
        return _decided(version, tags)
    ws = workspace(usecase, settings)
    holdout = pd.read_parquet(ws.cached_file(tags["dvc_commit"], stages.HOLDOUT.as_posix()))
    challenger_model = registry.load_version(settings, name, version)
    with registry.promotion_lock(settings, usecase):
        tags = registry.version_info(settings, usecase, version)["tags"]
        if "gate.decision" in tags:  # decided by another process while this one waited
            return _decided(version, tags)
        champion_version = registry.alias_version(settings, name, registry.CHAMPION)
        if champion_version == version:
            champion_version = None
        compared, comparison = holdout, None
        if champion_version is not None:
            champion_tags = registry.version_info(settings, usecase, champion_version)["tags"]
            comparison = registry.comparable_holdout(
                holdout, usecase, champion_version, champion_tags.get("window")
            )
            if not comparison.too_few:  # else the challenger's own figures, for the record
                compared = comparison.rows
        challenger = registry.score(challenger_model.predict, compared, usecase)
        champion = None
        if comparison is not None and not comparison.too_few:
            champion = registry.score(
                registry.load_version(settings, name, champion_version).predict, compared, usecase
            )
        decision = registry.decide(
            challenger,
            champion,
            usecase.training.gate,
            force=request.force_promote,
            comparison=comparison,
        )
        registry.record_decision(
            settings, usecase, version, champion_version, decision, challenger, champion
        )
    verdict = "promoted" if decision.promote else "not promoted"
    decided = f"version {version} {verdict}: {decision.reason}"
    _link_night(settings, usecase, request, decision=decided)
    metric = usecase.training.gate.primary_metric
    return {
        "version": version,
        "promoted": decision.promote,
        "reason": decision.reason,
        "champion_before": champion_version,
        "champion_after": version if decision.promote else champion_version,
        "challenger_" + metric: challenger.overall[metric],
        "champion_" + metric: champion.overall[metric] if champion else None,
    }


def _link_night(
    settings: Settings,
    usecase: UseCase,
    request: TrainingRequest,
    run: str | None = None,
    mlflow_run: str | None = None,
    decision: str | None = None,
) -> None:
    """A retraining the drift sensor started writes itself onto the night that fired it:
    the run, then the gate's decision (best effort: the training itself is what matters)."""
    from driftline.monitoring.history import DriftHistory
    from driftline.monitoring.nightly import TRIGGER_REASON

    night = request.evidence.get("day")
    if request.reason != TRIGGER_REASON or not isinstance(night, str):
        return
    history = DriftHistory(settings.history_url)
    try:
        day = dt.date.fromisoformat(night)
        if run is not None:
            history.link_training(usecase.name, day, run, mlflow_run or "")
        if decision is not None:
            history.link_decision(usecase.name, day, decision)
    except (LookupError, ValueError) as exc:
        log.warning("could not link the training to night %s: %s", night, exc)
    finally:
        history.dispose()


def _decided(version: str, tags: dict[str, str]) -> dict:
    """What gate returns for a version whose decision is already written on it."""
    return {
        "version": version,
        "promoted": tags["gate.decision"] == "promoted",
        "reason": tags["gate.reason"],
        "champion_before": None
        if tags["gate.champion_version"] == "none"
        else tags["gate.champion_version"],
        "already_decided": True,
    }


class TrainingStepError(RuntimeError):
    """A step of `train` failed; the message names the step (as the DAG's task ids do)."""


@contextmanager
def _step(name: str) -> Iterator[None]:
    try:
        yield
    except TrainingRequestError:
        raise  # already names the field that is wrong
    except Exception as exc:
        raise TrainingStepError(f"training step {name} failed: {exc}") from exc


def run_key_for(dag_id: str, run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:+-]", "_", f"{dag_id}/{run_id}")


def train(
    usecase: UseCase,
    settings: Settings,
    request: TrainingRequest,
    dag_id: str = "driftline-cli",
    run_id: str | None = None,
) -> dict:
    """All steps in one process (the CLI's path)."""
    run_id = run_id or dt.datetime.now(dt.UTC).strftime("cli__%Y-%m-%dT%H:%M:%S.%f")
    began = time.perf_counter()
    with _step("snapshot_window"):
        snapshot = snapshot_window(usecase, settings, request)
    with _step("run_dvc_pipeline"):
        pipeline = run_pipeline(
            usecase,
            settings,
            commit_message(request, dag_id, run_id),
            snapshot["snapshot_md5"],
        )
    with _step("register_model"):
        registered = register(
            usecase,
            settings,
            request,
            run_key_for(dag_id, run_id),
            {"airflow_dag_id": dag_id, "airflow_run_id": run_id},
            pipeline,
        )
    with _step("gate_challenger"):
        decision = gate(usecase, settings, request, registered["version"])
    return {
        **snapshot,
        **pipeline,
        **registered,
        **decision,
        "seconds": round(time.perf_counter() - began, 2),
    }


def reproduce(usecase: UseCase, settings: Settings, version: str) -> dict:
    """Retrain a version from its DVC commit, with data restored from the remote only.

    The workspace is cloned at the version's commit (an empty DVC cache), the snapshot is
    pulled from the DVC remote and every stage is rerun; returns both sets of metrics.
    """
    import tempfile
    from pathlib import Path

    info = registry.version_info(settings, usecase, version)
    commit = info["tags"].get("dvc_commit")
    if not commit:
        raise RuntimeError(f"version {version} has no dvc_commit tag: it was not made by driftline")
    with tempfile.TemporaryDirectory(prefix="driftline-reproduce-") as tmp:
        clone = workspace(usecase, settings).clone_at(commit, Path(tmp) / "workspace")
        clone.untrack_outputs()  # a version committed with model/ in git (the old bug)
        clone.run("dvc", "pull", "-q", f"{WINDOW_FILE}.dvc")
        began = time.perf_counter()
        clone.run("dvc", "repro", "--force")
        seconds = time.perf_counter() - began
        reproduced = _headline(clone.metrics())
        hashes = clone.hashes()
    logged = {k: info["metrics"][k] for k in reproduced if k in info["metrics"]}
    return {
        "version": version,
        "commit": commit,
        "logged": logged,
        "reproduced": {k: reproduced[k] for k in logged},
        "identical": all(reproduced[k] == v for k, v in logged.items()),
        "same_data": hashes[WINDOW_FILE] == info["tags"].get(f"dvc_md5.{WINDOW_FILE}"),
        "seconds": round(seconds, 2),
    }


def lineage(usecase: UseCase, settings: Settings, version: str) -> dict:
    """Everything a version came from, each item pointing at where it can be looked up."""
    import os

    info = registry.version_info(settings, usecase, version)
    tags = info["tags"]
    commit = tags.get("dvc_commit")
    try:
        validations = json.loads(
            workspace(usecase, settings).run("git", "show", f"{commit}:{VALIDATIONS_FILE}")
        )
    except WorkspaceError:  # a version made before validations were snapshotted
        validations = {}
    airflow_url = os.environ.get("AIRFLOW__API__BASE_URL", "http://localhost:8080").rstrip("/")
    dag_id, run_id = tags.get("airflow_dag_id"), tags.get("airflow_run_id")
    return {
        "model": usecase.training.registered_model,
        "version": version,
        "aliases": info["aliases"],
        "code_revision": tags.get("code_revision"),
        "dvc_commit": tags.get("dvc_commit"),
        "dvc_workspace": tags.get("dvc_workspace"),
        "dvc_remote": tags.get("dvc_remote"),
        "dvc_hashes": {
            k.removeprefix("dvc_md5."): v for k, v in tags.items() if k.startswith("dvc_md5.")
        },
        "window": tags.get("window"),
        "holdout": tags.get("holdout"),
        "validation": validations,
        "airflow_dag_id": dag_id,
        "airflow_run_id": run_id,
        "airflow_run_url": f"{airflow_url}/dags/{dag_id}/runs/{run_id}"
        if dag_id and not dag_id.startswith("driftline-cli")
        else None,
        "mlflow_run_id": info["run_id"],
        "mlflow_tracking_uri": etl.masked_url(settings.mlflow_tracking_uri),
        "trigger_reason": tags.get("trigger_reason"),
        "gate": {"decision": tags.get("gate.decision"), "reason": tags.get("gate.reason")},
        "metrics": {k: v for k, v in info["metrics"].items() if "." not in k},
    }
