"""Scoring: without a champion it says what to do instead of crashing; a version's predictions
land on their own rows with its number."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from driftline.config import PREDICTION
from driftline.monitoring.scoring import (
    LoadedVersion,
    NoChampionError,
    load_version,
    score_ahead,
    score_rows,
)
from driftline.serving.predictions import MODEL_VERSION, SCORED_AT


def test_no_champion_yet_is_a_clear_error(usecase, settings):
    with pytest.raises(NoChampionError, match="no champion yet: trigger flights_training"):
        score_ahead(usecase, settings, dt.date(2013, 2, 1))
    assert not (settings.home / "predictions").exists()


class _FeatureCount:
    """What a registered version offers the night: predict() on the feature columns, one
    probability per row (here: how many features the row is given, over 100)."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        self.seen.append(list(frame.columns))
        return frame.notna().sum(axis=1).to_numpy() / 100


def test_scored_rows_keep_their_index_and_record_the_version(usecase):
    """The rows a night scores come filtered (refused rows gone), so their index has gaps: each
    prediction must land on its own row, by the version given, never on another's."""
    rows = pd.DataFrame({column: [1.0, 2.0] for column in usecase.scoring_columns}, index=[7, 3])
    rows.loc[3, "temp"] = None
    model = _FeatureCount()
    scored = score_rows(usecase, LoadedVersion("4", model), rows)
    assert model.seen == [usecase.features.all]  # the key and time are not features
    assert scored[PREDICTION].to_dict() == {7: 0.22, 3: 0.21}
    assert scored[PREDICTION].dtype == "float64"
    assert scored[MODEL_VERSION].tolist() == ["4", "4"]
    assert str(scored[SCORED_AT].dt.tz) == "UTC"
    # a day with no row to score asks nothing of the model
    empty = score_rows(usecase, LoadedVersion("4", model), rows.iloc[:0])
    assert empty.empty and empty[PREDICTION].dtype == "float64" and len(model.seen) == 1


def test_a_loaded_version_is_kept_while_it_is_the_one_asked_for(usecase, settings):
    loaded = LoadedVersion("4", _FeatureCount())
    assert load_version(usecase, settings, "4", loaded) is loaded
    assert not settings.home.exists()  # the registry was not asked
