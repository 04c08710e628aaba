"""The model: XGBoost (hist, native categorical splits) over the use-case's features.

Categorical columns are encoded with a vocabulary fixed at training time and saved with the
booster, so the same raw curated rows score the same wherever the model is loaded; a value
unseen in training becomes missing rather than an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import xgboost as xgb

    from driftline.config import UseCase

BOOSTER_FILE = "booster.ubj"
ENCODING_FILE = "encoding.json"


@dataclass(frozen=True)
class FeatureSchema:
    """What the model reads and predicts; written into params.yaml so a version is complete."""

    key: str
    event_time: str
    label: str
    categorical: list[str]
    numerical: list[str]

    @property
    def features(self) -> list[str]:
        return [*self.categorical, *self.numerical]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureSchema:
        return cls(
            **{k: raw[k] for k in ("key", "event_time", "label", "categorical", "numerical")}
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "event_time": self.event_time,
            "label": self.label,
            "categorical": list(self.categorical),
            "numerical": list(self.numerical),
        }


def feature_schema(usecase: UseCase) -> FeatureSchema:
    """The model schema of a use-case's config (here, not in training: no MLflow import)."""
    return FeatureSchema(
        key=usecase.key,
        event_time=usecase.event_time,
        label=usecase.label.name,
        categorical=list(usecase.features.categorical),
        numerical=list(usecase.features.numerical),
    )


@dataclass
class TrainedModel:
    schema: FeatureSchema
    vocabulary: dict[str, list[str]]
    booster: xgb.Booster

    def matrix(self, frame: pd.DataFrame) -> xgb.DMatrix:
        import xgboost as xgb  # ~2 s: not for the DVC prepare stage, which needs no model

        return xgb.DMatrix(
            encode(frame, self.schema, self.vocabulary),
            feature_types=["c"] * len(self.schema.categorical) + ["q"] * len(self.schema.numerical),
            enable_categorical=True,
        )

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """P(label) for each row of `frame` (any frame with the schema's feature columns)."""
        missing = [c for c in self.schema.features if c not in frame.columns]
        if missing:
            raise ValueError(f"cannot score: input lacks feature columns {missing}")
        return self.booster.predict(self.matrix(frame)).astype(np.float64)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(folder / BOOSTER_FILE)
        (folder / ENCODING_FILE).write_text(
            json.dumps(
                {"schema": self.schema.as_dict(), "vocabulary": self.vocabulary},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )

    @classmethod
    def load(cls, folder: Path) -> TrainedModel:
        for name in (BOOSTER_FILE, ENCODING_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"model folder {folder} lacks {name}")
        import xgboost as xgb

        meta = json.loads((folder / ENCODING_FILE).read_text())
        booster = xgb.Booster()
        booster.load_model(folder / BOOSTER_FILE)
        return cls(FeatureSchema.from_dict(meta["schema"]), meta["vocabulary"], booster)


def vocabulary_of(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, list[str]]:
    return {c: sorted(frame[c].dropna().astype(str).unique().tolist()) for c in schema.categorical}


def encode(
    frame: pd.DataFrame, schema: FeatureSchema, vocabulary: dict[str, list[str]]
) -> pd.DataFrame:
    """Numeric matrix: categories as their vocabulary index (unseen: NaN), numbers as float."""
    columns = {}
    for column in schema.categorical:
        codes = {value: float(i) for i, value in enumerate(vocabulary[column])}
        columns[column] = (
            frame[column]
            .map(lambda v, codes=codes: codes.get(str(v), np.nan) if pd.notna(v) else np.nan)
            .astype(np.float64)
        )
    for column in schema.numerical:
        columns[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    return pd.DataFrame(columns, index=frame.index)[schema.features]


def fit(train: pd.DataFrame, schema: FeatureSchema, params: dict[str, Any]) -> TrainedModel:
    """Train on the labelled rows of `train` with the `train` section of params.yaml."""
    import xgboost as xgb

    labelled = train[train[schema.label].notna()]
    if labelled.empty:
        raise ValueError("no labelled rows to train on")
    params = dict(params)
    rounds = int(params.pop("num_boost_round"))
    booster_params = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        **params,
    }
    model = TrainedModel(schema, vocabulary_of(labelled, schema), xgb.Booster())
    matrix = model.matrix(labelled)
    matrix.set_label(labelled[schema.label].astype(int).to_numpy())
    model.booster = xgb.train(booster_params, matrix, num_boost_round=rounds)
    return model
