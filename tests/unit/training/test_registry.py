"""What driftline logs into MLflow is accepted by a real MLflow store, whatever the data holds."""

from __future__ import annotations

import math

import mlflow
import pytest

from driftline.training import registry

# slice values as a second use-case's data may hold them: bands, percents, paths, dots
HOSTILE_SLICES = {
    "income=0 - 20K €": {"brier": 0.21, "roc_auc": 0.70},
    "income=0 - 20K $": {"brier": 0.22, "roc_auc": 0.71},
    "share=50%": {"brier": 0.23, "roc_auc": float("nan")},
    "route=JFK/LAX": {"brier": 0.24, "roc_auc": 0.72},
    "code=..": {"brier": 0.25, "roc_auc": 0.73},
    "carrier=9E": {"brier": 0.26, "roc_auc": 0.74},
}


def test_slice_metrics_with_any_value_are_logged_each_under_its_own_name(tmp_path):
    """Before: `Invalid value "slices.income_0 - 20K €.brier"` ended the training after its
    DVC commit and push, with an MLflow run and no version."""
    metrics = {"roc_auc": 0.8, "brier": 0.2, "slices": HOSTILE_SLICES}
    logged = registry.mlflow_metrics(metrics)
    finite = sum(math.isfinite(v) for q in HOSTILE_SLICES.values() for v in q.values())
    assert len(logged) == 2 + finite  # no two slices fold into one name; NaN is left out
    assert logged["slices.carrier_9E.brier"] == 0.26  # plain values keep their plain names
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("names", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_metrics(logged)
    assert client.get_run(run.info.run_id).data.metrics == pytest.approx(logged)
