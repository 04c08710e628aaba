"""The champion at a glance, read back from a real local MLflow registry that the gate and a
rollback wrote through driftline's own registry functions; and the scoring server's answer."""

from __future__ import annotations

import mlflow
import pytest

from driftline.config import Settings, UseCase
from driftline.operator import champion
from driftline.training import registry

SCORES = {"1": 0.61, "2": 0.66, "3": 0.64}


def register(settings: Settings, usecase: UseCase, window: str, reason: str) -> str:
    """A version as training registers it (its run's holdout metric, lineage tags, alias
    `challenger`), without the model's files: the page reads tags and metrics only."""
    client = registry.client(settings)
    experiment = registry.experiment_id(settings, usecase)
    run = client.create_run(experiment, run_name=reason)
    tags = {
        "window": window,
        "holdout": f"{window[-10:]}..+7",
        "trigger_reason": reason,
        "airflow_dag_id": "flights_training",
        "airflow_run_id": f"manual__{reason.replace(' ', '_')}",
    }
    name = usecase.training.registered_model
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass  # registered by an earlier version
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/model", run.info.run_id, tags=tags
    ).version
    client.log_metric(run.info.run_id, "roc_auc", SCORES[str(version)])
    client.set_terminated(run.info.run_id)
    client.set_registered_model_alias(name, registry.CHALLENGER, str(version))
    return str(version)


def gate(settings: Settings, usecase: UseCase, version: str, promote: bool) -> None:
    """The gate's record of `version` against the champion of the moment (the real call)."""
    name = usecase.training.registered_model
    current = registry.alias_version(settings, name, registry.CHAMPION)
    decision = registry.Decision(promote, "better" if promote else "no gain", checks={})
    challenger = registry.Scores(overall={"roc_auc": SCORES[version]})
    held = registry.Scores(overall={"roc_auc": SCORES[current]}) if current else None
    registry.record_decision(settings, usecase, version, current, decision, challenger, held)


@pytest.fixture
def three_versions(settings: Settings, usecase: UseCase) -> tuple[Settings, UseCase]:
    """v1 promoted (first champion), v2 promoted over it, v3 not promoted: champion 2,
    previous 1, challenger 3."""
    for version, promote in (("1", True), ("2", True), ("3", False)):
        made = register(settings, usecase, f"2013-01-0{version}..2013-01-1{version}",
                        f"drift night {version}")
        assert made == version
        gate(settings, usecase, version, promote)
    return settings, usecase


def test_aliases_scores_and_why_each_version_holds_its_alias(three_versions):
    settings, usecase = three_versions
    view = champion.gather(settings, usecase)
    held = {alias: (a.version.version if a else None) for alias, a in view.aliased.items()}
    assert held == {"champion": "2", "previous": "1", "challenger": "3"}
    top = view.aliased["champion"]
    assert top.version.window == "2013-01-02..2013-01-12"
    assert top.version.holdout_score == pytest.approx(0.66)
    assert top.why == "promoted by its gate: better"
    assert top.version.airflow_run == "flights_training/manual__drift_night_2"
    assert view.aliased["previous"].why == "replaced by version 2's promotion"
    assert view.aliased["challenger"].why == "registered (drift night 3); not promoted"
    # the last gate decisions, newest first, with the champion each was compared with
    assert [(v.version, v.gate_decision) for v in view.decisions] == [
        ("3", "not promoted"), ("2", "promoted"), ("1", "promoted")]
    assert view.decisions[0].champion_score == pytest.approx(0.66)
    assert view.decisions[0].gate_champion == "2"
    assert view.can_roll_back and view.served is None


def test_a_rollback_from_the_page_is_recorded_as_the_cli_records_it(three_versions):
    settings, usecase = three_versions
    assert champion.roll_back(settings, usecase, "  bad   night\n") == ("2", "1")
    name = usecase.training.registered_model
    client = registry.client(settings)
    restored = client.get_model_version(name, "1").tags["rollback.restored"]
    demoted = client.get_model_version(name, "2").tags["rollback.demoted"]
    assert restored.endswith(": bad night") and demoted.endswith(": bad night")
    view = champion.gather(settings, usecase)
    assert view.aliased["champion"].version.version == "1"
    assert view.aliased["champion"].why == "restored by a rollback: bad night"
    assert view.aliased["previous"].why == "demoted by a rollback: bad night"
    assert view.aliased["champion"].since > view.aliased["champion"].version.registered
    # and back again: the newest rollback explains each alias, and says who made it
    champion.roll_back(settings, usecase, "it was fine", by="alice (Airflow UI)")
    assert client.get_model_version(name, "2").tags["rollback.by"] == "alice (Airflow UI)"
    again = champion.gather(settings, usecase)
    by = " (by alice (Airflow UI))"
    assert again.aliased["champion"].why == f"restored by a rollback: it was fine{by}"
    assert again.aliased["previous"].why == f"demoted by a rollback: it was fine{by}"
    with pytest.raises(ValueError, match="needs a reason"):
        champion.roll_back(settings, usecase, "   ")


def test_no_rollback_without_a_previous_version(settings, usecase):
    register(settings, usecase, "2013-01-01..2013-01-11", "first champion")
    gate(settings, usecase, "1", True)
    view = champion.gather(settings, usecase)
    assert view.aliased["previous"] is None and not view.can_roll_back
    with pytest.raises(RuntimeError, match="previous"):
        champion.roll_back(settings, usecase, "no way back")


def test_an_empty_registry_has_no_aliases(settings, usecase):
    view = champion.gather(settings, usecase)
    assert view.aliased == {"champion": None, "previous": None, "challenger": None}
    assert view.decisions == []


def test_the_model_the_scoring_server_answers_with(three_versions, monkeypatch):
    """Against the real scoring server's app (its GET /version), on the same registry."""
    from fastapi.testclient import TestClient

    from driftline.serving.server import create_app

    settings, usecase = three_versions
    server = TestClient(create_app(usecase, settings))
    monkeypatch.setattr(
        "httpx.get", lambda url, timeout: server.get(url.removeprefix("http://scoring:5001"))
    )
    view = champion.gather(settings, usecase, scoring_url="http://scoring:5001")
    assert view.served == champion.Served("http://scoring:5001", "2")
    other = champion.served("http://scoring:5001", "another_model")
    assert other.version is None and "not 'another_model'" in other.error


def test_an_unreachable_scoring_server_is_said_not_raised(usecase):
    down = champion.served("http://127.0.0.1:9", usecase.training.registered_model)
    assert down.version is None and "not reachable" in down.error
