"""Scoring without a champion says what to do instead of crashing."""

from __future__ import annotations

import datetime as dt

import pytest

from driftline.monitoring.scoring import NoChampionError, score_ahead


def test_no_champion_yet_is_a_clear_error(usecase, settings):
    with pytest.raises(NoChampionError, match="no champion yet: trigger flights_training"):
        score_ahead(usecase, settings, dt.date(2013, 2, 1))
    assert not (settings.home / "predictions").exists()
