"""Nightly monitoring DAGs: one `<usecase>_monitoring` per use-case with a `training` section.

The champion scores the coming day ahead and publishes the predictions, Evidently judges
drift and the stored predictions of the labelled days against the champion's own reference,
and the drift sensor starts `<usecase>_training` when the rule holds.
Wiring only: the work is in `driftline.monitoring.scoring` and `driftline.monitoring.nightly`.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, TriggerRule, dag, task
from airflow.sdk.exceptions import AirflowFailException

from drift_sensor import DriftSensor
from driftline.config import PREDICTIONS_URL_ENV, Settings, UseCase, list_usecases
from driftline.operator.alerts import on_retraining_started
from driftline_defaults import default_args, night_deadline, nightly, with_links
from driftline_ui import DriftReportLink, QualityReportLink

DEFAULT_ARGS = default_args(execution_timeout=dt.timedelta(minutes=30))

DOC = """
### {name}: scoring ahead, drift report and the drift sensor

Each run is the night after the same **{tz}** day as the `{name}_etl` run of its date. It

1. **wait_for_partition**: waits (rescheduling, no slot held) for the day's curated partition
   (the day's labels: {labels});
2. **score_ahead**: the `champion` of `{model}` scores {ahead}, before their outcome exists.
   The rows pass the features-only suite first (refused: quarantined in `{checks}/<day>/`);
   the predictions are published, replacing an earlier run's: a Parquet partition in
   `{predictions}` and the table `predictions` of `{predictions_db}`, each row with the key, the
   probability, the model version and when it was scored;
3. **report_drift**: Evidently compares the rows scored ahead ({current} day(s) up to the newest)
   with the champion's own training reference: drift of the features and of the prediction;
   and judges the stored predictions of the days whose labels have arrived (ROC AUC / log
   loss), each as made, by the version that made it: nothing is re-scored. HTML + JSON in
   `{reports}/<day>/`, the figures and the days and versions they judged in the drift history
   (`driftline history`), the snapshots in the Evidently workspace `{workspace}`;
4. **drift_sensor**: the rule: drift share >= {share} on {k} of the last {n} nights{quality};
   {cooldown}; never after a failed validation.{onset}
   The decision (fired / skipped: quiet / skipped: cool-down / skipped: waiting for the new
   regime / skipped: validation failed) is recorded in the drift history. Not firing skips
   the next task; the run stays green;
5. **trigger_retraining**: starts `{name}_training` (run id `drift__<day>`) with the evidence
   in its conf: day, report, drift share, drifted columns, quality figures, reason `drift`,
   and sends one drift alert with that evidence (alerts on: README, Alerts). A rerun of a
   night whose retraining exists already skips this task: no second training, no alert.

**When it fails**
- *wait_for_partition*: the day's ETL has not loaded it (or its validation failed: see the
  quarantine); fix and rerun `{name}_etl` for the day, then clear this run.
- *score_ahead*: no champion yet (train one: trigger `{name}_training`); the rows to score
  were refused (the message names every failed expectation; they are quarantined, nothing
  was published); or the champion could not be loaded (the message names the version; the
  alias is untouched). The night is still reported and judged, and *not_scored_ahead* turns
  red so that the run does too; once the source is fixed, clear score_ahead (downstream too).
- *report_drift*: the day has no rows, or the champion has no reference; the message says which.
- A rerun of a night replaces its predictions, reports and history row, and does not start a
  second retraining for it.
"""


def monitoring_dag(usecase: UseCase, settings: Settings) -> DAG:
    monitoring = usecase.monitoring
    rule = monitoring.rule
    schedule, start, end = nightly(usecase)
    # the day a run covers, as in the ETL: its data interval start, in the use-case's zone
    day = "{{ run_day(data_interval_start) }}"

    @dag(
        dag_id=f"{usecase.name}_monitoring",
        schedule=schedule,
        start_date=start,
        end_date=end,
        catchup=False,
        max_active_runs=1,  # nights in order: the rule reads the nights before
        default_args=DEFAULT_ARGS,
        user_defined_macros={"run_day": usecase.run_day},
        deadline=night_deadline(usecase),
        tags=["driftline", "monitoring", usecase.name],
        doc_md=DOC.format(
            name=usecase.name,
            tz=usecase.timezone,
            model=usecase.training.registered_model,
            predictions=settings.predictions_path(usecase.name, dt.date.min).parent.parent,
            predictions_db=f"${PREDICTIONS_URL_ENV} (unset: {settings.home / 'predictions.db'})",
            checks=settings.scoring_checks_dir(usecase.name, dt.date.min).parent,
            labels=(
                "with the day's ETL"
                if usecase.scoring.label_delay_days == 0
                else f"{usecase.scoring.label_delay_days} day(s) after it"
            ),
            ahead=(
                "the next day's rows, read from the source with their features"
                if usecase.scoring.ahead == "next_day"
                else "the day just loaded"
            ),
            current=monitoring.current_days,
            reports=settings.reports_dir(usecase.name, dt.date.min).parent,
            workspace=settings.evidently_workspace,
            share=rule.drift_share,
            k=rule.nights_drifted,
            n=rule.nights_window,
            quality=(
                f", or ROC AUC more than {rule.quality_drop} below the champion's holdout"
                if rule.quality_drop
                else ""
            ),
            cooldown=(
                f"cool-down {rule.cooldown_days} days since the last retraining"
                if rule.retry_days is None
                else f"cool-down {rule.cooldown_days} days since the champion's training, "
                f"{rule.retry_days} after a retraining the gate refused"
            ),
            onset=(
                f"\n   It trains from the shift's onset, once that leaves {rule.min_window_days} "
                "days before the holdout (until then: waiting)."
                if rule.from_onset
                else ""
            ),
        ),
    )
    def pipeline() -> None:
        @task.sensor(poke_interval=300, timeout=12 * 3600, mode="reschedule")
        def wait_for_partition(day: str) -> bool:
            from driftline.monitoring import nightly as night

            try:
                return night.partition_ready(usecase, settings, dt.date.fromisoformat(day))
            except night.MonitoringError as exc:
                raise AirflowFailException(str(exc)) from exc

        @task
        def score_ahead(day: str) -> dict:
            from driftline.ingest.validation import BatchRejectedError
            from driftline.monitoring import scoring

            try:
                return scoring.score_ahead(usecase, settings, dt.date.fromisoformat(day)).as_dict()
            except (
                scoring.NoChampionError,
                scoring.MissingPartitionError,
                BatchRejectedError,
            ) as exc:
                raise AirflowFailException(str(exc)) from exc

        # also after a failed score_ahead: tonight's labels are judged even when tomorrow's
        # rows were refused (that task stays red, so the run does too)
        @task(trigger_rule=TriggerRule.ALL_DONE)
        def report_drift(day: str) -> dict:
            from driftline.monitoring import nightly as night
            from driftline.monitoring.scoring import NoChampionError

            try:
                summary = night.report_champion_night(usecase, settings, dt.date.fromisoformat(day))
            except (night.MonitoringError, NoChampionError) as exc:
                raise AirflowFailException(str(exc)) from exc
            return summary.as_dict()

        # AirflowFailException: never retried; no alert of its own: score_ahead's failure
        # (or quarantine) alert is the one of this event
        @task(trigger_rule=TriggerRule.ONE_FAILED, on_failure_callback=None)
        def not_scored_ahead() -> None:
            """Red when score_ahead failed, skipped otherwise: a leaf, so that the run is red
            too (report_drift runs after a failed score_ahead, and would end the run green)."""
            raise AirflowFailException(
                "score_ahead failed: the coming day's predictions were not published (its log "
                "says why); the night was still judged"
            )

        drift_sensor = DriftSensor(
            task_id="drift_sensor",
            usecase=usecase.name,
            day=day,
            poke_interval=60,
            timeout=3600,
            trigger_poll_seconds=10,
        )
        trigger_retraining = TriggerDagRunOperator(
            task_id="trigger_retraining",
            trigger_dag_id=f"{usecase.name}_training",
            trigger_run_id=f"drift__{day}",
            conf=drift_sensor.output,
            logical_date=None,
            skip_when_already_exists=True,  # a rerun of the night starts no second training
            openlineage_inject_parent_info=False,  # the training DAG refuses unknown conf keys
            on_success_callback=on_retraining_started(usecase.name),  # the drift alert, once
        )
        scored = score_ahead(day)
        reported = report_drift(day)
        wait_for_partition(day) >> scored >> reported
        scored >> not_scored_ahead()
        with_links(
            reported,
            DriftReportLink(usecase=usecase.name, timezone=usecase.timezone),
            QualityReportLink(usecase=usecase.name, timezone=usecase.timezone),
        )
        reported >> drift_sensor >> trigger_retraining

    return pipeline()


_settings = Settings.from_env()
# A wrong config is left out here (its DAGs with it): usecase_configs.py shows its problems.
for _usecase in list_usecases(_settings, skip_broken=True):
    if _usecase.training is not None:
        globals()[f"{_usecase.name}_monitoring"] = monitoring_dag(_usecase, _settings)
