"""Training requests, window selection, the model and its metrics, without Airflow."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from driftline.ingest import etl
from driftline.training import evaluation, stages
from driftline.training import pipeline as training
from driftline.training.model import TrainedModel, fit
from driftline.training.request import TrainingRequest, TrainingRequestError
from tests.conftest import sqlite_url


def test_a_window_ends_on_window_end_and_the_holdout_follows_it(usecase):
    request = TrainingRequest.from_conf({"window_end": "2013-01-31", "window_days": 31}, usecase)
    assert request.window_start == dt.date(2013, 1, 1)
    assert (request.holdout_start, request.holdout_end) == (dt.date(2013, 2, 1),
                                                            dt.date(2013, 2, 7))
    assert len(request.days()) == 38
    assert TrainingRequest.from_dict(request.as_dict()) == request


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"window_end": "2013-01-31", "window_days": -3}, "window_days"),
        ({"window_end": "2013-01-31", "colour": "blue"}, "unknown field(s) ['colour']"),
        ({"window_end": "2013-01-10", "window_days": 31}, "before the use-case's first day"),
        ({"window_end": "2012-12-31", "window_days": 1}, "before the use-case's first day"),
        ({"window_end": "31/01/2013"}, "window_end"),
        ({"window_end": "2013-01-31", "reason": "x" * 501}, "reason"),
        ({"window_end": "2013-01-31", "force_promote": "yes"}, "force_promote"),
        ({"window_end": "2013-01-31", "window_days": True}, "window_days"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field(usecase, conf, named):
    with pytest.raises(TrainingRequestError) as raised:
        TrainingRequest.from_conf(conf, usecase)
    assert named in str(raised.value)


@pytest.fixture(scope="module")
def days(seeded_source, tmp_path_factory) -> pd.DataFrame:
    """Built batches of 1-10 January (real rows), without going through the curated store."""
    from driftline.config import load_usecase
    from tests.conftest import repo_settings

    usecase = load_usecase("flights", repo_settings(tmp_path_factory.mktemp("h")))
    frames = []
    for day in range(1, 11):
        window = etl.BatchWindow.for_day(dt.date(2013, 1, day), usecase)
        frames.append(etl.transform(usecase, etl.extract(usecase, sqlite_url(seeded_source),
                                                         window)))
    return pd.concat(frames, ignore_index=True)


def params_for(usecase, request) -> dict:
    import yaml

    from tests.conftest import REPO

    return {**yaml.safe_load((REPO / "params.yaml").read_text()),
            **training.pipeline_params(usecase, request)}


def test_prepare_splits_by_new_york_day_and_drops_unlabelled_rows(usecase, days):
    request = TrainingRequest.from_conf({"window_end": "2013-01-03", "window_days": 3}, usecase)
    train, holdout = stages.split_window(days, params_for(usecase, request))
    local = lambda f: f["sched_time"].dt.tz_convert("America/New_York").dt.date  # noqa: E731
    assert local(train).between(dt.date(2013, 1, 1), dt.date(2013, 1, 3)).all()
    assert local(holdout).between(dt.date(2013, 1, 4), dt.date(2013, 1, 10)).all()
    assert train["is_delayed"].notna().all() and holdout["is_delayed"].notna().all()
    labelled = days["is_delayed"].notna().sum()
    assert len(train) + len(holdout) == labelled


def test_training_is_deterministic_and_survives_save_and_load(usecase, days, tmp_path):
    schema = training.feature_schema(usecase)
    params = params_for(usecase, TrainingRequest.from_conf({"window_end": "2013-01-31"},
                                                           usecase))["train"]
    params["num_boost_round"] = 30
    first, second = fit(days, schema, params), fit(days, schema, params)
    scored = days.head(200)
    np.testing.assert_array_equal(first.predict_proba(scored), second.predict_proba(scored))
    first.save(tmp_path / "model")
    loaded = TrainedModel.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(scored), first.predict_proba(scored))
    p = first.predict_proba(scored)
    assert p.std() > 0.02  # the model separates flights; it is not a constant


def test_an_unseen_category_scores_as_missing_not_an_error(usecase, days):
    schema = training.feature_schema(usecase)
    params = {"num_boost_round": 5, "max_depth": 3, "seed": 1, "nthread": 1}
    model = fit(days, schema, params)
    odd = days.head(3).assign(carrier="ZZ", dest="NEW")
    assert np.isfinite(model.predict_proba(odd)).all()
    with pytest.raises(ValueError, match="lacks feature columns"):
        model.predict_proba(days.head(3).drop(columns=["carrier"]))


def test_quality_figures():
    y = np.array([0, 0, 1, 1])
    perfect = evaluation.quality(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == 1.0
    assert perfect["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    one_class = evaluation.quality(np.array([1, 1]), np.array([0.5, 0.6]))
    assert np.isnan(one_class["roc_auc"]) and np.isfinite(one_class["log_loss"])


def test_slices_are_every_origin_and_the_largest_carriers(usecase, days):
    chosen = evaluation.slice_values(days, {"origin": 0, "carrier": 2})
    assert chosen["origin"] == ["EWR", "JFK", "LGA"]
    top2 = days["carrier"].value_counts().index[:2].tolist()
    assert chosen["carrier"] == sorted(top2)


def test_the_reference_holds_training_features_and_holdout_predictions(usecase, days, tmp_path):
    """Features: a bounded, seeded sample of the training rows, with no prediction (in-sample
    predictions are not kept). Prediction: the model's, on holdout rows only."""
    import shutil

    import yaml

    request = TrainingRequest.from_conf({"window_end": "2013-01-07", "window_days": 7}, usecase)
    params = params_for(usecase, request)
    params["train"]["num_boost_round"] = 10
    params["reference"] = {"rows": 500, "seed": 7}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data").mkdir()
    labelled = days[days["is_delayed"].notna()]
    local_day = labelled["sched_time"].dt.tz_convert("America/New_York").dt.date
    in_window = local_day <= dt.date(2013, 1, 7)
    train, holdout = labelled[in_window], labelled[~in_window]
    train.to_parquet(tmp_path / stages.TRAIN)
    holdout.to_parquet(tmp_path / stages.HOLDOUT)
    stages.train(tmp_path)
    stages.evaluate(tmp_path)
    first = pd.read_parquet(tmp_path / stages.REFERENCE)
    part = first[stages.REFERENCE_PART]
    assert list(first.columns[-3:]) == ["is_delayed", "prediction", stages.REFERENCE_PART]
    training_part = first[part == stages.TRAINING_PART]
    holdout_part = first[part == stages.HOLDOUT_PART]
    assert len(training_part) == 500 and len(holdout_part) == 500
    assert training_part["flight_id"].isin(train["flight_id"]).all()
    assert training_part["prediction"].isna().all()
    assert holdout_part["flight_id"].isin(holdout["flight_id"]).all()
    model = TrainedModel.load(tmp_path / stages.MODEL)
    np.testing.assert_allclose(holdout_part["prediction"], model.predict_proba(holdout_part))
    shutil.copyfile(tmp_path / stages.REFERENCE, tmp_path / "first.parquet")
    stages.evaluate(tmp_path)
    assert (tmp_path / stages.REFERENCE).read_bytes() == (tmp_path / "first.parquet").read_bytes()


def test_every_stage_depends_on_the_code_that_runs_it_and_on_the_pins(tmp_path):
    """Before: dvc.yaml listed data and params only, so after a change of the stage code or of
    the pinned set DVC skipped stages or restored run-cache outputs made by the old code."""
    import subprocess
    import sys

    import yaml

    from tests.conftest import REPO

    imported = subprocess.run(
        [sys.executable, "-c", "import sys, driftline.training.stages; "
         "print(' '.join(sorted(m for m in sys.modules if m.startswith('driftline.'))))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert tuple(imported) == stages.STAGE_MODULES  # a new import must join the fingerprint
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert all("code" in stage["params"] for stage in pipeline["stages"].values())

    project = tmp_path / "project"
    project.mkdir()
    for name in stages.PIN_FILES:
        (project / name).write_text((REPO / name).read_text())
    before = stages.code_fingerprint(project)
    assert before == stages.code_fingerprint(REPO)
    (project / "constraints.txt").write_text((REPO / "constraints.txt").read_text() + "x==1\n")
    after = stages.code_fingerprint(project)
    assert after["pins_sha256"] != before["pins_sha256"]
    assert after["stages_sha256"] == before["stages_sha256"]


def test_a_usecases_training_params_override_params_yaml_for_it_alone(usecase, tmp_path):
    """training.params.max_depth: 3 trains that use-case with depth 3, and its version's
    params.yaml (which DVC reruns and MLflow logs) says so; flights keeps params.yaml's."""
    import yaml

    from driftline.config import UseCase
    from driftline.training.workspace import Workspace
    from tests.conftest import REPO

    shared = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    assert shared["max_depth"] != 3
    raw = usecase.model_dump()
    raw["training"]["params"] = {"max_depth": 3}
    shallow = UseCase.model_validate(raw)
    request = TrainingRequest.from_conf({"window_end": "2013-01-31"}, usecase)

    assert training.pipeline_params(usecase, request)["train"] == shared
    own = training.pipeline_params(shallow, request)["train"]
    assert own == {**shared, "max_depth": 3}
    ws = Workspace.ensure(tmp_path / "ws", str(tmp_path / "remote"))
    ws.write_pipeline(training.pipeline_params(shallow, request))
    assert stages.read_params(ws.root)["train"] == own
