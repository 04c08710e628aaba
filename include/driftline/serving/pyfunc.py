"""The model as MLflow logs it: a pyfunc that scores raw curated rows.

It is self-contained: the version carries the few driftline modules it imports (MODEL_MODULES,
as `code_paths`) and its pip requirements name every library they import, so it loads and
predicts wherever those requirements are installed, without a driftline checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from mlflow.pyfunc import PythonModel

from driftline.training.model import TrainedModel

# The driftline files the logged model imports (tests/unit/serving/test_serving.py checks the list).
MODEL_MODULES = (
    "driftline/__init__.py",
    "driftline/training/__init__.py",
    "driftline/training/model.py",
    "driftline/serving/__init__.py",
    "driftline/serving/pyfunc.py",
)
# What those modules import, pinned to the versions installed here.
MODEL_REQUIREMENTS = ("mlflow", "xgboost", "pandas", "numpy")


class DelayModel(PythonModel):
    """Scores raw curated rows: the saved booster plus its category encoding."""

    def load_context(self, context) -> None:
        self.model = TrainedModel.load(Path(context.artifacts["model"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        return pd.Series(self.model.predict_proba(model_input), name="probability")


def model_code(target: Path) -> Path:
    """A copy of MODEL_MODULES under `target`: the `code_paths` folder of a logged version."""
    source = Path(__file__).resolve().parents[2]  # the folder that holds the driftline package
    for module in MODEL_MODULES:
        (target / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / module, target / module)
    return target / "driftline"


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]
