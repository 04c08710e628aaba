"""flights_monitoring through real Airflow: scoring ahead, Evidently reports on the stored
predictions, the deferrable DriftSensor and the retraining it triggers; then the monitoring
core's edge cases in-process.

One state folder for the module, in order: no champion yet, a January champion (which scores
1..10 February ahead, night by night), a night that fires, a quiet night, then a promotion and
the bad inputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml

from driftline import storage
from driftline.config import PREDICTION, load_usecase, parse_usecase
from driftline.ingest import etl
from driftline.monitoring import nightly as monitoring
from driftline.monitoring import scoring
from driftline.monitoring.history import (
    DRIFT_HISTORY,
    FIRED,
    PREDICTION_REFERENCE_HOLDOUT,
    PREDICTION_REFERENCE_TRAINING,
    DriftHistory,
)
from driftline.monitoring.judged_rows import Days
from driftline.operator import alerts
from driftline.training import pipeline as training
from driftline.training import registry
from driftline.training.request import TrainingRequest
from tests.alert_receiver import alert_receiver, connection_env
from tests.conftest import REPO, repo_settings
from tests.integration.conftest import curated_env, run, run_date

pytestmark = pytest.mark.integration

# Monitoring configs that make the rule hold on any night (hair-trigger tests), or never. A
# firing trains on the configured window at once (flights ships from_onset and retry_days).
FIRING = {"rule": {"drift_share": 0.05, "nights_drifted": 1, "nights_window": 1,
                   "cooldown_days": 0, "from_onset": False, "retry_days": None},
          "tests": {"num_threshold": 0.01, "cat_threshold": 0.01}}
QUIET = {"rule": {"drift_share": 1.0, "nights_drifted": 1, "nights_window": 1,
                  "quality_drop": None, "cooldown_days": 0}}


@pytest.fixture(scope="module")
def env(tmp_path_factory, seeded_source, curated_days) -> dict[str, str]:
    """Airflow home + a curated store holding 1 January .. 14 February 2013."""
    return curated_env(
        tmp_path_factory.mktemp("monitoring"), seeded_source, curated_days, dt.date(2013, 2, 14)
    )


@pytest.fixture(scope="module")
def state(env):
    settings = repo_settings(Path(env["DRIFTLINE_HOME"]))
    return settings, load_usecase("flights", settings)


def with_rule(env: dict[str, str], override: dict) -> dict[str, str]:
    """The environment with a use-case folder whose monitoring sections are overridden."""
    name = "firing" if override is FIRING else "quiet"
    folder = Path(env["DRIFTLINE_HOME"]).parent / f"usecases-{name}"
    folder.mkdir(exist_ok=True)
    config = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    for section, values in override.items():
        config["monitoring"][section] = {**config["monitoring"][section], **values}
    (folder / "flights.yaml").write_text(yaml.safe_dump(config))
    return {**env, "DRIFTLINE_USECASES_DIR": str(folder)}


def monitor(env: dict[str, str], day: dt.date, alerts_to: str | None = None):
    """`airflow dags test` of the night; with alerts sent to the webhook `alerts_to`."""
    env = {**env, **connection_env(alerts_to)} if alerts_to else env
    done = run(env, "airflow", "dags", "test", "flights_monitoring", run_date(day))
    return done, done.stdout + done.stderr


def training_runs(env: dict[str, str]) -> dict[str, dict]:
    database = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT run_id, conf FROM dag_run WHERE dag_id = 'flights_training'").fetchall()
    return {run_id: json.loads(conf) for run_id, conf in rows}


def history_rows(settings, day: dt.date) -> int:
    ledger = DriftHistory(settings.history_url)
    try:
        with ledger.engine.connect() as conn:
            return len(conn.execute(
                DRIFT_HISTORY.select().where(DRIFT_HISTORY.c.day == day)).all())
    finally:
        ledger.dispose()


def test_without_a_champion_scoring_fails_with_a_clear_message(env, state):
    with alert_receiver(keep=True) as (url, received):
        done, output = monitor(env, dt.date(2013, 2, 3), alerts_to=url)
    assert done.returncode != 0
    assert "flights_delay has no champion yet: trigger flights_training" in output
    assert "Traceback" not in output.split("flights_delay has no champion yet")[0][-300:]
    # one alert per task that failed for good; none for not_scored_ahead, which only repeats
    # score_ahead's failure
    failed = {a["title"].split(" failed: ")[0]: a for a in received.of(alerts.TASK_FAILED)}
    assert len(received.alerts) == len(failed) == 2, [a["title"] for a in received.alerts]
    assert set(failed) == {"[driftline] flights_monitoring.score_ahead",
                           "[driftline] flights_monitoring.report_drift"}
    body = failed["[driftline] flights_monitoring.score_ahead"]["message"]
    assert "flights_delay has no champion yet: trigger flights_training" in body
    assert re.search(r"\nrun: manual__\S+\ntry: 1 of 3\n", body), body  # failed at once
    assert "/dags/flights_monitoring/runs/" in body  # the task's log


@pytest.fixture(scope="module")
def champion(state) -> str:
    """The January champion, and its predictions of 1..10 February, each made ahead on the
    night before (31 January .. 9 February)."""
    settings, usecase = state
    request = TrainingRequest.from_conf({"window_end": "2013-01-31"}, usecase)
    version = training.train(usecase, settings, request)["version"]
    night = dt.date(2013, 1, 31)
    while night < dt.date(2013, 2, 10):
        scoring.score_ahead(usecase, settings, night)
        night += dt.timedelta(days=1)
    return version


def test_a_night_meeting_the_rule_triggers_training_with_the_evidence(env, state, champion):
    settings, _ = state
    night = dt.date(2013, 2, 10)
    with alert_receiver(keep=True) as (url, received):
        done, output = monitor(with_rule(env, FIRING), night, alerts_to=url)
    assert done.returncode == 0, output[-5000:]
    # report_drift recorded the night just before: no trigger round-trip (waiting is deferred:
    # tests/unit/monitoring/test_drift_sensor.py)
    assert "the night's report is recorded: deciding without deferring" in output

    runs = training_runs(env)
    assert list(runs) == [f"drift__{night}"]
    conf = runs[f"drift__{night}"]
    assert conf["reason"] == "drift"
    assert conf["window_end"] == "2013-02-03"  # its 7-day holdout ends on the night
    evidence = conf["evidence"]
    recorded = monitoring.DriftHistory(settings.history_url).night("flights", night)
    assert recorded.decision == FIRED
    assert evidence["day"] == "2013-02-10" and evidence["model_version"] == champion
    assert evidence["drift_share"] == pytest.approx(recorded.drift_share)
    assert evidence["drifted_columns"] == recorded.drifted_columns and recorded.drifted_columns
    assert evidence["report"] == str(settings.reports_dir("flights", night) / "drift.html")
    assert 0.5 < evidence["roc_auc"] < 0.9 and evidence["log_loss"] > 0
    assert evidence["champion_holdout_roc_auc"] == pytest.approx(
        registry.version_info(settings, load_usecase("flights", settings), champion)
        ["metrics"]["roc_auc"])
    # the January champion: quality on its predictions of the trailing week's days (made
    # ahead, all after 31 January), the prediction against its holdout's predictions
    assert recorded.quality_days == Days(dt.date(2013, 2, 4), night) and recorded.quality_judged
    assert recorded.quality_versions == {champion: recorded.quality_rows}
    # the drift judges the rows scored ahead up to the night's own: 11 February
    assert recorded.drift_days == Days(dt.date(2013, 2, 5), dt.date(2013, 2, 11))
    assert recorded.prediction_reference == PREDICTION_REFERENCE_HOLDOUT
    assert evidence["quality_basis"] == recorded.quality_basis()
    assert evidence["drift_basis"] == recorded.drift_basis()
    TrainingRequest.from_conf(conf, load_usecase("flights", settings))  # accepted
    # one alert: the drift, with the evidence the retraining got
    (fired,) = received.alerts
    assert fired["title"].startswith("[driftline] flights: drift on 2013-02-10, retraining "
                                      "2013-02-03"), fired["title"]
    body = fired["message"]
    assert body.startswith(f"event: {alerts.DRIFT_FIRED}\nuse-case: flights\nnight: 2013-02-10")
    assert f"rule: {evidence['rule']}" in body
    assert f"drift share: {evidence['drift_share']:.4f}" in body
    assert all(f"  - {column}" in body for column in evidence["drifted_columns"])
    assert f"report: {evidence['report']}" in body
    assert f"retraining window: {conf['window_days']} days ending 2013-02-03" in body

    # the same night again: its row and reports are replaced, no second training starts, and
    # no second drift alert is sent
    with alert_receiver() as (url, received):
        done, output = monitor(with_rule(env, FIRING), night, alerts_to=url)
    assert done.returncode == 0, output[-5000:]
    assert list(training_runs(env)) == [f"drift__{night}"]
    assert history_rows(settings, night) == 1
    assert received.alerts == []  # the trigger task, which alerts, skipped: the run exists


def test_the_report_names_the_drifted_columns_and_the_workspace_has_one_point(state, champion):
    settings, usecase = state
    night = monitoring.DriftHistory(settings.history_url).night("flights", dt.date(2013, 2, 10))
    html = Path(night.report_html).read_text()
    # each judged column's widget in the page an operator opens says whether it drifted
    verdicts = dict(re.findall(
        r"Drift in column '([^']+)'\", \"label\": \"Data drift (detected|not detected)", html))
    assert len(verdicts) >= 10, sorted(verdicts)
    assert sorted(c for c, verdict in verdicts.items() if verdict == "detected") == sorted(
        night.drifted_columns)
    summary = json.loads((Path(night.report_html).parent / "summary.json").read_text())
    assert summary["drifted_columns"] == night.drifted_columns
    assert summary["model_version"] == champion
    assert summary["quality_basis"] == (
        f"quality on {night.quality_rows:,} labelled predictions of 2013-02-04..2013-02-10 "
        f"(made ahead by v{champion}: {night.quality_rows:,})")

    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(settings.evidently_workspace))
    project = workspace.search_project("flights drift")[0]
    names = [workspace.get_run(project.id, s).name for s in workspace.list_runs(project.id)]
    assert sorted(n for n in names if n.startswith("2013-02-10")) == [
        "2013-02-10 drift", "2013-02-10 quality"]
    assert len(night.evidently_runs) == 2
    quality = workspace.get_run(project.id, night.evidently_runs[1])
    assert quality.metadata["quality_days"] == "2013-02-04..2013-02-10"
    assert quality.metadata["quality_rows"] == str(night.quality_rows)
    drift = workspace.get_run(project.id, night.evidently_runs[0])
    assert drift.metadata["drift_days"] == "2013-02-05..2013-02-11"
    assert drift.metadata["prediction_reference"].endswith("holdout predictions")


def test_a_quiet_night_publishes_tomorrow_before_its_outcome_and_stays_green(
    env, state, champion
):
    """11 February through Airflow, before 12 February is loaded (its ETL runs in the next
    test): the 12th's predictions are published from the source, by the champion."""
    from driftline.serving.predictions import published_rows

    settings, _ = state
    night, ahead = dt.date(2013, 2, 11), dt.date(2013, 2, 12)
    shutil.rmtree(settings.partition_dir("flights", ahead))  # no outcome of the 12th yet
    done, output = monitor(with_rule(env, QUIET), night)
    assert done.returncode == 0, output[-5000:]
    assert "skipped: quiet" in output
    assert list(training_runs(env)) == ["drift__2013-02-10"]  # nothing new
    recorded = monitoring.DriftHistory(settings.history_url).night("flights", night)
    assert recorded.decision == "skipped: quiet"
    assert not settings.partition_dir("flights", ahead).exists()
    scored = pd.read_parquet(settings.predictions_path("flights", ahead))
    assert set(scored[scoring.MODEL_VERSION]) == {champion} and len(scored) > 500
    assert "is_delayed" not in scored.columns and "arr_delay" not in scored.columns
    table = published_rows(settings, "flights", ahead)
    assert len(table) == len(scored) and set(table["model_version"]) == {champion}


def test_a_nights_quality_is_the_stored_predictions_on_the_late_labels(state, champion):
    """1 February, the January champion: the trailing week's only stored predictions are
    those of 1 February, made ahead on 31 January. The night's quality is exactly
    scikit-learn's on those predictions and the day's labels, joined by key (not a
    re-scoring); the features' drift covers the rows scored so far."""
    from sklearn.metrics import log_loss, roc_auc_score

    settings, usecase = state
    night = dt.date(2013, 2, 1)
    summary = monitoring.report_night(usecase, settings, night, champion)
    made = pd.read_parquet(settings.predictions_path("flights", night))
    labels = pd.read_parquet(settings.partition_dir("flights", night) / etl.PARTITION_FILE)
    joined = made.merge(labels[["flight_id", "is_delayed"]], on="flight_id")
    labelled = joined[joined["is_delayed"].notna()]
    assert summary.drift_days == Days(night, dt.date(2013, 2, 2))
    assert summary.quality_days == Days(night, night)
    assert summary.quality_versions == {champion: len(labelled)}
    assert summary.quality_rows == len(labelled) < len(made)
    assert summary.roc_auc == pytest.approx(
        roc_auc_score(labelled["is_delayed"].astype(int), labelled[PREDICTION]), abs=1e-9)
    assert summary.log_loss == pytest.approx(
        log_loss(labelled["is_delayed"].astype(int), labelled[PREDICTION]), abs=1e-9)
    assert summary.prediction_reference == PREDICTION_REFERENCE_HOLDOUT

    # too few labelled rows after the window: "not judged yet", no figure, no quality report
    strict = usecase.monitoring.model_copy(update={"rule": usecase.monitoring.rule.model_copy(
        update={"min_labelled_rows": len(labelled) + 1})})
    strict = usecase.model_copy(update={"monitoring": strict})
    unjudged = monitoring.report_night(strict, settings, night, champion)
    assert (unjudged.roc_auc, unjudged.log_loss, unjudged.quality_judged) == (None, None, False)
    folder = settings.reports_dir("flights", night)
    assert not (folder / "quality.html").exists() and len(unjudged.evidently_runs) == 1
    written = json.loads((folder / "summary.json").read_text())
    assert written["quality_basis"] == (
        f"quality not judged yet: {len(labelled):,} labelled predictions of 2013-02-01 "
        f"(made ahead by v{champion}: {len(labelled):,})")
    verdict, _ = monitoring.decide_night(strict, settings, night)
    assert verdict.decision == "skipped: quiet" and "quality not judged yet" in verdict.reason



def test_a_day_whose_labels_have_not_arrived_is_not_judged(state, champion):
    """A use-case whose outcomes arrive two days late: on the night of 5 February only the
    predictions of 1..3 February are judged, though 4 and 5 February have predictions."""
    settings, usecase = state
    late = usecase.model_copy(update={"scoring": usecase.scoring.model_copy(
        update={"label_delay_days": 2})})
    night = dt.date(2013, 2, 5)
    summary = monitoring.report_night(late, settings, night, champion)
    assert summary.quality_days == Days(dt.date(2013, 2, 1), dt.date(2013, 2, 3))
    on_time = monitoring.report_night(usecase, settings, night, champion)
    assert on_time.quality_days == Days(dt.date(2013, 2, 1), night)
    assert summary.quality_rows < on_time.quality_rows


def test_the_last_holdout_night_judges_exactly_the_holdout(state, champion):
    """7 February: the days judged for quality are the champion's holdout days, so its
    quality is the holdout figure; on 6 February the predictions judged for drift are the
    reference's own population (drift against in-sample predictions was there by
    construction)."""
    settings, usecase = state
    night = dt.date(2013, 2, 7)
    summary = monitoring.report_night(usecase, settings, night, champion)
    assert summary.quality_days == Days(dt.date(2013, 2, 1), night)
    assert summary.roc_auc == pytest.approx(summary.champion_holdout_roc_auc)
    # the night before: the rows scored ahead up to its next day are the holdout's
    before = monitoring.report_night(usecase, settings, night - dt.timedelta(days=1), champion)
    assert before.drift_days == Days(dt.date(2013, 2, 1), night)
    assert PREDICTION not in before.drifted_columns


def test_a_version_made_before_holdout_references_is_still_monitored_and_says_so(
    state, champion, tmp_path
):
    """An older version's reference: training rows with in-sample predictions, no parts."""
    settings, usecase = state
    name = usecase.training.registered_model
    client = registry.client(settings)
    facts = monitoring.champion_facts(usecase, settings, champion)
    model = registry.load_version(settings, name, champion)
    features = monitoring.split_reference(
        monitoring.reference_sample(usecase, settings, facts)).features
    old_layout = features.assign(
        **{PREDICTION: model.predict(features[usecase.features.all]).to_numpy()})
    path = tmp_path / "reference.parquet"
    old_layout.to_parquet(path)
    run = client.create_run(
        registry.experiment_id(settings, usecase),
        tags={f"dvc_md5.{registry.REFERENCE_FILE}": hashlib.md5(path.read_bytes()).hexdigest()})
    client.log_param(run.info.run_id, "window_end", str(facts.window_end))
    client.log_metric(run.info.run_id, "roc_auc", facts.holdout_roc_auc)
    client.log_artifact(run.info.run_id, str(path), registry.REFERENCE_ARTIFACT_DIR)
    source = client.get_model_version(name, champion).source
    old = str(client.create_model_version(name, source, run_id=run.info.run_id).version)

    # the old version scores 9 February ahead (as champion for one night), then is judged
    client.set_registered_model_alias(name, registry.CHAMPION, old)
    try:
        scoring.score_ahead(usecase, settings, dt.date(2013, 2, 8))
        summary = monitoring.report_night(usecase, settings, dt.date(2013, 2, 8), old)
    finally:
        client.set_registered_model_alias(name, registry.CHAMPION, champion)
        scoring.score_ahead(usecase, settings, dt.date(2013, 2, 8))
    assert summary.model_version == old
    assert summary.prediction_rows == len(
        pd.read_parquet(settings.predictions_path("flights", dt.date(2013, 2, 9))))
    assert summary.prediction_reference == PREDICTION_REFERENCE_TRAINING
    assert "vs in-sample training predictions (older version)" in summary.drift_basis()
    assert PREDICTION in summary.drifted_columns  # what in-sample predictions do to it
    assert summary.quality_judged and summary.roc_auc is not None  # quality does not need it


def test_the_same_night_three_times_replaces_its_predictions_in_both_stores(
    env, state, champion
):
    """Once through Airflow (the DAGs' staged steps), twice in-process (the CLI's path): the
    curated day is byte-identical, the next day's predictions are published once in the
    Parquet partition and in the SQL table, with the same probabilities; one history row."""
    from driftline.serving import predictions as published

    settings, usecase = state
    night, ahead = dt.date(2013, 2, 12), dt.date(2013, 2, 13)
    partition = settings.partition_dir("flights", night) / etl.PARTITION_FILE
    parquet = settings.predictions_path("flights", ahead)
    quiet = with_rule(env, QUIET)
    done = run(quiet, "airflow", "dags", "test", "flights_etl", run_date(night))
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    done, output = monitor(quiet, night)
    assert done.returncode == 0, output[-5000:]
    first = {"partition": partition.read_bytes(), "scored": pd.read_parquet(parquet)}
    assert len(first["scored"]) > 500
    quiet_usecase = parse_usecase(Path(quiet["DRIFTLINE_USECASES_DIR"]) / "flights.yaml")
    for _ in range(2):
        etl.run_day(usecase, settings, night, env["DRIFTLINE_FLIGHTS_SOURCE_URL"])
        scored = scoring.score_ahead(usecase, settings, night)
        monitoring.report_night(usecase, settings, night, scored.model_version)
        verdict, _ = monitoring.decide_night(quiet_usecase, settings, night)
        assert verdict.decision == "skipped: quiet"
        assert partition.read_bytes() == first["partition"]
        again = pd.read_parquet(parquet)
        pd.testing.assert_frame_equal(
            again.drop(columns="scored_at"), first["scored"].drop(columns="scored_at"))
        assert again["scored_at"].iloc[0] > first["scored"]["scored_at"].iloc[0]  # replaced
        table = published.published_rows(settings, "flights", ahead)
        assert len(table) == len(first["scored"]) and table["key"].is_unique
        assert set(table["model_version"]) == {champion}
        by_key = table.set_index("key")["probability"]
        expected = again.set_index(again["flight_id"].astype(str))[PREDICTION]
        assert (by_key.loc[expected.index] == expected).all()
    assert history_rows(settings, night) == 1
    assert list(training_runs(env)) == ["drift__2013-02-10"]  # nothing new


def test_after_a_promotion_the_next_night_uses_the_new_champions_reference(state, champion):
    settings, usecase = state
    request = TrainingRequest.from_conf(
        {"window_end": "2013-02-07", "force_promote": True, "reason": "test promotion"}, usecase)
    promoted = training.train(usecase, settings, request)
    assert promoted["promoted"] and promoted["version"] != champion
    night = dt.date(2013, 2, 14)
    assert not settings.partition_dir("flights", dt.date(2013, 2, 15)).exists()  # no outcome
    scored = scoring.score_ahead(usecase, settings, night)
    summary = monitoring.report_night(usecase, settings, night, scored.model_version)
    assert scored.day == dt.date(2013, 2, 15) and scored.model_version == promoted["version"]
    tags = registry.version_info(settings, usecase, promoted["version"])["run_tags"]
    old = registry.version_info(settings, usecase, champion)["run_tags"]
    assert summary.model_version == promoted["version"]
    assert summary.reference_md5 == tags[f"dvc_md5.{registry.REFERENCE_FILE}"]
    assert summary.reference_md5 != old[f"dvc_md5.{registry.REFERENCE_FILE}"]
    # a hair-trigger rule with a cool-down: it counts from the firing on 10 February, the
    # later of that and the new champion's window end (7 February)
    eager = usecase.monitoring.model_copy(update={"rule": usecase.monitoring.rule.model_copy(
        update={"drift_share": 0.0001, "nights_drifted": 1, "nights_window": 1,
                "cooldown_days": 14, "from_onset": False, "retry_days": None})})
    verdict, _ = monitoring.decide_night(
        usecase.model_copy(update={"monitoring": eager}), settings, night)
    assert verdict.decision == "skipped: cool-down"
    assert "the last retraining was on 2013-02-10" in verdict.reason


def test_a_missing_partition_is_awaited_then_named(state, champion):
    settings, usecase = state
    night = dt.date(2013, 2, 20)  # never loaded
    assert monitoring.partition_ready(usecase, settings, night) is False
    # a use-case that scores the day it loads cannot score a day that was not loaded
    loaded_day = usecase.model_copy(update={"scoring": usecase.scoring.model_copy(
        update={"ahead": "loaded_day"})})
    with pytest.raises(scoring.MissingPartitionError, match="no curated partition for 2013-02-20"):
        scoring.score_ahead(loaded_day, settings, night)
    storage.write_json({"success": False}, settings.validation_result_path("flights", night))
    with pytest.raises(monitoring.MonitoringError, match="ETL validation failed"):
        monitoring.partition_ready(usecase, settings, night)


def test_rows_to_score_that_fail_the_features_suite_are_quarantined_apart(
    env, state, champion
):
    """Through Airflow, the next day's source query finds no flight: score_ahead fails with
    the refusal and its date; the rows are quarantined under scoring-checks/, nothing is
    published, the day's own ETL record is untouched (its load is judged on its own), and
    the night is still reported and judged (report_drift runs after a failed score_ahead)."""
    settings, usecase = state
    folder = Path(env["DRIFTLINE_HOME"]).parent / "usecases-empty-ahead"
    folder.mkdir()
    config = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    config["source"]["queries"]["flights"] += " AND carrier = 'no such carrier'"
    (folder / "flights.yaml").write_text(yaml.safe_dump(config))
    night, ahead = dt.date(2013, 2, 13), dt.date(2013, 2, 14)
    with alert_receiver(keep=True) as (url, received):
        done, output = monitor({**env, "DRIFTLINE_USECASES_DIR": str(folder)}, night, url)
    assert done.returncode != 0
    refused = re.search(r"flights batch for 2013-02-14 failed \d+ of 71 expectations of suite "
                        r"'flights_batch.features'; nothing was scored or published", output)
    assert refused, output[-8000:]
    assert "the night was still judged" in output  # not_scored_ahead: the run is red
    assert "expect_table_row_count_to_be_between" in output
    checks = settings.scoring_checks_dir("flights", ahead)
    assert json.loads((checks / "validation.json").read_text())["success"] is False
    assert (checks / "batch.parquet").exists()
    assert not settings.quarantine_dir("flights", ahead).exists()
    assert not settings.predictions_path("flights", ahead).exists()
    recorded = monitoring.DriftHistory(settings.history_url).night("flights", night)
    assert recorded is not None and recorded.quality_judged, "the night was not judged"
    # the week up to the 14th, of which only the days scored before are stored
    assert recorded.drift_days.first == dt.date(2013, 2, 8) and recorded.drift_days.last < ahead
    assert monitoring.validation_passed(usecase, settings, ahead)  # the 14th's load stands
    # one alert: score_ahead's quarantine, with the failed expectations (not_scored_ahead,
    # which repeats it, sends none)
    (quarantined,) = received.alerts
    body = quarantined["message"]
    assert body.startswith(f"event: {alerts.QUARANTINE}\ndag: flights_monitoring\n"
                           "task: score_ahead"), body
    assert refused.group(0) in body
    assert "  - expect_table_row_count_to_be_between" in body
    assert f"quarantine: {checks}" in body


def test_a_champion_whose_model_fails_to_load_fails_scoring_and_keeps_its_alias(state, champion):
    """Last in the module: it breaks the champion's artifact (a truncated pickle, as a
    half-synced artifact store would leave it)."""
    settings, usecase = state
    name = usecase.training.registered_model
    version = registry.alias_version(settings, name, registry.CHAMPION)
    location = registry.client(settings).get_model_version_download_uri(name, version)
    artifacts = Path(location.removeprefix("file://"))
    pickles = sorted(artifacts.rglob("*.pkl"))
    assert pickles, f"no pickled model under {artifacts}"
    for pickle in pickles:
        pickle.write_bytes(pickle.read_bytes()[:40])
    night = dt.date(2013, 2, 13)
    with pytest.raises(scoring.ScoringError) as failed:
        scoring.score_ahead(usecase, settings, night)
    assert f"{name} version {version} (champion) could not score 2013-02-14" in str(failed.value)
    assert registry.alias_version(settings, name, registry.CHAMPION) == version
    assert not settings.predictions_path("flights", dt.date(2013, 2, 14)).exists()
