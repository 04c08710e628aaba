"""The champion/challenger rule, case by case (a pure function: no MLflow needed)."""

from __future__ import annotations

import math

import pytest

from driftline.config import GateConfig
from driftline.training.registry import Scores, decide

GATE = GateConfig(primary_metric="roc_auc", min_improvement=0.002, floor=0.55,
                  slice_tolerance=0.03, slices={"origin": 0})
SLICES = {"origin=EWR": 0.66, "origin=JFK": 0.65, "origin=LGA": 0.67}


def scores(auc: float, **slices: float) -> Scores:
    return Scores(overall={"roc_auc": auc}, slices={**SLICES, **slices})


def test_better_by_the_margin_is_promoted():
    decision = decide(scores(0.70), scores(0.66), GATE)
    assert decision.promote and "beats the champion by +0.0400" in decision.reason


def test_worse_is_not_promoted():
    decision = decide(scores(0.64), scores(0.66), GATE)
    assert not decision.promote and "does not beat" in decision.reason


def test_equal_is_not_promoted():
    assert not decide(scores(0.66), scores(0.66), GATE).promote


def test_better_but_within_the_margin_is_not_promoted():
    assert not decide(scores(0.661), scores(0.66), GATE).promote


def test_no_champion_yet_promotes_a_model_above_the_floor():
    decision = decide(scores(0.60), None, GATE)
    assert decision.promote and decision.reason == "no champion yet"


def test_below_the_floor_is_never_promoted_unforced():
    assert not decide(scores(0.54), None, GATE).promote
    decision = decide(scores(0.54), scores(0.50), GATE)
    assert not decision.promote and "misses the floor 0.55" in decision.reason


def test_better_overall_but_worse_on_one_slice_is_not_promoted():
    challenger = scores(0.70, **{"origin=JFK": 0.60})  # champion 0.65 on JFK: -0.05
    decision = decide(challenger, scores(0.66), GATE)
    assert not decision.promote
    assert "origin=JFK by 0.05" in decision.reason
    assert decision.checks["slice_regressions"] == {"origin=JFK": 0.05}


def test_a_slice_loss_within_the_tolerance_is_accepted():
    assert decide(scores(0.70, **{"origin=JFK": 0.63}), scores(0.66), GATE).promote


def test_forced_promotes_even_a_worse_model_and_says_so():
    decision = decide(scores(0.40), scores(0.66), GATE, force=True)
    assert decision.promote and "force_promote" in decision.reason


def test_an_undefined_metric_is_not_promoted():
    assert not decide(scores(math.nan), None, GATE).promote


@pytest.mark.parametrize("metric", ["log_loss", "brier"])
def test_lower_is_better_metrics_compare_the_other_way(metric):
    gate = GateConfig(primary_metric=metric, min_improvement=0.001, floor=0.9)
    better = Scores(overall={metric: 0.40})
    worse = Scores(overall={metric: 0.45})
    assert decide(better, worse, gate).promote
    assert not decide(worse, better, gate).promote


def _holdout(usecase, first: str, days: int, rows_per_day: int):
    import pandas as pd

    stamps = [
        pd.Timestamp(f"{first} 12:00", tz=usecase.timezone) + pd.Timedelta(days=d)
        for d in range(days) for _ in range(rows_per_day)
    ]
    return pd.DataFrame({usecase.event_time: pd.Series(stamps).dt.tz_convert("UTC")})


def test_the_champion_is_compared_only_on_holdout_days_outside_its_training_window(usecase):
    """Before: a champion trained on a later window was scored on days it had trained on, so
    it won by construction."""
    from driftline.training.registry import comparable_holdout

    holdout = _holdout(usecase, "2013-01-25", 7, 300)  # 25..31 January
    compared = comparable_holdout(holdout, usecase, "3", "2013-01-01..2013-01-29")
    assert compared.excluded_days == ["2013-01-25", "2013-01-26", "2013-01-27", "2013-01-28",
                                      "2013-01-29"]
    assert compared.days == ["2013-01-30", "2013-01-31"] and len(compared.rows) == 600
    assert compared.too_few  # min_compare_rows 1000 in usecases/flights.yaml
    decision = decide(scores(0.70), scores(0.60), GATE, comparison=compared)
    assert not decision.promote
    assert decision.reason.startswith("not compared with champion version 3: 600 holdout rows")
    assert "2013-01-25..2013-01-29 are in champion version 3's training window" in decision.reason
    assert decide(scores(0.70), None, GATE, force=True, comparison=compared).promote


def test_a_champion_of_an_earlier_window_is_compared_on_the_whole_holdout(usecase):
    from driftline.training.registry import comparable_holdout

    holdout = _holdout(usecase, "2013-02-01", 7, 300)
    compared = comparable_holdout(holdout, usecase, "1", "2013-01-01..2013-01-31")
    assert compared.excluded_days == [] and len(compared.rows) == 2100
    decision = decide(scores(0.70), scores(0.60), GATE, comparison=compared)
    assert decision.promote
    assert decision.reason.endswith(
        "(compared on 2013-02-01..2013-02-07 (7 days, 2,100 rows neither model trained on))")
    assert decision.checks["compared"]["rows"] == 2100
