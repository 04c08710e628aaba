"""The DVC pipeline's stage commands (dvc.yaml): `python -m driftline.training.stages STAGE`.

Each runs in a training workspace and reads only its params.yaml and the files DVC gives it,
so a committed version of the workspace is everything needed to run it again.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import yaml

from driftline import storage
from driftline.config import PREDICTION
from driftline.training import evaluation
from driftline.training.model import FeatureSchema, TrainedModel, fit
from driftline.training.workspace import WINDOW_FILE

log = logging.getLogger(__name__)

WINDOW = Path(WINDOW_FILE)
TRAIN = Path("data/train.parquet")
HOLDOUT = Path("data/holdout.parquet")
REFERENCE = Path("data/reference.parquet")
MODEL = Path("model")
METRICS = Path("metrics.json")
PLOTS = Path("plots")
# The drift reference's rows: a sample of the training rows (the features' reference, no
# prediction) and the holdout rows with the model's predictions (the prediction's reference:
# out-of-sample, like every night's predictions).
REFERENCE_PART = "reference_part"
TRAINING_PART, HOLDOUT_PART = "training", "holdout"


# The driftline modules a stage command runs, and the files that pin its libraries: every
# stage depends on their hashes (params.yaml `code`), so after a change DVC reruns a stage
# instead of skipping it or restoring a run-cache output made by the old code.
# tests/unit/training/test_training.py checks that this is every driftline module a stage imports.
STAGE_MODULES = (
    "driftline.config",
    "driftline.storage",
    "driftline.training",
    "driftline.training.evaluation",
    "driftline.training.model",
    "driftline.training.stages",
    "driftline.training.workspace",
)
PIN_FILES = ("requirements.txt", "constraints.txt")


def code_fingerprint(project: Path) -> dict[str, str]:
    """sha256 of the stage code and of the pinned set (`project`'s pin files), and the
    Python version: the `code` params section of every stage."""
    import hashlib
    import importlib.util
    import platform

    def sha256(paths: list[Path]) -> str:
        digest = hashlib.sha256()
        for path in paths:
            digest.update(path.name.encode() + b"\0")
            digest.update(path.read_bytes() if path.is_file() else b"(missing)")
        return digest.hexdigest()

    modules = [Path(importlib.util.find_spec(name).origin) for name in STAGE_MODULES]
    return {
        "stages_sha256": sha256(modules),
        "pins_sha256": sha256([project / name for name in PIN_FILES]),
        "python": platform.python_version(),
    }


def read_params(root: Path = Path(".")) -> dict[str, Any]:
    return yaml.safe_load((root / "params.yaml").read_text())


def split_window(window: pd.DataFrame, params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training days and the later holdout days, labelled rows only, in a stable order."""
    schema = FeatureSchema.from_dict(params["schema"])
    run = params["run"]
    day = window[schema.event_time].dt.tz_convert(ZoneInfo(run["timezone"])).dt.date
    labelled = window[schema.label].notna()

    def between(first: str, last: str) -> pd.DataFrame:
        mask = (
            labelled & (day >= dt.date.fromisoformat(first)) & (day <= dt.date.fromisoformat(last))
        )
        return window[mask].sort_values(schema.key, kind="stable").reset_index(drop=True)

    return (
        between(run["window_start"], run["window_end"]),
        between(run["holdout_start"], run["holdout_end"]),
    )


def prepare(root: Path = Path(".")) -> None:
    params = read_params(root)
    train, holdout = split_window(pd.read_parquet(root / WINDOW), params)
    if train.empty or holdout.empty:
        raise SystemExit(
            f"prepare: {len(train)} training and {len(holdout)} holdout rows; "
            "both must be non-empty"
        )
    storage.write_parquet(train, root / TRAIN)
    storage.write_parquet(holdout, root / HOLDOUT)


def train(root: Path = Path(".")) -> None:
    params = read_params(root)
    began = time.perf_counter()
    train_rows = pd.read_parquet(root / TRAIN)
    model = fit(train_rows, FeatureSchema.from_dict(params["schema"]), params["train"])
    model.save(root / MODEL)
    log.info("train: %d rows in %.2f s", len(train_rows), time.perf_counter() - began)


def reference_rows(
    model: TrainedModel,
    train_rows: pd.DataFrame,
    holdout_rows: pd.DataFrame,
    wanted: dict[str, Any],
) -> pd.DataFrame:
    """The data the nightly drift report compares a day against, made once per version.

    Features: a bounded, seeded sample of the training rows. Prediction: the model's
    predictions on its holdout. On training rows the model answers what it was fitted to,
    so a night's out-of-sample predictions would read as drift every night.
    """
    schema = model.schema
    columns = [schema.key, schema.event_time, *schema.features, schema.label]

    def sample(rows: pd.DataFrame) -> pd.DataFrame:
        taken = rows.sample(n=min(int(wanted["rows"]), len(rows)), random_state=int(wanted["seed"]))
        return taken.sort_index()[columns].reset_index(drop=True)

    training = sample(train_rows).assign(
        **{PREDICTION: float("nan"), REFERENCE_PART: TRAINING_PART}
    )
    holdout = sample(holdout_rows)
    holdout = holdout.assign(
        **{PREDICTION: model.predict_proba(holdout), REFERENCE_PART: HOLDOUT_PART}
    )
    log.info(
        "reference: %d of %d training rows, predictions on %d of %d holdout rows",
        len(training),
        len(train_rows),
        len(holdout),
        len(holdout_rows),
    )
    return pd.concat([training, holdout], ignore_index=True)


def evaluate(root: Path = Path(".")) -> None:
    """The holdout's metrics and plots, and the version's drift reference: one stage, so the
    model and the holdout are loaded (and xgboost and scikit-learn imported) once."""
    params = read_params(root)
    model = TrainedModel.load(root / MODEL)
    holdout = pd.read_parquet(root / HOLDOUT)
    reference = reference_rows(model, pd.read_parquet(root / TRAIN), holdout, params["reference"])
    storage.write_parquet(reference, root / REFERENCE)
    y_prob = model.predict_proba(holdout)
    y_true = holdout[model.schema.label].astype(int).to_numpy()
    gate = params["evaluation"]
    slices = evaluation.slice_values(holdout, gate["slices"])
    report = {
        **evaluation.quality(y_true, y_prob),
        "slices": evaluation.slice_quality(
            holdout, y_prob, model.schema.label, slices, gate["min_slice_rows"]
        ),
    }
    storage.write_json(report, root / METRICS)
    for name, rows in evaluation.plot_data(y_true, y_prob).items():
        storage.write_json(rows, root / PLOTS / f"{name}.json")


STAGES = {"prepare": prepare, "train": train, "evaluate": evaluate}


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in STAGES:
        raise SystemExit(f"usage: python -m driftline.training.stages {{{','.join(STAGES)}}}")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if argv[0] == "train":
        # xgboost imports scikit-learn (~2.4 s) only for its sklearn-style estimators; the
        # train stage fits a Booster and scores nothing, so it makes that import fail fast
        sys.modules.setdefault("sklearn", None)
    STAGES[argv[0]]()


if __name__ == "__main__":
    main(sys.argv[1:])
