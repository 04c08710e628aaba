"""flights_training through real Airflow: DVC, MLflow registry, the gate, lineage, rollback.

The tests of this module share one state folder and run in order: version 1 (January), then
version 2 (another window), then a deliberately worse model, then reproduce/lineage/rollback.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from driftline.config import load_usecase
from driftline.ingest import etl
from driftline.monitoring import scoring
from driftline.operator import alerts
from driftline.training import pipeline as training
from driftline.training import registry
from driftline.training.request import TrainingRequest, TrainingRequestError
from tests.alert_receiver import alert_receiver, connection_env
from tests.conftest import repo_settings
from tests.integration.conftest import BIN, curated_env, run
from tests.stack_helpers import free_port

pytestmark = pytest.mark.integration

MODEL = "flights_delay"


@pytest.fixture(scope="module")
def env(tmp_path_factory, seeded_source, curated_days) -> dict[str, str]:
    """Airflow home + a curated store holding 1 January .. 14 February 2013."""
    return curated_env(
        tmp_path_factory.mktemp("training"), seeded_source, curated_days, dt.date(2013, 2, 14)
    )


@pytest.fixture(scope="module")
def state(env):
    settings = repo_settings(Path(env["DRIFTLINE_HOME"]))
    return settings, load_usecase("flights", settings)


def trigger(env, conf: dict, alerts_to: str | None = None):
    """`airflow dags test` of a training run; with alerts sent to the webhook `alerts_to`."""
    env = {**env, **connection_env(alerts_to)} if alerts_to else env
    return run(env, "airflow", "dags", "test", "flights_training", "-c", json.dumps(conf))


def gate_alert(received, event: str) -> dict[str, str]:
    """The run's one alert, the gate's `event`, as its `name: value` lines."""
    (alert,) = received.alerts
    facts = dict(line.split(": ", 1) for line in alert["message"].splitlines() if ": " in line)
    assert facts["event"] == event, alert
    return {"title": alert["title"], **facts}


def aliases(settings) -> dict[str, str | None]:
    return {a: registry.alias_version(settings, MODEL, a)
            for a in (registry.CHAMPION, registry.CHALLENGER, registry.PREVIOUS)}


def test_january_training_registers_a_champion_that_loads_and_predicts(env, state):
    settings, usecase = state
    with alert_receiver(keep=True) as (url, received):
        done = trigger(
            env, {"window_end": "2013-01-31", "window_days": 31, "reason": "first model"}, url)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert aliases(settings) == {"champion": "1", "challenger": "1", "previous": None}
    promoted = gate_alert(received, alerts.PROMOTED)
    assert promoted["title"] == "[driftline] flights: flights_delay version 1 promoted to champion"
    assert (promoted["champion"], promoted["reason"]) == ("none before this one", "no champion yet")
    assert f"GATE: {promoted['title'].removeprefix('[driftline] ')}" in done.stdout + done.stderr

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    champion = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    rows = etl.read_curated(usecase, settings, dt.date(2013, 2, 1), dt.date(2013, 2, 1))
    predictions = champion.predict(rows[usecase.features.all])
    assert len(predictions) == len(rows) and predictions.between(0, 1).all()

    info = registry.version_info(settings, usecase, "1")
    tags = info["tags"]
    assert set(tags) >= {"dvc_commit", "dvc_md5.data/window.parquet", "dvc_md5.model",
                         "dvc_md5.data/holdout.parquet", "code_revision", "airflow_dag_id",
                         "airflow_run_id", "trigger_reason"}
    assert tags["trigger_reason"] == "first model"
    assert tags["airflow_dag_id"] == "flights_training"
    assert tags["gate.decision"] == "promoted" and tags["gate.reason"] == "no champion yet"
    assert info["run_tags"]["dvc_commit"] == tags["dvc_commit"]  # the run carries them too
    reference = registry.client(settings).list_artifacts(info["run_id"], "reference")
    assert [a.path for a in reference] == ["reference/reference.parquet"]
    assert "dvc_md5.data/reference.parquet" in tags
    assert 0.6 < info["metrics"]["roc_auc"] < 0.75
    workspace = settings.workspace_dir("flights")
    assert run(env, "git", "-C", str(workspace), "cat-file", "-e",
               tags["dvc_commit"]).returncode == 0
    assert run(env, "git", "-C", str(workspace), "status", "--porcelain").stdout == ""
    # one MLflow run for the DAG run, named after it
    runs = mlflow.search_runs(experiment_names=[usecase.training.experiment])
    assert len(runs) == 1 and runs.iloc[0]["tags.airflow_run_id"] == tags["airflow_run_id"]


def test_the_registered_model_predicts_in_a_venv_of_its_own_requirements(state, tmp_path):
    """No driftline installed, no checkout on the path: only what the version logged (its
    requirements and its code_paths) gives the batch scoring's probabilities."""
    settings, usecase = state
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    model_dir = Path(mlflow.artifacts.download_artifacts(
        f"models:/{MODEL}/1", dst_path=str(tmp_path / "model")))
    requirements = (model_dir / "requirements.txt").read_text()
    assert "driftline" not in requirements and "xgboost==" in requirements
    # the batch scoring: the champion (version 1) scores 1 February ahead
    scored = scoring.score_ahead(usecase, settings, dt.date(2013, 1, 31))
    assert (scored.model_version, scored.day) == ("1", dt.date(2013, 2, 1))
    rows = pd.read_parquet(scored.path)
    rows[usecase.features.all].to_parquet(tmp_path / "rows.parquet")
    expected = rows["prediction"]

    venv, uv = tmp_path / "venv", str(BIN / "uv")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    base_python = str(Path(sys.base_prefix) / "bin" / "python3")
    for command in ([uv, "venv", "-q", "--python", base_python, str(venv)],
                    [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                     "-r", str(model_dir / "requirements.txt")]):
        done = subprocess.run(command, env=clean, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    probe = (
        "import sys, importlib.util, mlflow.pyfunc, pandas as pd\n"
        "assert importlib.util.find_spec('driftline') is None\n"  # before the model's code
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "model.predict(pd.read_parquet(sys.argv[2])).to_frame('p').to_parquet(sys.argv[3])\n"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe, str(model_dir), str(tmp_path / "rows.parquet"),
         str(tmp_path / "out.parquet")],
        env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "out.parquet")["p"], expected)


def test_retried_register_and_gate_reuse_their_version_and_decision(state):
    settings, usecase = state
    tags = registry.version_info(settings, usecase, "1")["tags"]
    request = TrainingRequest.from_conf(
        {"window_end": "2013-01-31", "window_days": 31, "reason": "first model"}, usecase)
    again = training.register(
        usecase, settings, request,
        training.run_key_for(tags["airflow_dag_id"], tags["airflow_run_id"]),
        {"airflow_dag_id": tags["airflow_dag_id"], "airflow_run_id": tags["airflow_run_id"]},
        {"commit": tags["dvc_commit"], "hashes": {}},
    )
    assert again["version"] == "1"
    assert len(registry.client(settings).search_model_versions(f"name='{MODEL}'")) == 1
    decided = training.gate(usecase, settings, request, "1")
    assert decided["already_decided"] and decided["promoted"]
    assert registry.version_info(settings, usecase, "1")["tags"]["gate.reason"] == \
        "no champion yet"


def test_a_second_window_registers_version_2_and_the_rule_decides(env, state):
    settings, usecase = state
    with alert_receiver(keep=True) as (url, received):
        done = trigger(
            env, {"window_end": "2013-02-07", "window_days": 14, "reason": "fresher"}, url)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    tags = registry.version_info(settings, usecase, "2")["tags"]
    scores = json.loads(tags["gate.scores"])
    assert scores["champion"] is not None  # v1 was scored on v2's holdout
    assert tags["gate.champion_version"] == "1"
    expected = registry.decide(registry.Scores(**scores["challenger"]),
                               registry.Scores(**scores["champion"]), usecase.training.gate)
    assert (tags["gate.decision"] == "promoted") == expected.promote
    # the alert says which, with both scores on the primary metric (as recorded)
    said = gate_alert(received, alerts.PROMOTED if expected.promote else alerts.KEPT)
    for role, version in (("challenger", "2"), ("champion", "1")):
        auc = scores[role]["overall"]["roc_auc"]
        assert said[role] == f"version {version}: roc_auc {auc:.4f}", said
    assert said["reason"] == tags["gate.reason"]
    if expected.promote:
        assert aliases(settings) == {"champion": "2", "challenger": "2", "previous": "1"}
    else:
        assert aliases(settings) == {"champion": "1", "challenger": "2", "previous": None}
    runs = mlflow.search_runs(experiment_names=[usecase.training.experiment])
    assert len(runs) == 2


def test_a_challenger_whose_holdout_the_champion_trained_on_is_not_promoted(env, state):
    """An earlier window (two days ending 31 January) against the champion, whose window
    holds the challenger's whole holdout (1-7 February). Before: the champion was scored on
    its own training days, won by construction, and the reason read "does not beat"."""
    settings, usecase = state
    before = aliases(settings)
    with alert_receiver(keep=True) as (url, received):
        done = trigger(env, {"window_end": "2013-01-31", "window_days": 2, "reason": "worse"}, url)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    info = registry.version_info(settings, usecase, "3")
    assert info["tags"]["gate.decision"] == "not promoted"
    champion = before["champion"]
    assert info["tags"]["gate.reason"].startswith(
        f"not compared with champion version {champion}: 0 holdout rows lie outside its "
        "training window, fewer than min_compare_rows 1000; holdout days 2013-02-01..2013-02-07 "
        f"are in champion version {champion}'s training window"
    ), info["tags"]["gate.reason"]
    assert json.loads(info["tags"]["gate.scores"])["checks"]["compared"]["rows"] == 0
    assert "Gate: not promoted" in info["description"]
    after = aliases(settings)
    assert after["champion"] == before["champion"] and after["challenger"] == "3"
    # where the operator looks first: the alert, the task's log line and its return value
    kept = gate_alert(received, alerts.KEPT)
    headline = f"flights: flights_delay: champion version {champion} kept; challenger version " \
               "3 not promoted"
    assert kept["title"] == f"[driftline] {headline}"
    assert kept["decision"] == "kept the champion" and kept["reason"] == info["tags"]["gate.reason"]
    assert kept["challenger"].startswith("version 3: roc_auc 0.")
    assert kept["champion"] == f"version {champion}: roc_auc n/a"  # not compared: too few rows
    assert f"GATE: {headline}" in done.stdout + done.stderr


def test_reproduce_restores_the_data_from_the_remote_and_gets_identical_metrics(env):
    done = run(env, "driftline", "reproduce", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "snapshot hash matches" in done.stdout
    assert done.stdout.strip().endswith("identical")


def test_lineage_names_code_data_validation_run_and_reason(env, state):
    settings, _ = state
    done = run(env, "driftline", "lineage", "1", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["code_revision"] and info["dvc_commit"]
    assert set(info["dvc_hashes"]) >= {"data/window.parquet", "model"}
    days = info["validation"]
    assert len(days) == 38 and all(d["success"] for d in days.values())
    assert {d["evaluated_expectations"] for d in days.values()} == {79}
    assert all(Path(d["partition"]).exists() and Path(d["result"]).exists()
               for d in days.values())
    assert info["airflow_dag_id"] == "flights_training" and info["airflow_run_id"]
    assert info["trigger_reason"] == "first model"
    text = run(env, "driftline", "lineage", "1").stdout
    assert "38 of 38 days passed ['flights_batch']" in text


@contextmanager
def scoring_server(env: dict[str, str]):
    """`driftline serve` on a free port, as `make up` starts it; its base URL once healthy."""
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "driftline"), "serve", "--port", str(port)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the scoring server did not become healthy"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def published_ahead(settings, usecase, night: dt.date) -> pd.DataFrame:
    """The champion's batch scoring of the night's next day, as published (20 rows)."""
    return pd.read_parquet(scoring.score_ahead(usecase, settings, night).path).head(20)


def test_the_server_follows_a_promotion_and_a_rollback_with_the_batch_probabilities(env, state):
    """A promotion through flights_training, then `driftline rollback`, while the scoring
    server runs: the very next request is answered by the new champion, naming it, with the
    probabilities the batch scoring published for the same rows."""
    settings, usecase = state
    night = dt.date(2013, 2, 1)
    with scoring_server(env) as url:
        def ask(rows: pd.DataFrame) -> dict:
            split = json.loads(rows[usecase.features.all].to_json(orient="split", index=False))
            answer = httpx.post(f"{url}/invocations", json={"dataframe_split": split}, timeout=60)
            assert answer.status_code == 200, answer.text
            return answer.json()

        first = aliases(settings)["champion"]
        published = published_ahead(settings, usecase, night)
        answer = ask(published)
        assert (answer["version"], answer["model"]) == (first, MODEL)
        np.testing.assert_allclose(answer["predictions"], published["prediction"], rtol=1e-6)

        done = trigger(env, {"window_end": "2013-02-07", "window_days": 14,
                             "reason": "forced", "force_promote": True})
        assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
        before = aliases(settings)
        assert before["champion"] != first and before["previous"] == first
        published = published_ahead(settings, usecase, night)
        answer = ask(published)  # the very next request
        assert answer["version"] == before["champion"]
        np.testing.assert_allclose(answer["predictions"], published["prediction"], rtol=1e-6)

        with alert_receiver(keep=True) as (alerts_url, received):
            done = run({**env, **connection_env(alerts_url)}, "driftline", "rollback", "--reason",
                       "bad predictions at JFK")
        assert done.returncode == 0, done.stdout + done.stderr
        after = aliases(settings)
        assert (after["champion"], after["previous"]) == (before["previous"], before["champion"])
        (rolled,) = received.alerts  # the CLI's rollback, outside any Airflow task
        assert rolled["title"] == (f"[driftline] flights: {MODEL} rolled back from version "
                                   f"{before['champion']} to version {before['previous']}")
        assert "reason: bad predictions at JFK\nby: " in rolled["message"]
        assert rolled["message"].endswith("(driftline rollback)")
        restored = registry.version_info(settings, usecase, after["champion"])["tags"]
        assert "bad predictions at JFK" in restored["rollback.restored"]
        answer = ask(published)
        assert answer["version"] == after["champion"] == first
        assert httpx.get(f"{url}/version").json()["version"] == after["champion"]

        features = published[usecase.features.all]
        # bad input: a 4xx that names the column
        missing = {"dataframe_split": json.loads(
            features.drop(columns=["carrier"]).to_json(orient="split", index=False))}
        refused = httpx.post(f"{url}/invocations", json=missing, timeout=60)
        assert refused.status_code == 400 and "carrier" in refused.json()["detail"]
        wrong = features.head(3).astype(object)
        wrong["distance"] = "far"
        typed = {"dataframe_records": json.loads(wrong.to_json(orient="records"))}
        refused = httpx.post(f"{url}/invocations", json=typed, timeout=60)
        assert refused.status_code == 400 and "distance" in refused.json()["detail"]
        refused = httpx.post(f"{url}/invocations", json={"rows": []}, timeout=60)
        assert refused.status_code == 400 and "dataframe_split" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"window_days": -3}, "Invalid input for param window_days"),
        ({"window_end": "2012-12-31"}, "Invalid input for param window_end"),
        ({"window_end": "2013-01-31", "colour": "blue"}, "unknown field(s) ['colour']"),
    ],
)
def test_invalid_params_are_refused_naming_the_field(env, state, conf, named):
    settings, usecase = state
    versions_before = len(registry.client(settings).search_model_versions(f"name='{MODEL}'"))
    with alert_receiver(keep=True) as (url, received):
        done = trigger(env, conf, url)
    assert done.returncode != 0
    assert named in done.stdout + done.stderr
    # a refused Param stops the run before any task (nothing to alert); a conf that passes
    # them fails check_request for good: one alert, no retry
    failed = [a for a in received.alerts if named in a["message"]]
    assert received.alerts == failed and len(failed) == (0 if "param" in named else 1)
    assert all(a["title"].startswith("[driftline] flights_training.check_request failed: ")
               for a in failed)
    assert len(registry.client(settings).search_model_versions(f"name='{MODEL}'")) \
        == versions_before


def test_a_snapshot_replaced_by_another_run_is_detected(state):
    from driftline.training.workspace import WorkspaceError

    settings, usecase = state
    first = training.snapshot_window(usecase, settings, TrainingRequest.from_conf(
        {"window_end": "2013-01-31", "window_days": 31}, usecase))
    training.snapshot_window(usecase, settings, TrainingRequest.from_conf(
        {"window_end": "2013-02-07", "window_days": 14}, usecase))
    with pytest.raises(WorkspaceError, match="no longer this run's"):
        training.run_pipeline(usecase, settings, "stale", first["snapshot_md5"])


def test_a_window_with_too_few_labelled_rows_is_refused(state):
    settings, usecase = state
    request = TrainingRequest.from_conf(
        {"window_end": "2013-01-31", "window_days": 1}, usecase)
    with pytest.raises(TrainingRequestError, match="fewer than min_train_rows 1000"):
        training.snapshot_window(usecase, settings, request)


def test_the_champion_scores_the_next_day_ahead_into_a_versioned_partition(state):
    from driftline.serving.predictions import published_rows

    settings, usecase = state
    champion = registry.alias_version(settings, MODEL, registry.CHAMPION)
    night, ahead = dt.date(2013, 2, 9), dt.date(2013, 2, 10)
    scored = scoring.score_ahead(usecase, settings, night)
    predictions = pd.read_parquet(scored.path)
    curated = etl.read_curated(usecase, settings, ahead, ahead)
    assert scored.day == ahead and scored.model_version == champion
    assert len(predictions) == len(curated) == scored.rows
    assert set(predictions.columns) == {
        *usecase.scoring_columns, "prediction", "model_version", "scored_at"}
    assert set(predictions["model_version"]) == {champion}
    assert predictions["prediction"].between(0, 1).all()
    assert len(published_rows(settings, "flights", ahead)) == scored.rows
