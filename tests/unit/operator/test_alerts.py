"""Alerts: what each event says, the status line `make up` prints, and sending to a real local
webhook through Airflow's apprise connection (read back as it arrived)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from driftline.ingest.validation import (
    BatchRejectedError,
    BatchValidationError,
    FailedExpectation,
    ValidationOutcome,
)
from driftline.operator import alerts
from tests.alert_receiver import alert_receiver, connection_env, event_of


@pytest.fixture
def alerts_off(monkeypatch):
    monkeypatch.delenv(alerts.CONN_ENV, raising=False)


def lines(alert: alerts.Alert) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in alert.body.splitlines() if ": " in line)


def rejected_batch(tmp_path: Path) -> BatchValidationError:
    outcome = ValidationOutcome(
        suite="flights_batch", success=False, evaluated=79, result={},
        failures=[FailedExpectation("expect_column_values_to_be_in_set", "origin", "['XXX']"),
                  FailedExpectation("expect_table_row_count_to_be_between", None, "12")],
    )
    return BatchValidationError("flights", dt.date(2013, 1, 3), outcome, tmp_path / "q")


def test_a_quarantine_names_its_failed_expectations_even_behind_airflows_exception(tmp_path):
    try:
        try:
            raise rejected_batch(tmp_path)
        except BatchRejectedError as exc:
            raise AirflowFailException(str(exc)) from exc  # as the DAGs wrap it
    except AirflowFailException as failure:
        rejection = alerts.rejection_of(failure)
    assert isinstance(rejection, BatchValidationError)
    failed = alerts.failed_expectations(rejection)
    assert failed == ["expect_column_values_to_be_in_set on origin: ['XXX']",
                      "expect_table_row_count_to_be_between: 12"]
    alert = alerts.quarantined("flights_etl", "validate_batch", "scheduled__x", str(rejection),
                               failed, str(rejection.quarantine))
    assert alert.event == alerts.QUARANTINE and alert.level == "failure"
    assert alert.title.startswith("[driftline] flights_etl: batch quarantined: flights batch "
                                  "for 2013-01-03 failed 2 of 79 expectations")
    assert "  - expect_column_values_to_be_in_set on origin: ['XXX']" in alert.body
    assert lines(alert)["quarantine"] == str(tmp_path / "q")
    # refused at the source: the message's listed lines are the failures
    source = BatchRejectedError("flights 2013-01-03 refused at the source; nothing was loaded."
                                "\n  - max_rows: 2400 rows\nQuarantined in /q", Path("/q"))
    assert alerts.failed_expectations(source) == ["max_rows: 2400 rows"]
    assert alerts.rejection_of(RuntimeError("other")) is None


def test_a_final_failure_says_which_task_run_and_try():
    alert = alerts.task_failed("flights_training", "check_request", "manual__1", 3, 2,
                               "AirflowFailException: refused: window_days: must be >= 1",
                               "http://airflow/dags/flights_training/runs/manual__1/tasks/x")
    assert alert.event == alerts.TASK_FAILED
    assert alert.title == ("[driftline] flights_training.check_request failed: "
                           "AirflowFailException: refused: window_days: must be >= 1")
    facts = lines(alert)
    assert (facts["run"], facts["try"]) == ("manual__1", "3 of 3")
    assert facts["log"].endswith("/tasks/x")


def test_the_gate_says_promoted_or_kept_with_both_scores():
    kept = alerts.gate_decided("flights", "flights_delay", "drift__2013-01-05", {
        "version": "3", "promoted": False, "reason": "does not beat the champion's roc_auc",
        "champion_before": "2", "champion_after": "2",
        "challenger_roc_auc": 0.61234, "champion_roc_auc": 0.65},
        "roc_auc", "drift")
    assert kept.event == alerts.KEPT and kept.level == "warning"
    assert kept.title == ("[driftline] flights: flights_delay: champion version 2 kept; "
                          "challenger version 3 not promoted")
    facts = lines(kept)
    assert facts["challenger"] == "version 3: roc_auc 0.6123"
    assert facts["champion"] == "version 2: roc_auc 0.6500"
    assert facts["decision"] == "kept the champion"
    first = alerts.gate_decided("flights", "flights_delay", "manual__1", {
        "version": "1", "promoted": True, "reason": "no champion yet", "champion_before": None,
        "champion_after": "1", "challenger_roc_auc": 0.66, "champion_roc_auc": None},
        "roc_auc")
    assert first.event == alerts.PROMOTED
    assert first.title == "[driftline] flights: flights_delay version 1 promoted to champion"
    assert lines(first)["champion"] == "none before this one"


def test_drift_rollback_and_deadline_carry_their_facts():
    drift = alerts.drift_fired("flights", "scheduled__2013-01-06", {
        "window_end": "2013-01-03", "window_days": 2, "reason": "drift",
        "evidence": {"day": "2013-01-05", "drift_share": 0.4545, "drifted_columns": ["dest"],
                     "rule": "drift share >= 0.05 on 1 of the last 1 nights",
                     "report": "/reports/drift.html", "roc_auc": None}})
    assert drift.event == alerts.DRIFT_FIRED
    assert "drift on 2013-01-05" in drift.title
    assert "drifted columns:\n  - dest" in drift.body and "roc_auc" not in drift.body
    assert lines(drift)["drift share"] == "0.4545"
    rollback = alerts.rolled_back("flights", "flights_delay", "4", "2", "worse at JFK", "ann")
    assert (lines(rollback)["from version"], lines(rollback)["to version"]) == ("4", "2")
    assert (lines(rollback)["reason"], lines(rollback)["by"]) == ("worse at JFK", "ann")
    late = alerts.deadline_missed("flights_etl", "scheduled__x", 0.5, "2026-01-01T06:00:00Z",
                                  "running")
    assert late.title == "[driftline] flights_etl: night scheduled__x not finished 0.5 h after " \
                         "it was queued"


def test_status_line_off_on_and_broken(monkeypatch, alerts_off):
    assert alerts.alerts_status() == ("off (no Airflow connection driftline_alerts: set "
                                      "AIRFLOW_CONN_DRIFTLINE_ALERTS, README: Alerts)")
    assert alerts.send(alerts.rolled_back("f", "m", "2", "1", "r", None)) is False  # no error
    monkeypatch.setenv(alerts.CONN_ENV, json.dumps({"conn_type": "apprise", "extra": {
        "config": {"path": "json://ops:s3cret@127.0.0.1:9/hook"}}}))
    status = alerts.alerts_status()
    assert status == "on -> json://ops:****@127.0.0.1:9/hook (Airflow connection driftline_alerts)"
    assert "s3cret" not in status
    monkeypatch.setenv(alerts.CONN_ENV, json.dumps({"conn_type": "apprise", "extra": {}}))
    assert alerts.alerts_status().startswith("NOT WORKING (Airflow connection driftline_alerts")


def test_an_alert_arrives_at_a_real_webhook_once(monkeypatch):
    with alert_receiver() as (url, received):
        monkeypatch.setenv(alerts.CONN_ENV, connection_env(url)[alerts.CONN_ENV])
        rollback = alerts.rolled_back("flights", "flights_delay", "4", "2", "worse", "ann")
        assert alerts.send(rollback) is True
        (arrived,) = received.alerts
    assert arrived["title"] == rollback.title and arrived["message"] == rollback.body
    assert arrived["type"] == "warning" and event_of(arrived) == alerts.ROLLBACK


def test_a_webhook_that_refuses_or_is_down_never_raises(monkeypatch):
    with alert_receiver(status=500) as (url, received):
        monkeypatch.setenv(alerts.CONN_ENV, connection_env(url)[alerts.CONN_ENV])
        assert alerts.send(alerts.rolled_back("f", "m", "2", "1", "r", None)) is False
    monkeypatch.setenv(alerts.CONN_ENV, connection_env(url)[alerts.CONN_ENV])  # now closed
    assert alerts.send(alerts.rolled_back("f", "m", "2", "1", "r", None)) is False
    monkeypatch.setenv(alerts.CONN_ENV, "{not json")
    assert alerts.send(alerts.rolled_back("f", "m", "2", "1", "r", None)) is False


def test_the_deadline_callback_sends_what_the_triggerer_gives_it(monkeypatch):
    """Called as Airflow's CallbackTrigger calls it: awaited, with the context that
    Deadline.handle_miss builds (the DAG run as the REST API shows it, the deadline)."""
    context = {
        "dag_run": {"dag_id": "flights_monitoring", "dag_run_id": "scheduled__2013-01-05",
                    "state": "running", "queued_at": "2026-12-07T00:00:03Z"},
        "deadline": {"id": "0197", "deadline_time": "2026-12-07T06:00:03Z"},
    }
    with alert_receiver() as (url, received):
        monkeypatch.setenv(alerts.CONN_ENV, connection_env(url)[alerts.CONN_ENV])
        assert asyncio.run(alerts.on_night_deadline_missed(hours=6, context=context)) is True
        (arrived,) = received.alerts
    assert event_of(arrived) == alerts.DEADLINE_MISSED
    body = arrived["message"]
    assert "run: scheduled__2013-01-05" in body and "deadline: 2026-12-07T06:00:03Z" in body
    assert "state: running" in body and "/dags/flights_monitoring/runs/" in body
