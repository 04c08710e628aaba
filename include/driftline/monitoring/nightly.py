"""A monitored night: the champion's reference, the night's reports, its history row, and
the drift rule's verdict with the evidence a retraining carries.

The monitoring DAG calls these functions one per task; `driftline monitor` and the replay
call them through `run_night`, in a loop over a range of nights, without Airflow.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from driftline import storage
from driftline.config import PREDICTION, Settings, UseCase
from driftline.ingest import etl
from driftline.monitoring import drift_report, judged_rows
from driftline.monitoring.drift_rule import (
    DRIFT_SHARE_RULE,
    QUALITY_DROP_RULE,
    Verdict,
    judge,
    training_window,
    with_window,
)
from driftline.monitoring.history import (
    PREDICTION_REFERENCE_HOLDOUT,
    PREDICTION_REFERENCE_TRAINING,
    DriftHistory,
    NightSummary,
)
from driftline.serving import predictions
from driftline.serving.predictions import MODEL_VERSION
from driftline.training import registry, stages

if TYPE_CHECKING:  # imported where used, as by report_champion_night
    from driftline.monitoring.scoring import LoadedVersion, ScoredDay

log = logging.getLogger(__name__)

DRIFT, QUALITY = "drift", "quality"  # the report files of a night: drift.html, quality.json, ...
SUMMARY_FILE = "summary.json"
TRIGGER_REASON = "drift"


class MonitoringError(RuntimeError):
    """A night cannot be judged (no rows, no reference); the message says what is missing."""


@dataclass(frozen=True)
class ChampionFacts:
    """What a night's report needs to know about the version that scored it."""

    version: str
    run_id: str
    reference_md5: str
    holdout_roc_auc: float | None
    window_end: dt.date | None
    holdout_end: dt.date | None = None  # the night it was trained on, when the sensor started it


def champion_facts(usecase: UseCase, settings: Settings, version: str) -> ChampionFacts:
    info = registry.version_info(settings, usecase, version)
    reference_md5 = info["run_tags"].get(f"dvc_md5.{registry.REFERENCE_FILE}")
    if not reference_md5:
        raise MonitoringError(
            f"{usecase.training.registered_model} version {version} has no drift reference "
            f"(tag dvc_md5.{registry.REFERENCE_FILE}): retrain it with this driftline"
        )
    # logged from the version's DVC params
    window_end, holdout_end = (info["params"].get(k) for k in ("window_end", "holdout_end"))
    return ChampionFacts(
        version=version,
        run_id=info["run_id"],
        reference_md5=reference_md5,
        holdout_roc_auc=info["metrics"].get("roc_auc"),
        window_end=dt.date.fromisoformat(window_end) if window_end else None,
        holdout_end=dt.date.fromisoformat(holdout_end) if holdout_end else None,
    )


def reference_sample(usecase: UseCase, settings: Settings, champion: ChampionFacts) -> pd.DataFrame:
    """The version's drift reference: fetched from its MLflow run once, then read locally.

    The local copy is checked against the DVC md5 recorded on the run, so the report always
    compares against exactly the sample that version was trained with.
    """
    local = settings.reference_path(usecase.name, champion.version)
    if not local.exists() or _md5(local) != champion.reference_md5:
        with tempfile.TemporaryDirectory() as scratch:
            fetched = Path(
                registry.client(settings).download_artifacts(
                    champion.run_id, registry.REFERENCE_ARTIFACT, scratch
                )
            )
            if _md5(fetched) != champion.reference_md5:
                raise MonitoringError(
                    f"the reference of version {champion.version} in MLflow run "
                    f"{champion.run_id} does not match its DVC md5 {champion.reference_md5}"
                )
            local.parent.mkdir(parents=True, exist_ok=True)
            with storage.atomic_path(local) as temporary:
                temporary.write_bytes(fetched.read_bytes())
    return pd.read_parquet(local)


@dataclass(frozen=True)
class DriftReference:
    """A version's drift reference, split by what each part is the reference of."""

    features: pd.DataFrame  # a seeded sample of its training rows
    predictions: pd.Series  # its predictions on rows it was not trained on (see `kind`)
    kind: str  # PREDICTION_REFERENCE_HOLDOUT, or _TRAINING for a version made before them


def split_reference(frame: pd.DataFrame) -> DriftReference:
    """The features' and the prediction's reference, from the layout of stages.reference_rows.

    A reference made before the holdout's predictions were kept has training rows only, with
    in-sample predictions: still usable for the features, and said to be so for the
    prediction (it reads as drift on most nights).
    """
    if stages.REFERENCE_PART not in frame.columns:
        return DriftReference(frame, frame[PREDICTION], PREDICTION_REFERENCE_TRAINING)
    part = frame[stages.REFERENCE_PART]
    features = frame[part == stages.TRAINING_PART].drop(columns=[stages.REFERENCE_PART, PREDICTION])
    predictions = frame.loc[part == stages.HOLDOUT_PART, PREDICTION]
    if features.empty or predictions.empty:
        raise MonitoringError(
            f"the drift reference has {len(features)} training and {len(predictions)} "
            "holdout rows: both must be non-empty"
        )
    return DriftReference(
        features.reset_index(drop=True),
        predictions.reset_index(drop=True),
        PREDICTION_REFERENCE_HOLDOUT,
    )


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _partition_exists(usecase: UseCase, settings: Settings, day: dt.date) -> bool:
    return (settings.partition_dir(usecase.name, day) / etl.PARTITION_FILE).exists()


def _validation_success(usecase: UseCase, settings: Settings, day: dt.date) -> bool | None:
    """The verdict of the night's last ETL validation (None: no result recorded)."""
    result = settings.validation_result_path(usecase.name, day)
    return json.loads(result.read_text()).get("success") is True if result.exists() else None


def partition_ready(usecase: UseCase, settings: Settings, day: dt.date) -> bool:
    """Whether the night's curated partition is there to score; a night whose only ETL run
    failed validation will not get one, which is an error, not a reason to wait."""
    if _partition_exists(usecase, settings, day):
        return True
    if _validation_success(usecase, settings, day) is False:
        raise MonitoringError(
            f"{usecase.name} {day}: the ETL validation failed and nothing was loaded (see "
            f"{settings.quarantine_dir(usecase.name, day)}); fix the source, rerun "
            f"{usecase.name}_etl for the day, then clear this run"
        )
    return False


def scored_rows(usecase: UseCase, settings: Settings, night: dt.date) -> pd.DataFrame:
    """The drift report's current data: the rows scored ahead in the trailing window that
    ends on the night's newest scored day, as stored (features, prediction, version). The
    use-case's last night scores nothing ahead: its window ends on the last day."""
    newest = min(usecase.scored_day(night), usecase.end_date or dt.date.max)
    days = judged_rows.drift_days(newest, usecase.monitoring.current_days)
    rows = predictions.stored(usecase, settings, days)
    if rows.empty:
        raise MonitoringError(
            f"{usecase.name} {night}: no predictions stored for {days}: the night's scoring "
            "ahead has not run (score_ahead)"
        )
    return rows


def judged_predictions(
    usecase: UseCase, settings: Settings, night: dt.date
) -> tuple[pd.DataFrame, judged_rows.Days]:
    """The predictions the night's quality judges: those stored for the trailing window of
    days whose labels have arrived, joined by key with those labels, each made ahead by a
    version whose training window ends before its day. Returns them and the window."""
    last = usecase.last_labelled_day(night)
    days = judged_rows.drift_days(last, usecase.monitoring.current_days)
    made = predictions.stored(usecase, settings, days)
    labels = etl.read_curated(usecase, settings, days.first, days.last)
    key, label = usecase.key, usecase.label.name
    joined = made.merge(labels[[key, label]], on=key, how="inner")
    window_ends = {
        version: champion_facts(usecase, settings, version).window_end
        for version in joined[MODEL_VERSION].astype(str).unique()
    }
    eligible = judged_rows.after_window(joined["day"], joined[MODEL_VERSION], window_ends)
    return drift_report.labelled(joined[eligible], usecase), days


def report_night(
    usecase: UseCase, settings: Settings, night: dt.date, version: str
) -> NightSummary:
    """Reports of the night by `version` (the champion that scored ahead tonight), saved and
    recorded; nothing is re-scored.

    Feature drift judges the rows scored in the trailing window ending on the newest scored
    day; the prediction's drift, those of them `version` made after its training window
    (against its holdout predictions). Quality judges the stored predictions of the days whose
    labels have arrived, each by the version that made it (none below
    `monitoring.rule.min_labelled_rows`); the history row says which days and versions.
    Writes reports/<usecase>/<night>/{drift,quality}.{html,json} and summary.json, adds the
    snapshots to the Evidently workspace, and replaces the night's drift-history row.
    """
    from driftline.monitoring import dashboard

    monitoring = usecase.monitoring
    champion = champion_facts(usecase, settings, version)
    reference = split_reference(reference_sample(usecase, settings, champion))
    current = scored_rows(usecase, settings, night)
    drift_days = judged_rows.Days(current["day"].min(), current["day"].max())
    own = judged_rows.after_window(
        current["day"], current[MODEL_VERSION], {version: champion.window_end}
    )
    judged_current = current.assign(**{PREDICTION: current[PREDICTION].where(own)})
    prediction_rows = int(own.sum())
    labelled, label_days = judged_predictions(usecase, settings, night)
    judged = judged_rows.quality_judged(len(labelled), monitoring.rule.min_labelled_rows)
    quality_days = (
        judged_rows.Days(labelled["day"].min(), labelled["day"].max()) if len(labelled) else None
    )
    quality_versions = {
        str(v): int(n) for v, n in labelled[MODEL_VERSION].astype(str).value_counts().items()
    }
    stamp = dt.datetime.combine(night, dt.time(23, 59), tzinfo=usecase.tz)
    facts = {"night": night.isoformat(), "model_version": version}
    drift = drift_report.drift_report(
        drift_report.drift_reference(reference.features, reference.predictions),
        judged_current[[*usecase.scoring_columns, PREDICTION]],
        usecase,
        monitoring.tests,
        stamp,
        metadata={
            **facts,
            "drift_days": str(drift_days),
            "drift_rows": str(len(current)),
            "feature_reference": f"{len(reference.features)} training rows",
            "prediction_rows": f"{prediction_rows} made by version {version}",
            "prediction_reference": f"{len(reference.predictions)} {reference.kind} predictions",
        },
    )
    quality = None
    if judged:
        quality = drift_report.quality_report(
            labelled[[*usecase.scoring_columns, PREDICTION, usecase.label.name]],
            usecase,
            stamp,
            metadata={
                **facts,
                "quality_days": str(quality_days),
                "quality_rows": str(len(labelled)),
                "labelled_days": str(label_days),
                "made_by_versions": json.dumps(quality_versions, sort_keys=True),
            },
        )
    figures = drift_report.summarize(drift.dict(), quality.dict() if quality else None)

    folder = settings.reports_dir(usecase.name, night)
    html, json_path = drift_report.save(drift, folder, DRIFT)
    if quality is not None:
        drift_report.save(quality, folder, QUALITY)
    else:  # an earlier run's quality report of the night no longer holds
        for stale in (folder / f"{QUALITY}.html", folder / f"{QUALITY}.json"):
            stale.unlink(missing_ok=True)
    history = DriftHistory(settings.history_url)
    try:
        earlier = history.night(usecase.name, night)
        runs = dashboard.record(
            settings,
            usecase,
            night,
            [drift, *([quality] if quality else [])],
            replace=earlier.evidently_runs if earlier else [],
        )
        summary = NightSummary(
            usecase=usecase.name,
            day=night,
            model_version=version,
            reference_md5=champion.reference_md5,
            rows=len(current),
            dataset_drift=figures.dataset_drift,
            drift_share=figures.drift_share,
            drifted_columns=figures.drifted_columns,
            roc_auc=figures.roc_auc,
            log_loss=figures.log_loss,
            champion_holdout_roc_auc=champion.holdout_roc_auc,
            report_html=str(html),
            report_json=str(json_path),
            evidently_runs=runs,
            drift_first_day=drift_days.first,
            drift_last_day=drift_days.last,
            quality_first_day=quality_days.first if quality_days else None,
            quality_last_day=quality_days.last if quality_days else None,
            quality_rows=len(labelled),
            quality_judged=judged,
            quality_versions=quality_versions,
            prediction_rows=prediction_rows,
            prediction_reference=reference.kind,
        )
        storage.write_json(
            {
                **summary.as_dict(),
                "drift_basis": summary.drift_basis(),
                "quality_basis": summary.quality_basis(),
                "window_end": str(champion.window_end),
                "column_scores": figures.column_scores,
            },
            folder / SUMMARY_FILE,
        )
        history.record(summary)
    finally:
        history.dispose()
    log.info(
        "%s %s: version %s, drift share %.2f, drifted %s, ROC AUC %s (%s); report %s",
        usecase.name,
        night,
        version,
        figures.drift_share,
        figures.drifted_columns,
        "n/a" if figures.roc_auc is None else f"{figures.roc_auc:.4f}",
        summary.quality_basis(),
        html,
    )
    if reference.kind != PREDICTION_REFERENCE_HOLDOUT:
        log.warning(
            "%s %s: version %s has no holdout predictions in its reference (trained before "
            "they were kept): the prediction's drift is judged against in-sample predictions",
            usecase.name,
            night,
            version,
        )
    return summary


def report_champion_night(usecase: UseCase, settings: Settings, night: dt.date) -> NightSummary:
    """The night's reports by the current champion, whether or not tonight's scoring ahead
    succeeded: a refused next day must not cost the night its judgement. The night's own
    partition (its labels) must be there."""
    from driftline.monitoring import scoring

    if not partition_ready(usecase, settings, night):
        raise MonitoringError(
            f"{usecase.name} {night}: no curated partition: run {usecase.name}_etl for the day"
        )
    return report_night(usecase, settings, night, scoring.champion_version(usecase, settings))


def validation_passed(usecase: UseCase, settings: Settings, day: dt.date) -> bool:
    """Whether the night's last ETL validation passed (a failed rerun leaves the old partition
    in place, but no retraining may start from that night)."""
    success = _validation_success(usecase, settings, day)
    return _partition_exists(usecase, settings, day) if success is None else success


def night_recorded(settings: Settings, usecase_name: str, day: dt.date) -> bool:
    """Whether the night's report is in the drift history (what the drift sensor waits for;
    the trigger polls it, so it reads no use-case config)."""
    history = DriftHistory(settings.history_url)
    try:
        return history.night(usecase_name, day) is not None
    finally:
        history.dispose()


def decide_night(
    usecase: UseCase, settings: Settings, day: dt.date
) -> tuple[Verdict, NightSummary]:
    """Judge the night by the rule and record the decision on its history row.

    With `retry_days` the cool-down counts from the champion's training (the last day of its
    holdout: the night the sensor started it; a retraining by hand counts too) and the retry
    wait from the last firing whose retraining did not make the champion; without, from the
    later of the last firing and the champion's window end. A firing names its window
    (drift_rule.with_window): from the shift's onset, when the rule says so.
    """
    rule, training = usecase.monitoring.rule, usecase.training
    history = DriftHistory(settings.history_url)
    try:
        night = history.night(usecase.name, day)
        if night is None:
            raise MonitoringError(f"{usecase.name} {day}: no report recorded; run the report first")
        champion = champion_facts(usecase, settings, night.model_version)
        # back to where a window could start: an onset before that changes nothing
        look_back = rule.nights_window + training.window_days + training.holdout_days
        nights = history.nights(usecase.name, day, look_back)
        last_fired = history.last_fired(usecase.name, before=day)
        if rule.retry_days is None:  # any firing starts the cool-down, whatever the gate said
            last_training, last_fired = _later(last_fired, champion.window_end), None
        else:
            last_training = champion.holdout_end or champion.window_end
        passed = validation_passed(usecase, settings, day)
        verdict = judge(rule, nights, day, last_training, passed, last_fired=last_fired)
        verdict = with_window(
            verdict,
            rule,
            nights,
            day,
            training.holdout_days,
            training.window_days,
            usecase.start_date,
        )
        history.decide(usecase.name, day, verdict.decision, verdict.reason, verdict.fired_by)
        _decision_into_summary(settings.reports_dir(usecase.name, day) / SUMMARY_FILE, verdict)
    finally:
        history.dispose()
    log.info("%s %s: %s (%s)", usecase.name, day, verdict.decision, verdict.reason)
    return verdict, night


def _decision_into_summary(path: Path, verdict: Verdict) -> None:
    """The night's summary.json, beside its reports, says what the sensor decided and which
    rule held, so the reports' folder tells the same story as the history row."""
    if path.exists():
        summary = json.loads(path.read_text())
        summary.update(
            decision=verdict.decision,
            decision_reason=verdict.reason,
            fired_by=list(verdict.fired_by),
        )
        storage.write_json(summary, path)


@dataclass(frozen=True)
class NightResult:
    """What a night's steps did, for a loop over nights to show and act on."""

    night: dt.date
    champion: LoadedVersion  # the night's champion, loaded: hand it to the next night's run
    scored: ScoredDay | None = None  # None: the coming day was not scored ahead
    not_scored: str | None = None  # why not (the night is judged all the same, as in the DAG)
    not_judged: str | None = None  # why the night has no report, hence no verdict
    summary: NightSummary | None = None  # the night's history row, as the rule judged it
    verdict: Verdict | None = None


def run_night(
    usecase: UseCase, settings: Settings, night: dt.date, loaded: LoadedVersion | None = None
) -> NightResult:
    """One night of the monitoring DAG in-process, with its tasks' functions: the partition
    check, the champion scoring the coming day ahead, the night's reports, the rule's verdict.

    What fails a task of the DAG without stopping later nights (refused rows, a night without
    its partition) is returned as a reason, so that a loop over nights goes on. `loaded`: the
    previous night's champion, kept if it still is one. Retraining is the caller's to decide.
    """
    from driftline.ingest.validation import BatchRejectedError
    from driftline.monitoring import scoring

    version = scoring.champion_version(usecase, settings)
    champion = scoring.load_version(usecase, settings, version, loaded)
    try:
        partition_ready(usecase, settings, night)  # names a night whose validation failed
    except MonitoringError as exc:
        return NightResult(night, champion, not_judged=str(exc))
    scored, not_scored = None, None
    try:
        scored = scoring.score_ahead(usecase, settings, night, champion)
    except (BatchRejectedError, scoring.MissingPartitionError) as exc:
        not_scored = str(exc)
    try:
        report_champion_night(usecase, settings, night)
    except (scoring.MissingPartitionError, MonitoringError) as exc:
        return NightResult(night, champion, scored, not_scored, not_judged=str(exc))
    verdict, summary = decide_night(usecase, settings, night)
    return NightResult(night, champion, scored, not_scored, summary=summary, verdict=verdict)


def evidence_reports(night: NightSummary, fired_by: tuple[str, ...]) -> list[str]:
    """The reports that show what fired: the drift report for the drift share, the quality
    report for a quality drop (both when both held)."""
    drift = night.report_html
    quality = str(Path(drift).with_name(f"{QUALITY}.html")) if drift else None
    shown = {DRIFT_SHARE_RULE: drift, QUALITY_DROP_RULE: quality}
    return [shown[rule] for rule in fired_by if shown.get(rule)]


def retraining_conf(usecase: UseCase, night: NightSummary, verdict: Verdict) -> dict[str, Any]:
    """The conf of the `<usecase>_training` run the sensor starts: the verdict's window
    (else the newest whose holdout ends on the night: later days do not exist yet), and the
    evidence."""
    training = usecase.training
    window = verdict.window or training_window(
        usecase.monitoring.rule,
        night.day,
        None,
        training.holdout_days,
        training.window_days,
        usecase.start_date,
    )
    return {
        "window_end": window.end.isoformat(),
        "window_days": window.days,
        "reason": TRIGGER_REASON,
        "evidence": {
            "day": night.day.isoformat(),
            "onset": window.onset.isoformat() if window.onset else None,
            "model_version": night.model_version,
            "reference_md5": night.reference_md5,
            "fired_by": list(verdict.fired_by),
            "report": (evidence_reports(night, verdict.fired_by) or [night.report_html])[0],
            "reports": evidence_reports(night, verdict.fired_by),
            "report_json": night.report_json,
            "drift_share": night.drift_share,
            "drifted_columns": night.drifted_columns,
            "roc_auc": night.roc_auc,
            "log_loss": night.log_loss,
            "champion_holdout_roc_auc": night.champion_holdout_roc_auc,
            "drift_basis": night.drift_basis(),
            "quality_basis": night.quality_basis(),
            "rule": verdict.reason,
        },
    }


def _later(*days: dt.date | None) -> dt.date | None:
    known = [d for d in days if d is not None]
    return max(known) if known else None
