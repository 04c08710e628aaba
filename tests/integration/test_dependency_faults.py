"""A dependency that is down fails the step that needs it with a message naming it; nothing
is registered or promoted from the half-finished training, and the champion stays. Two
promotions at once wait for each other (the promotion lock) and leave one consistent story.

(The DAG side, retries with exponential back-off on every task, is the house rule that
tests/dags/test_dag_integrity.py enforces; the source database's side is in
tests/unit/ingest/test_source.py.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import time

import pytest

from driftline.config import load_usecase
from driftline.training import pipeline as training
from driftline.training import registry
from driftline.training.request import TrainingRequest
from tests.conftest import REPO, copy_curated, repo_settings

pytestmark = pytest.mark.integration

DOWN = "http://127.0.0.1:1"  # nothing listens on port 1
WINDOW = {"window_end": "2013-01-07", "window_days": 7, "reason": "faults test"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, curated_days):
    """A January champion (version 1), trained with every dependency up."""
    settings = repo_settings(tmp_path_factory.mktemp("faults") / "home")
    usecase = load_usecase("flights", settings)
    copy_curated(curated_days, settings.home, dt.date(2013, 1, 14))
    request = TrainingRequest.from_conf(WINDOW, usecase)
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
    return training.train(usecase, settings, TrainingRequest.from_conf(conf, usecase))


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


# One process per gate: says when it is about to gate, then prints its result and the time.
GATE = """
import json, sys, time
from pathlib import Path
from driftline.training import pipeline as training
from driftline.training.request import TrainingRequest
from driftline.config import load_usecase
from tests.conftest import repo_settings
settings = repo_settings(Path(sys.argv[1]))
usecase = load_usecase("flights", settings)
request = TrainingRequest.from_dict(json.loads(sys.argv[3]))
print("ready", flush=True)
result = training.gate(usecase, settings, request, sys.argv[2])
print(json.dumps({**result, "finished_at": time.time()}, default=str), flush=True)
"""
HOLD_SECONDS = 12  # after both are ready: loading a challenger takes a few seconds


def test_two_promotions_at_once_wait_for_the_lock_and_leave_a_consistent_registry(trained):
    """Two gates reach the promotion while the test holds the promotion lock: neither may
    decide until it is released, then one after the other. Before: both read the same
    champion, both promoted against it, and `previous` and their records disagreed.
    (Two versions registered from the workspace's last commit: what races is the gate.)"""
    settings, usecase = trained
    ws = training.workspace(usecase, settings)
    pipeline = {"commit": ws.run("git", "rev-parse", "HEAD"), "hashes": ws.hashes(),
                "metrics": {}, "pipeline_seconds": 0}
    request = TrainingRequest.from_conf({**WINDOW, "force_promote": True}, usecase)
    versions = [
        training.register(usecase, settings, request, key,
                          {"airflow_dag_id": "test", "airflow_run_id": key}, pipeline)["version"]
        for key in ("race-a", "race-b")
    ]
    name = usecase.training.registered_model
    champion_before = registry.alias_version(settings, name, registry.CHAMPION)
    with registry.promotion_lock(settings, usecase):
        gates = [
            subprocess.Popen(
                [sys.executable, "-c", GATE, str(settings.home), version,
                 json.dumps(request.as_dict())],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for version in versions
        ]
        for gate in gates:
            assert gate.stdout.readline().strip() == "ready", gate.stderr.read()[-3000:]
        time.sleep(HOLD_SECONDS)
        assert [g.poll() for g in gates] == [None, None], "a gate decided while the lock was held"
        released_at = time.time()
    results = []
    for gate in gates:
        out, err = gate.communicate(timeout=600)
        assert gate.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["promoted"] and r["finished_at"] > released_at for r in results)  # forced
    replaced = {r["version"]: r["champion_before"] for r in results}
    earlier = next(v for v, before in replaced.items() if before == champion_before)
    later = next(v for v in replaced if v != earlier)
    assert replaced[later] == earlier, f"the later promotion must replace the earlier: {replaced}"
    assert registry.alias_version(settings, name, registry.CHAMPION) == later
    assert registry.alias_version(settings, name, registry.PREVIOUS) == earlier
    for version, before in replaced.items():
        tags = registry.version_info(settings, usecase, version)["tags"]
        assert tags["gate.champion_version"] == (before or "none")
