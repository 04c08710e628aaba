"""A version's drift reference split into its two parts, and the fallback for old versions."""

from __future__ import annotations

import pandas as pd
import pytest

from driftline.monitoring.history import PREDICTION_REFERENCE_HOLDOUT, PREDICTION_REFERENCE_TRAINING
from driftline.monitoring.nightly import MonitoringError, split_reference
from driftline.training import stages


def reference(parts: list[str] | None) -> pd.DataFrame:
    rows = len(parts) if parts else 3
    frame = pd.DataFrame({"flight_id": range(rows), "distance": [100.0 + i for i in range(rows)],
                          "prediction": [0.1 * (i + 1) for i in range(rows)]})
    return frame if parts is None else frame.assign(**{stages.REFERENCE_PART: parts})


def test_features_come_from_training_rows_and_the_prediction_from_holdout_rows():
    frame = reference(["training", "training", "holdout"])
    frame.loc[frame[stages.REFERENCE_PART] == "training", "prediction"] = float("nan")
    split = split_reference(frame)
    assert split.kind == PREDICTION_REFERENCE_HOLDOUT
    assert split.features["flight_id"].tolist() == [0, 1]
    assert "prediction" not in split.features and stages.REFERENCE_PART not in split.features
    assert split.predictions.tolist() == [pytest.approx(0.3)]


def test_a_reference_made_before_holdout_predictions_falls_back_and_says_so():
    split = split_reference(reference(None))
    assert split.kind == PREDICTION_REFERENCE_TRAINING
    assert len(split.features) == 3 and split.predictions.tolist() == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize("parts", [["training", "training"], ["holdout"]])
def test_a_reference_missing_a_part_is_refused(parts):
    with pytest.raises(MonitoringError, match="both must be non-empty"):
        split_reference(reference(parts))
