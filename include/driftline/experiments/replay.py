"""A year replayed night by night under one retraining policy, with the DAGs' own functions.

Each night is what the use-case's <name>_monitoring DAG does (the champion scores the next
day ahead, the Evidently reports judge the stored predictions, the drift rule's verdict), then
the policy decides whether <name>_training runs (`training.train`: DVC snapshot, `dvc repro`,
MLflow registration, the champion/challenger gate). A version promoted after night N scores
from night N+1 on, so its first predictions are of day N+2, as in Airflow. No scheduler: a
night costs its work, not Airflow's.

Every policy replays in a home of its own (its MLflow store, DVC workspace, drift history,
predictions and reports); the curated store is shared, read-only, through a link. The first
champion is trained on the days before the first night (its holdout ends the night before)
and scores the first night's day ahead, as the night before it would have; a night's quality
is that of the predictions made ahead for its day, so none was made after its label existed.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from driftline.config import (
    DVC_REMOTE_ENV,
    HISTORY_URL_ENV,
    MLFLOW_ARTIFACTS_ENV,
    PREDICTION,
    PREDICTIONS_URL_ENV,
    Settings,
    UseCase,
)
from driftline.ingest import etl
from driftline.monitoring import nightly as monitoring
from driftline.monitoring import scoring
from driftline.monitoring.drift_rule import Verdict
from driftline.monitoring.judged_rows import Days
from driftline.serving import predictions
from driftline.training import evaluation
from driftline.training import pipeline as training
from driftline.training.request import TrainingRequest

log = logging.getLogger(__name__)

NEVER, MONTHLY, NIGHTLY, DRIFT = "never", "monthly", "nightly", "drift"
POLICIES = (NEVER, MONTHLY, NIGHTLY, DRIFT)
NIGHTS_FILE = "nights.csv"
DAG_ID = "driftline-replay"
# Stores that would otherwise come from the environment and be shared by every policy
# (besides MLFLOW_TRACKING_URI, which the base settings hold).
SHARED_STORE_ENVS = (HISTORY_URL_ENV, DVC_REMOTE_ENV, MLFLOW_ARTIFACTS_ENV, PREDICTIONS_URL_ENV)


class ReplayError(RuntimeError):
    """The replay cannot start or go on; the message says what to change."""


@dataclass(frozen=True)
class NightRecord:
    """One replayed night of one policy: a row of nights.csv."""

    policy: str
    night: dt.date
    champion_version: str  # the version that made the night's predictions (ahead)
    rows: int
    labelled: int
    roc_auc: float | None  # those predictions on the night's own real labels
    log_loss: float | None
    drift_share: float  # the night's drift report (current: the configured trailing days)
    decision: str  # the drift rule's verdict (acted on by the `drift` policy only)
    retrained: bool
    new_version: str | None = None
    promoted: bool | None = None
    training_seconds: float | None = None
    night_seconds: float = 0.0
    # the retraining's window (its holdout: the holdout days after it; replays recorded before
    # 2026-12-07 have no such columns: their window ended holdout_days before the night)
    window_start: dt.date | None = None
    window_end: dt.date | None = None

    @classmethod
    def from_csv(cls, row: dict[str, str]) -> NightRecord:
        def number(text: str) -> float | None:
            return float(text) if text not in ("", "None") else None

        return cls(
            policy=row["policy"],
            night=dt.date.fromisoformat(row["night"]),
            champion_version=row["champion_version"],
            rows=int(row["rows"]),
            labelled=int(row["labelled"]),
            roc_auc=number(row["roc_auc"]),
            log_loss=number(row["log_loss"]),
            drift_share=float(row["drift_share"]),
            decision=row["decision"],
            retrained=row["retrained"] == "True",
            new_version=row["new_version"] or None,
            promoted=None if row["promoted"] in ("", "None") else row["promoted"] == "True",
            training_seconds=number(row["training_seconds"]),
            night_seconds=float(row["night_seconds"]),
            window_start=_date(row.get("window_start")),
            window_end=_date(row.get("window_end")),
        )


def _date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text not in (None, "", "None") else None


COLUMNS = [f.name for f in fields(NightRecord)]


def policy_settings(base: Settings, out: Path, policy: str, usecase: UseCase) -> Settings:
    """A home of the policy's own under `out`, seeing the base home's curated store."""
    # MLflow's set_tracking_uri() writes $MLFLOW_TRACKING_URI: the base settings hold what it
    # was before any policy ran
    shared = {"MLFLOW_TRACKING_URI": base.mlflow_uri} | {
        name: os.environ.get(name) for name in SHARED_STORE_ENVS
    }
    for name, value in shared.items():
        if value:
            raise ReplayError(
                f"${name} is set: every policy would share that store; unset it for the replay "
                "(each policy keeps its own stores under --out)"
            )
    home = (out / policy).resolve()
    settings = Settings(home, base.usecases_dir, base.expectations_dir, mlflow_uri=None)
    for folder in (base.curated_dir(usecase.name), base.home / "validations" / usecase.name):
        if not folder.is_dir():
            raise ReplayError(f"{folder} does not exist: load the year first (`driftline etl`)")
        _link(folder, settings.home / folder.relative_to(base.home))
    # the next day is scored ahead from the source: the home's SQLite file, if it has one (a
    # source URL in the environment is read by every policy alike)
    if base.source_dir.is_dir():
        _link(base.source_dir, settings.source_dir)
    return settings


def _link(folder: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(folder, target_is_directory=True)


def with_threads(usecase: UseCase, threads: int) -> UseCase:
    """The use-case training with `threads` XGBoost threads: the same models (the histogram
    method does not depend on it), at the speed of the cores the replay has to itself."""
    training = usecase.training.model_copy(
        update={"params": {**usecase.training.params, "nthread": threads}}
    )
    return usecase.model_copy(update={"training": training})


def first_request(usecase: UseCase, start: dt.date) -> TrainingRequest:
    """The first champion: the window whose holdout ends the night before `start` (at most
    the configured window, from the use-case's first day)."""
    holdout = usecase.training.holdout_days
    window_end = start - dt.timedelta(days=holdout + 1)
    days = min(usecase.training.window_days, (window_end - usecase.start_date).days + 1)
    if days < 1:
        raise ReplayError(
            f"--start {start}: no room for a {holdout}-day holdout and a training window after "
            f"the use-case's first day {usecase.start_date}"
        )
    conf = {"window_end": window_end.isoformat(), "window_days": days, "reason": "replay: first"}
    return TrainingRequest.from_conf(conf, usecase)


def wants_retraining(policy: str, night: dt.date, start: dt.date, verdict: Verdict) -> bool:
    """Whether the policy retrains after judging `night` (the new version scores the next)."""
    if policy == NEVER:
        return False
    if policy == NIGHTLY:
        return True
    if policy == MONTHLY:  # the first night of each month after the first champion's
        return night.day == 1 and (night.year, night.month) != (start.year, start.month)
    if policy == DRIFT:
        return verdict.fires
    raise ReplayError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")


def retraining_request(
    usecase: UseCase, policy: str, night: monitoring.NightSummary, verdict: Verdict
) -> TrainingRequest:
    """The conf <usecase>_training would get: the sensor's for `drift`, the same window (its
    holdout ending on the night) for the calendar policies."""
    if policy != DRIFT:  # a calendar trains on the configured window, whatever the rule says
        verdict = replace(verdict, window=None)
    conf = monitoring.retraining_conf(usecase, night, verdict)
    if policy != DRIFT:
        conf = {k: conf[k] for k in ("window_end", "window_days")} | {"reason": f"replay: {policy}"}
    return TrainingRequest.from_conf(conf, usecase)


def night_quality(
    usecase: UseCase, settings: Settings, night: dt.date
) -> tuple[str, int, int, dict[str, float] | None]:
    """The predictions made ahead for the night's day, on its labels: (the versions that made
    them, rows, labelled rows, quality; None when too few are labelled to judge)."""
    made = predictions.stored(usecase, settings, Days(night, night))
    labels = etl.read_curated(usecase, settings, night, night)[[usecase.key, usecase.label.name]]
    joined = made.merge(labels, on=usecase.key, how="inner")
    versions = ",".join(sorted(made[predictions.MODEL_VERSION].astype(str).unique()))
    known = joined[joined[usecase.label.name].notna()]
    if len(known) < usecase.monitoring.rule.min_labelled_rows:
        return versions, len(made), len(known), None
    y_true = known[usecase.label.name].astype(int).to_numpy()
    return versions, len(made), len(known), evaluation.quality(y_true, known[PREDICTION].to_numpy())


def recorded_nights(path: Path) -> list[NightRecord]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [NightRecord.from_csv(row) for row in csv.DictReader(handle)]


def _append(path: Path, record: NightRecord) -> None:
    """One row per finished night, flushed: an interrupted replay resumes after the last (in
    the columns its file began with: one begun by an older driftline lacks the newer ones)."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = COLUMNS
    if not new:
        with path.open(newline="") as handle:
            columns = next(csv.reader(handle), COLUMNS)
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(asdict(record))
        handle.flush()
        os.fsync(handle.fileno())


def _night_before(usecase: UseCase, day: dt.date) -> dt.date:
    """The night that scores `day` ahead."""
    night = day
    while usecase.scored_day(night) > day:
        night -= dt.timedelta(days=1)
    return night


def _nights(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    day = start
    while day <= end:
        yield day
        day += dt.timedelta(days=1)


def replay(
    usecase: UseCase,
    base: Settings,
    policy: str,
    start: dt.date,
    end: dt.date,
    out: Path,
    progress: Callable[[NightRecord], None] = lambda record: None,
) -> list[NightRecord]:
    """Replay `start`..`end` under `policy`; returns every night's record (resumed ones too).

    The policy's nights.csv gets a row as each night ends; a rerun continues after the last
    recorded night (the stores hold everything up to it), or refuses if it began elsewhere.
    """
    if policy not in POLICIES:
        raise ReplayError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
    if end < start:
        raise ReplayError(f"--end {end} is before --start {start}")
    settings = policy_settings(base, out, policy, usecase)
    with _only_replay_of(settings.home, policy):
        return _replay(usecase, settings, policy, start, end, progress)


@contextmanager
def _only_replay_of(home: Path, policy: str) -> Iterator[None]:
    """One replay per policy home at a time: two would both resume after the same night."""
    with (home / ".replay.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ReplayError(f"another replay of {policy} is running in {home}") from exc
        yield


def _replay(
    usecase: UseCase,
    settings: Settings,
    policy: str,
    start: dt.date,
    end: dt.date,
    progress: Callable[[NightRecord], None],
) -> list[NightRecord]:
    path = settings.home / NIGHTS_FILE
    records = recorded_nights(path)
    if records and records[0].night != start:
        raise ReplayError(
            f"{path} is a replay from {records[0].night}, not {start}: choose another --out "
            f"or remove {settings.home}"
        )
    if not records:
        began = time.perf_counter()
        result = training.train(usecase, settings, first_request(usecase, start), DAG_ID, "first")
        if not result["promoted"]:
            raise ReplayError(f"the first champion was not promoted: {result['reason']}")
        log.info(
            "%s: first champion v%s in %.1f s",
            policy,
            result["version"],
            time.perf_counter() - began,
        )
        # the night before the first: the first champion scores the first night's day ahead
        scoring.score_ahead(usecase, settings, _night_before(usecase, start))
    champion = None  # the previous night's, loaded once
    resume = records[-1].night + dt.timedelta(days=1) if records else start
    for night in _nights(resume, end):
        began = time.perf_counter()
        steps = monitoring.run_night(usecase, settings, night, champion)
        champion = steps.champion
        if steps.not_scored:  # the night is judged all the same, as in the DAG
            log.warning("%s %s: not scored ahead: %s", policy, night, steps.not_scored)
        if steps.not_judged:
            log.warning("%s %s: not judged: %s", policy, night, steps.not_judged)
            continue
        judged, verdict = steps.summary, steps.verdict
        made_by, rows, labelled, quality = night_quality(usecase, settings, night)
        record = NightRecord(
            policy=policy,
            night=night,
            champion_version=made_by,
            rows=rows,
            labelled=labelled,
            roc_auc=quality["roc_auc"] if quality else None,
            log_loss=quality["log_loss"] if quality else None,
            drift_share=judged.drift_share,
            decision=verdict.decision,
            retrained=wants_retraining(policy, night, start, verdict),
        )
        if record.retrained:
            request = retraining_request(usecase, policy, judged, verdict)
            trained_at = time.perf_counter()
            result = training.train(usecase, settings, request, DAG_ID, f"{policy}__{night}")
            record = replace(
                record,
                new_version=result["version"],
                promoted=result["promoted"],
                training_seconds=round(time.perf_counter() - trained_at, 2),
                window_start=request.window_start,
                window_end=request.window_end,
            )
        record = replace(record, night_seconds=round(time.perf_counter() - began, 2))
        _append(path, record)
        records.append(record)
        progress(record)
    return records
