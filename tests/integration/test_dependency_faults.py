"""A dependency that is down fails the step that needs it with a message naming it; nothing
is registered or promoted from the half-finished training, and the champion stays.

(The DAG side, retries with exponential back-off on every task, is the house rule that
tests/dags/test_dag_integrity.py enforces; the source database's side is in
tests/unit/test_source.py.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from driftline import registry, training
from driftline.config import load_usecase
from tests.conftest import copy_curated, repo_settings

pytestmark = pytest.mark.integration

DOWN = "http://127.0.0.1:1"  # nothing listens on port 1
WINDOW = {"window_end": "2013-01-07", "window_days": 7, "reason": "faults test"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, curated_days):
    """A January champion (version 1), trained with every dependency up."""
    settings = repo_settings(tmp_path_factory.mktemp("faults") / "home")
    usecase = load_usecase("flights", settings)
    copy_curated(curated_days, settings.home, dt.date(2013, 1, 14))
    request = training.TrainingRequest.from_conf(WINDOW, usecase)
    first = training.train(usecase, settings, request)
    assert first["version"] == "1" and first["promoted"]
    return settings, usecase


def registered(settings, usecase) -> tuple[list[str], str | None]:
    name = usecase.training.registered_model
    versions = sorted(str(v.version) for v in registry.client(settings).search_model_versions(
        f"name = '{name}'"))
    return versions, registry.alias_version(settings, name, registry.CHAMPION)


def retrain(usecase, settings, reason: str):
    conf = {**WINDOW, "reason": reason, "force_promote": True}  # would promote if it got there
    return training.train(usecase, settings, training.TrainingRequest.from_conf(conf, usecase))


def test_a_dvc_remote_that_is_down_fails_the_push_naming_it_and_registers_nothing(
    trained, monkeypatch
):
    settings, usecase = trained
    monkeypatch.setenv("DRIFTLINE_DVC_REMOTE", "s3://driftline/dvc")
    monkeypatch.setenv("DRIFTLINE_DVC_REMOTE_ENDPOINT", DOWN)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "faults-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "faults-test")  # noqa: S105 - nothing listens
    with pytest.raises(Exception) as failed:
        retrain(usecase, settings, "remote down")
    message = str(failed.value)
    assert "dvc push" in message and "127.0.0.1:1" in message, message
    assert registered(settings, usecase) == (["1"], "1")


def test_an_mlflow_store_that_is_down_fails_registration_naming_it_and_the_champion_stays(
    trained, monkeypatch
):
    settings, usecase = trained
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    down = dataclasses.replace(settings, mlflow_uri=DOWN)
    with pytest.raises(Exception) as failed:
        retrain(usecase, down, "mlflow down")
    assert DOWN in str(failed.value), str(failed.value)
    assert "training step register_model failed" in str(failed.value)
    assert registered(settings, usecase) == (["1"], "1")
    ws = training.workspace(usecase, settings)  # the commit no version came from is marked
    assert ws.run("git", "tag", "--points-at", "HEAD", "-l", "unregistered/*")
    # and once it is back, the same training registers version 2 and promotes it
    again = retrain(usecase, settings, "mlflow back")
    assert (again["version"], again["promoted"]) == ("2", True)


def test_a_failing_dvc_stage_names_the_step_and_leaves_the_workspace_at_the_last_version(
    trained, monkeypatch
):
    """A stage that fails (here XGBoost refuses a parameter) leaves neither a half-written
    workspace nor an MLflow run; the next training starts from the last version."""
    settings, usecase = trained
    ws = training.workspace(usecase, settings)
    head, snapshot = ws.run("git", "rev-parse", "HEAD"), ws.snapshot_md5()
    before = registered(settings, usecase)
    real_params = training.pipeline_params

    def bad_train_params(*args):
        return {**real_params(*args), "train": {"num_boost_round": 5, "max_depth": -3}}

    monkeypatch.setattr(training, "pipeline_params", bad_train_params)
    with pytest.raises(training.TrainingStepError) as failed:
        retrain(usecase, settings, "bad stage")
    assert "training step run_dvc_pipeline failed" in str(failed.value)
    assert "dvc repro" in str(failed.value)
    assert ws.run("git", "rev-parse", "HEAD") == head
    assert ws.run("git", "status", "--porcelain") == ""
    assert ws.snapshot_md5() == snapshot
    assert registered(settings, usecase) == before
    runs = registry.client(settings).search_runs([registry.experiment_id(settings, usecase)])
    assert not [r for r in runs if r.data.tags.get("trigger_reason") == "bad stage"]
