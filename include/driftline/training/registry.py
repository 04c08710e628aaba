"""MLflow: one run per training run, registered versions, and the champion/challenger gate.

Aliases of the registered model: `challenger` marks the newest candidate, `champion` serves,
`previous` is the champion it replaced (what `driftline rollback` returns to).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from driftline.config import GateConfig, Settings, UseCase

# Versions logged before driftline.serving pickled the model as
# driftline.training.registry.DelayModel
from driftline.serving.pyfunc import DelayModel, model_code, pip_requirements  # noqa: F401
from driftline.training import evaluation, stages
from driftline.training.model import TrainedModel

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
RUN_TAG = "driftline.run_key"
REFERENCE_ARTIFACT_DIR = "reference"  # the drift reference sample, in the version's run
REFERENCE_ARTIFACT = f"{REFERENCE_ARTIFACT_DIR}/{stages.REFERENCE.name}"
REFERENCE_FILE = stages.REFERENCE.as_posix()  # its path in the workspace (tag dvc_md5.<path>)


# --- the gate: a pure decision over scores ----------------------------------------------


@dataclass(frozen=True)
class Scores:
    """Quality of one model on one holdout: overall figures and the primary metric per slice."""

    overall: dict[str, float]
    slices: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    checks: dict[str, Any]


@dataclass(frozen=True)
class Comparison:
    """The holdout rows champion and challenger are compared on: the challenger's holdout
    minus the days in the champion's training window (neither model trained on them)."""

    rows: pd.DataFrame = field(repr=False)
    champion_version: str
    days: list[str]
    excluded_days: list[str]
    min_rows: int

    @property
    def too_few(self) -> bool:
        return len(self.rows) < self.min_rows

    def describe(self) -> str:
        compared = (
            f"compared on {_span(self.days)} ({len(self.days)} days, {len(self.rows):,} rows "
            "neither model trained on)"
            if self.days
            else "no holdout day is outside it"
        )
        if not self.excluded_days:
            return compared
        return (
            f"{compared}; holdout days {_span(self.excluded_days)} are in champion version "
            f"{self.champion_version}'s training window and were left out"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "champion_version": self.champion_version,
            "days": self.days,
            "excluded_days": self.excluded_days,
            "rows": len(self.rows),
            "min_rows": self.min_rows,
        }


def _span(days: list[str]) -> str:
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"


def comparable_holdout(
    holdout: pd.DataFrame, usecase: UseCase, champion_version: str, champion_window: str | None
) -> Comparison:
    """The challenger's holdout rows outside the champion's training window (`start..end`,
    the version's `window` tag; unknown for versions made before it: nothing is left out)."""
    local_day = holdout[usecase.event_time].dt.tz_convert(usecase.tz).dt.date
    inside = pd.Series(False, index=holdout.index)
    if champion_window:
        first, last = (dt.date.fromisoformat(d) for d in champion_window.split(".."))
        inside = (local_day >= first) & (local_day <= last)
    return Comparison(
        rows=holdout[~inside].reset_index(drop=True),
        champion_version=champion_version,
        days=sorted({d.isoformat() for d in local_day[~inside]}),
        excluded_days=sorted({d.isoformat() for d in local_day[inside]}),
        min_rows=usecase.training.gate.min_compare_rows,
    )


def decide(
    challenger: Scores,
    champion: Scores | None,
    gate: GateConfig,
    force: bool = False,
    comparison: Comparison | None = None,
) -> Decision:
    """Promote only a challenger that beats the champion by the margin, reaches the floor and
    regresses on no slice beyond the tolerance; with no champion yet, the floor alone decides;
    `force` promotes regardless (and says so). With a champion, `comparison` says which
    holdout rows both were scored on; too few of them and nothing is promoted unforced."""
    decision = _decide(challenger, champion, gate, force, comparison)
    if comparison is None:
        return decision
    checks = {**decision.checks, "compared": comparison.as_dict()}
    if comparison.too_few and not force:  # the reason already says what was left
        return Decision(False, decision.reason, checks)
    return Decision(decision.promote, f"{decision.reason} ({comparison.describe()})", checks)


def _decide(
    challenger: Scores,
    champion: Scores | None,
    gate: GateConfig,
    force: bool,
    comparison: Comparison | None,
) -> Decision:
    metric = gate.primary_metric
    higher = evaluation.HIGHER_IS_BETTER[metric]
    value = challenger.overall[metric]
    checks: dict[str, Any] = {"metric": metric, "challenger": value}
    if force:
        return Decision(True, "forced by the trigger (force_promote)", checks)
    if comparison is not None and comparison.too_few:
        return Decision(
            False,
            f"not compared with champion version {comparison.champion_version}: "
            f"{len(comparison.rows):,} holdout rows lie outside its training window, fewer "
            f"than min_compare_rows {comparison.min_rows}"
            + (
                f"; holdout days {_span(comparison.excluded_days)} are in champion version "
                f"{comparison.champion_version}'s training window"
                if comparison.excluded_days
                else ""
            )
            + " (force_promote to promote anyway)",
            checks,
        )
    if math.isnan(value):
        return Decision(False, f"challenger {metric} is undefined on the holdout", checks)
    above_floor = value >= gate.floor if higher else value <= gate.floor
    checks["floor"] = gate.floor
    if not above_floor:
        return Decision(
            False, f"challenger {metric} {value:.4f} misses the floor {gate.floor}", checks
        )
    if champion is None:
        return Decision(True, "no champion yet", checks)
    incumbent = champion.overall[metric]
    gain = (value - incumbent) if higher else (incumbent - value)
    checks.update(champion=incumbent, gain=gain, min_improvement=gate.min_improvement)
    if gain < gate.min_improvement:
        return Decision(
            False,
            f"challenger {metric} {value:.4f} does not beat the champion's {incumbent:.4f} "
            f"by {gate.min_improvement}",
            checks,
        )
    regressions = {}
    for name, ours in challenger.slices.items():
        theirs = champion.slices.get(name)
        if theirs is None or math.isnan(theirs) or math.isnan(ours):
            continue
        loss = (theirs - ours) if higher else (ours - theirs)
        if loss > gate.slice_tolerance:
            regressions[name] = round(loss, 4)
    checks["slice_regressions"] = regressions
    if regressions:
        worst = max(regressions, key=regressions.get)
        return Decision(
            False,
            f"better overall ({gain:+.4f}) but worse on {len(regressions)} slice(s), e.g. "
            f"{worst} by {regressions[worst]} > tolerance {gate.slice_tolerance}",
            checks,
        )
    return Decision(True, f"beats the champion by {gain:+.4f} with no slice regression", checks)


def score(model_predict, holdout: pd.DataFrame, usecase: UseCase) -> Scores:
    """Scores of a predict function on a holdout, with the gate's slices."""
    gate = usecase.training.gate
    y_prob = np.asarray(model_predict(holdout[usecase.features.all]), dtype=np.float64)
    y_true = holdout[usecase.label.name].astype(int).to_numpy()
    slices = evaluation.slice_quality(
        holdout,
        y_prob,
        usecase.label.name,
        evaluation.slice_values(holdout, gate.slices),
        gate.min_slice_rows,
    )
    return Scores(
        overall=evaluation.quality(y_true, y_prob),
        slices={name: q[gate.primary_metric] for name, q in slices.items()},
    )


# --- MLflow plumbing --------------------------------------------------------------------


def client(settings: Settings) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return mlflow.MlflowClient(settings.mlflow_tracking_uri)


def experiment_id(settings: Settings, usecase: UseCase) -> str:
    mlflow_client = client(settings)
    name = usecase.training.experiment
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    is_server = settings.mlflow_tracking_uri.startswith(("http://", "https://"))
    location = None if is_server else f"{settings.mlflow_artifact_root}/{name}"
    return mlflow_client.create_experiment(name, artifact_location=location)


def find_or_start_run(
    settings: Settings, usecase: UseCase, run_key: str, tags: dict[str, str]
) -> str:
    """The one MLflow run of a training run (found again by its key on a task retry)."""
    mlflow_client = client(settings)
    exp = experiment_id(settings, usecase)
    found = mlflow_client.search_runs(
        [exp], filter_string=f"tags.{RUN_TAG} = '{_quoted(run_key)}'", max_results=1
    )
    if found:
        return found[0].info.run_id
    run = mlflow_client.create_run(exp, run_name=run_key, tags={RUN_TAG: run_key, **tags})
    return run.info.run_id


def _quoted(value: str) -> str:
    return value.replace("'", "")


def log_model_version(
    settings: Settings,
    usecase: UseCase,
    run_id: str,
    workspace_root: Path,
    params: dict[str, Any],
    tags: dict[str, str],
) -> str:
    """Log params, metrics, plots and the model into the run; register it; mark `challenger`.

    Returns the version; a retry finds the version already made by this run.
    """
    mlflow_client = client(settings)
    name = usecase.training.registered_model
    existing = [v for v in _versions(mlflow_client, name) if v.run_id == run_id]
    if existing:  # a retry: the version exists, make sure it is marked
        mlflow_client.set_registered_model_alias(name, CHALLENGER, existing[0].version)
        return str(existing[0].version)
    from mlflow.models import infer_signature

    metrics = json.loads((workspace_root / stages.METRICS).read_text())
    holdout = pd.read_parquet(workspace_root / stages.HOLDOUT)
    trained = TrainedModel.load(workspace_root / stages.MODEL)
    example = holdout[trained.schema.features].head(5)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params(_flat(params))
        mlflow.log_metrics(mlflow_metrics(metrics))
        mlflow.set_tags(tags)
        mlflow.log_artifact(str(workspace_root / stages.METRICS), "evaluation")
        mlflow.log_artifact(str(workspace_root / stages.REFERENCE), REFERENCE_ARTIFACT_DIR)
        for plot in sorted((workspace_root / stages.PLOTS).glob("*.json")):
            mlflow.log_artifact(str(plot), "evaluation")
            mlflow.log_figure(_figure(plot), f"evaluation/{plot.stem}.png")
        with tempfile.TemporaryDirectory() as code:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=DelayModel(),
                artifacts={"model": str(workspace_root / stages.MODEL)},
                code_paths=[str(model_code(Path(code)))],
                signature=infer_signature(example, trained.predict_proba(example)),
                input_example=example,
                pip_requirements=pip_requirements(),
            )
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version.version)
    log.info("registered %s version %s from run %s", name, version.version, run_id)
    return str(version.version)


def mark_failed(settings: Settings, run_id: str, step: str, error: BaseException) -> None:
    """A run that made no version says so: status FAILED, the step and the error as tags
    (best effort: MLflow may be what failed)."""
    try:
        mlflow_client = client(settings)
        mlflow_client.set_tag(run_id, "driftline.failed_step", step)
        mlflow_client.set_tag(run_id, "driftline.error", str(error)[:4000])
        mlflow_client.set_terminated(run_id, status="FAILED")
    except Exception:  # noqa: BLE001 - the original error is the one to raise
        log.warning("could not mark MLflow run %s as failed", run_id, exc_info=True)


# What MLflow answers for a model or alias that does not exist (sqlite store and server
# alike); any other error (store down, ...) must propagate, never read as "no champion".
_ABSENT = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def _versions(mlflow_client: mlflow.MlflowClient, name: str) -> list:
    try:
        return mlflow_client.search_model_versions(f"name = '{_quoted(name)}'")
    except MlflowException as exc:
        if exc.error_code in _ABSENT:
            return []
        raise


def alias_version(settings: Settings, name: str, alias: str) -> str | None:
    try:
        return str(client(settings).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in _ABSENT:
            return None
        raise


def load_version(settings: Settings, name: str, version: str):
    """The pyfunc of a registered version (champion and challenger load the same way)."""
    client(settings)
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def record_decision(
    settings: Settings,
    usecase: UseCase,
    version: str,
    champion_version: str | None,
    decision: Decision,
    challenger: Scores,
    champion: Scores | None,
) -> None:
    """Move the aliases if it is a promotion, then write the decision on the version.

    `gate.decision` is written last: a gate retry trusts it as proof that all of this is done.
    """
    mlflow_client = client(settings)
    name = usecase.training.registered_model
    metric = usecase.training.gate.primary_metric
    verdict = "promoted" if decision.promote else "not promoted"
    if decision.promote:
        if champion_version and champion_version != version:
            mlflow_client.set_registered_model_alias(name, PREVIOUS, champion_version)
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    mlflow_client.set_model_version_tag(name, version, "gate.reason", decision.reason)
    mlflow_client.set_model_version_tag(
        name, version, "gate.champion_version", champion_version or "none"
    )
    mlflow_client.set_model_version_tag(
        name,
        version,
        "gate.scores",
        json.dumps(
            {
                "challenger": asdict(challenger),
                "champion": asdict(champion) if champion else None,
                "checks": decision.checks,
            },
            default=float,
        ),
    )
    champion_text = (
        f"{champion.overall[metric]:.4f} (version {champion_version})" if champion else "none"
    )
    mlflow_client.update_model_version(
        name,
        version,
        description=(
            f"Gate: {verdict}. {decision.reason}.\n"
            f"Holdout {metric}: challenger {challenger.overall[metric]:.4f}, "
            f"champion {champion_text}."
        ),
    )
    mlflow_client.set_model_version_tag(name, version, "gate.decision", verdict)
    log.info("%s version %s %s: %s", name, version, verdict, decision.reason)


@contextmanager
def promotion_lock(settings: Settings, usecase: UseCase) -> Iterator[None]:
    """One promotion (or rollback) of the use-case's registered model at a time, across
    processes and machines (locks.held, in the drift history's database)."""
    from driftline import locks

    name = f"driftline.promotion.{usecase.training.registered_model}"
    with locks.held(settings.history_url, name):
        yield


def rollback(
    settings: Settings, usecase: UseCase, reason: str, by: str | None = None
) -> tuple[str, str]:
    """champion <- previous in one call; previous <- the demoted version (so it can be undone).

    Recorded as tags on both versions, under the promotion lock, then announced by one
    rollback alert (who: `by`). Every way in (CLI, UI) calls this. Returns (demoted, restored).
    """
    from driftline.operator import alerts

    with promotion_lock(settings, usecase):
        demoted, restored = _rollback(settings, usecase, reason, by)
    alerts.send(
        alerts.rolled_back(
            usecase.name, usecase.training.registered_model, demoted, restored, reason, by
        )
    )
    return demoted, restored


UNKNOWN_USER = "unknown"  # rollback.by of a rollback whose caller did not say who


def _rollback(
    settings: Settings, usecase: UseCase, reason: str, by: str | None
) -> tuple[str, str]:
    mlflow_client = client(settings)
    name = usecase.training.registered_model
    current = alias_version(settings, name, CHAMPION)
    previous = alias_version(settings, name, PREVIOUS)
    if current is None or previous is None:
        raise RuntimeError(
            f"{name}: rollback needs both a champion ({current}) and a previous "
            f"version ({previous})"
        )
    mlflow_client.set_registered_model_alias(name, CHAMPION, previous)
    mlflow_client.set_registered_model_alias(name, PREVIOUS, current)
    stamp = pd.Timestamp.now(tz="UTC").isoformat()
    mlflow_client.set_model_version_tag(name, current, "rollback.demoted", f"{stamp}: {reason}")
    mlflow_client.set_model_version_tag(name, previous, "rollback.restored", f"{stamp}: {reason}")
    for version in (current, previous):  # who: the CLI's user@host, or the UI's Airflow user
        mlflow_client.set_model_version_tag(name, version, "rollback.by", by or UNKNOWN_USER)
    log.warning(
        "%s: champion rolled back from version %s to %s (%s)", name, current, previous, reason
    )
    return current, previous


def version_info(settings: Settings, usecase: UseCase, version: str) -> dict[str, Any]:
    mlflow_client = client(settings)
    found = mlflow_client.get_model_version(usecase.training.registered_model, version)
    run = mlflow_client.get_run(found.run_id)
    return {
        "version": str(found.version),
        "run_id": found.run_id,
        "tags": dict(found.tags),
        "aliases": list(found.aliases),
        "description": found.description,
        "run_tags": dict(run.data.tags),
        "metrics": dict(run.data.metrics),
        "params": dict(run.data.params),
    }


def mlflow_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json as MLflow metrics: nested names joined with '.', finite numbers only.

    Slice names hold data values (`carrier=9E`, or a band such as `income=0 - 20K €`), and
    MLflow refuses most characters in a metric name: each name part is made safe here (see
    metric_name_part), while metrics.json, logged beside them, keeps the names as they are.
    """
    return {k: float(v) for k, v in _flat(metrics).items() if _finite(v)}


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def metric_name_part(key: str) -> str:
    """`key` with '=' as '_' and every other character MLflow may refuse (spaces, '%', '€',
    '/', ...) as '_', plus a short hash of `key` when any was replaced, so that two values
    that differ only in such characters stay two metrics."""
    name = str(key).replace("=", "_")
    safe = _UNSAFE_IN_NAME.sub("_", name)
    if safe == name and safe not in (".", ".."):
        return safe
    digest = hashlib.sha1(str(key).encode(), usedforsecurity=False).hexdigest()[:6]
    return f"{safe}_{digest}"


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{metric_name_part(key)}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _figure(plot: Path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = json.loads(plot.read_text())
    figure, axis = plt.subplots(figsize=(4, 4))
    if plot.stem == "roc":
        axis.plot([r["fpr"] for r in rows], [r["tpr"] for r in rows])
        axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
        axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    else:
        axis.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], marker="o")
        axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
        axis.set(xlabel="predicted", ylabel="observed", title="Calibration")
    figure.tight_layout()
    plt.close(figure)
    return figure
