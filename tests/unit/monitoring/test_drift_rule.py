"""The drift sensor's rule and cool-down, case by case (pure: no Evidently, no Airflow)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from driftline.monitoring.drift_rule import COOL_DOWN, NO_VALID_DATA, QUIET, DriftRule, judge
from driftline.monitoring.history import FIRED, NightSummary

RULE = DriftRule(drift_share=0.5, nights_drifted=2, nights_window=3,
                 quality_drop=0.05, cooldown_days=14)
DAY = dt.date(2013, 7, 10)


def night(days_ago: int, share: float, auc: float | None = None) -> NightSummary:
    return NightSummary(usecase="flights", day=DAY - dt.timedelta(days=days_ago),
                        model_version="1", reference_md5="x", rows=900,
                        dataset_drift=share >= 0.5, drift_share=share, roc_auc=auc,
                        champion_holdout_roc_auc=0.70 if auc is not None else None)


def test_k_of_the_last_n_nights_fires():
    verdict = judge(RULE, [night(2, 0.1), night(1, 0.6), night(0, 0.7)], DAY, None)
    assert verdict.decision == FIRED and "2 of the last 3 nights" in verdict.reason


def test_one_drifted_night_is_quiet():
    verdict = judge(RULE, [night(2, 0.1), night(1, 0.2), night(0, 0.9)], DAY, None)
    assert verdict.decision == QUIET and "(need 2)" in verdict.reason


def test_nights_older_than_the_window_do_not_count():
    verdict = judge(RULE, [night(5, 0.9), night(4, 0.9), night(0, 0.9)], DAY, None)
    assert verdict.decision == QUIET


def test_a_quality_drop_fires_without_drift():
    verdict = judge(RULE, [night(0, 0.1, auc=0.62)], DAY, None)
    assert verdict.decision == FIRED and "more than 0.05 below" in verdict.reason


def test_a_small_quality_dip_is_quiet():
    assert judge(RULE, [night(0, 0.1, auc=0.67)], DAY, None).decision == QUIET


def test_cool_down_holds_back_a_rule_that_holds():
    nights = [night(1, 0.6), night(0, 0.7)]
    held = judge(RULE, nights, DAY, last_training=DAY - dt.timedelta(days=5))
    assert held.decision == COOL_DOWN and "14-day cool-down" in held.reason
    after = judge(RULE, nights, DAY, last_training=DAY - dt.timedelta(days=14))
    assert after.decision == FIRED


def test_no_retraining_on_a_night_whose_validation_failed():
    verdict = judge(RULE, [night(1, 0.9), night(0, 0.9)], DAY, None, validation_passed=False)
    assert verdict.decision == NO_VALID_DATA and not verdict.fires


def test_k_must_fit_in_n():
    with pytest.raises(ValueError, match="k"):
        DriftRule(drift_share=0.5, nights_drifted=4, nights_window=3, quality_drop=None,
                  cooldown_days=0)


def unjudged(days_ago: int, share: float) -> NightSummary:
    """A night with too few labelled rows after the champion's window: no quality figure."""
    summary = night(days_ago, share)
    summary.champion_holdout_roc_auc = 0.70
    summary.quality_first_day = summary.quality_last_day = summary.day
    summary.quality_rows, summary.quality_judged = 150, False
    return summary


def test_a_night_not_judged_yet_is_quiet_on_quality_and_says_so():
    verdict = judge(RULE, [unjudged(0, 0.1)], DAY, None)
    assert verdict.decision == QUIET
    assert "quality not judged yet: 150 labelled predictions of 2013-07-10" in verdict.reason


def test_a_night_not_judged_yet_can_still_fire_on_drift():
    verdict = judge(RULE, [unjudged(1, 0.6), unjudged(0, 0.7)], DAY, None)
    assert verdict.decision == FIRED and "ROC AUC" not in verdict.reason


def test_a_quality_drop_names_the_rows_it_was_judged_on():
    low = night(0, 0.1, auc=0.62)
    low.quality_first_day, low.quality_last_day = DAY - dt.timedelta(days=6), DAY
    low.quality_rows, low.quality_judged = 5432, True
    verdict = judge(RULE, [low], DAY, None)
    assert verdict.decision == FIRED
    assert "(quality on 5,432 labelled predictions of 2013-07-04..2013-07-10)" in verdict.reason


def test_the_verdict_names_each_rule_that_held():
    from driftline.monitoring.drift_rule import DRIFT_SHARE_RULE, QUALITY_DROP_RULE

    drift = judge(RULE, [night(1, 0.6), night(0, 0.7)], DAY, None)
    quality = judge(RULE, [night(0, 0.1, auc=0.62)], DAY, None)
    both = judge(RULE, [night(1, 0.6), night(0, 0.7, auc=0.62)], DAY, None)
    cooling = judge(RULE, [night(0, 0.1, auc=0.62)], DAY, DAY - dt.timedelta(days=3))
    assert drift.fired_by == (DRIFT_SHARE_RULE,)
    assert quality.fired_by == (QUALITY_DROP_RULE,)
    assert both.fired_by == (DRIFT_SHARE_RULE, QUALITY_DROP_RULE)
    assert (cooling.decision, cooling.fired_by) == (COOL_DOWN, (QUALITY_DROP_RULE,))
    assert judge(RULE, [night(0, 0.1)], DAY, None).fired_by == ()


def test_the_evidence_of_a_quality_drop_links_the_quality_report():
    """Before: a night fired by the quality rule linked only the drift report, which said
    "Dataset Drift is NOT detected"."""
    from driftline.config import load_usecase
    from driftline.monitoring import nightly as monitoring
    from tests.conftest import repo_settings

    usecase = load_usecase("flights", repo_settings(Path("/nonexistent-home")))
    fired = night(0, 0.1, auc=0.62)
    fired.report_html = "/home/reports/flights/2013-07-10/drift.html"
    verdict = judge(RULE, [fired], DAY, None)
    evidence = monitoring.retraining_conf(usecase, fired, verdict)["evidence"]
    assert evidence["fired_by"] == ["quality drop"]
    assert evidence["report"] == "/home/reports/flights/2013-07-10/quality.html"
    assert evidence["reports"] == [evidence["report"]]


# What a firing trains on: the new regime (issue 22). Before, a firing always trained on the
# window ending holdout_days before the night, and learned only the rows that had drifted away.
ADAPTIVE = RULE.model_copy(update={"from_onset": True, "min_window_days": 5, "retry_days": 3})
FIRST_DAY = dt.date(2013, 1, 1)


def drifted_since(onset_days_ago: int, quiet_before: int = 20) -> list[NightSummary]:
    return [night(n, 0.8 if n <= onset_days_ago else 0.1) for n in range(quiet_before, -1, -1)]


def test_the_onset_is_the_first_night_of_the_signalled_run():
    from driftline.monitoring.drift_rule import onset

    assert onset(ADAPTIVE, drifted_since(6), DAY) == DAY - dt.timedelta(days=6)
    # a quiet night inside the run (k of n allows n - k of them) does not end it
    nights = drifted_since(6)
    nights[-3] = night(2, 0.1)
    assert onset(ADAPTIVE, nights, DAY) == DAY - dt.timedelta(days=6)
    # what drifted from the previous champion says nothing of this one
    nights = drifted_since(6)
    for earlier in nights[:-3]:
        earlier.model_version = "0"
    assert onset(ADAPTIVE, nights, DAY) == DAY - dt.timedelta(days=2)
    assert onset(ADAPTIVE, drifted_since(-1), DAY) is None  # tonight is quiet


def test_a_firing_waits_until_a_window_from_the_onset_is_long_enough():
    from driftline.monitoring.drift_rule import WAITING, with_window

    def verdict(onset_days_ago: int):
        nights = drifted_since(onset_days_ago)
        fired = judge(ADAPTIVE, nights, DAY, None)
        assert fired.fires
        return with_window(fired, ADAPTIVE, nights, DAY, 3, 31, FIRST_DAY)

    # onset 6 nights ago, 3-day holdout: the window from it holds 4 days < 5
    waiting = verdict(6)
    assert waiting.decision == WAITING and not waiting.fires
    assert "until 2013-07-11" in waiting.reason
    # a night later it holds 5: it fires, on the onset .. the day before the holdout
    ready = verdict(7)
    assert ready.fires
    assert (ready.window.start, ready.window.end, ready.window.days) == (
        DAY - dt.timedelta(days=7), DAY - dt.timedelta(days=3), 5)
    assert ready.window.onset == DAY - dt.timedelta(days=7)


def test_without_from_onset_a_firing_trains_on_the_configured_window():
    from driftline.monitoring.drift_rule import with_window

    nights = drifted_since(6)
    fired = with_window(judge(RULE, nights, DAY, None), RULE, nights, DAY, 7, 31, FIRST_DAY)
    assert fired.fires and fired.window.onset is None
    assert (fired.window.end, fired.window.days) == (DAY - dt.timedelta(days=7), 31)
    # an onset older than the window changes nothing
    old = with_window(judge(ADAPTIVE, drifted_since(40, 60), DAY, None), ADAPTIVE,
                      drifted_since(40, 60), DAY, 7, 31, FIRST_DAY)
    assert (old.window.days, old.window.onset) == (31, None)


def test_a_refused_retraining_is_retried_after_retry_days_not_the_cool_down():
    nights = drifted_since(6)
    trained = DAY - dt.timedelta(days=30)  # the champion's training night
    refused = DAY - dt.timedelta(days=2)  # a firing after it that did not replace it
    assert judge(ADAPTIVE, nights, DAY, trained, last_fired=refused).decision == COOL_DOWN
    later = DAY - dt.timedelta(days=3)
    assert judge(ADAPTIVE, nights, DAY, trained, last_fired=later).fires
    # the firing that made the champion starts the cool-down, not the retry wait
    champion = DAY - dt.timedelta(days=5)
    held = judge(ADAPTIVE, nights, DAY, champion, last_fired=champion)
    assert held.decision == COOL_DOWN and "14-day cool-down" in held.reason
    # retry_days unset: a refused retraining waits the whole cool-down, as before
    assert judge(RULE, nights, DAY, trained, last_fired=later).decision == COOL_DOWN


def test_a_quality_drop_among_undrifted_nights_trains_on_the_configured_window_at_once():
    """On 2013's flights a week's ROC AUC dips for a few nights and recovers: waiting for a
    window from the dip lost the retraining of 8 April, which served May."""
    from driftline.monitoring.drift_rule import QUALITY_DROP_RULE, with_window

    nights = [night(n, 0.1) for n in range(20, 0, -1)] + [night(0, 0.1, auc=0.62)]
    fired = judge(ADAPTIVE, nights, DAY, None)
    assert fired.fired_by == (QUALITY_DROP_RULE,)
    verdict = with_window(fired, ADAPTIVE, nights, DAY, 7, 31, FIRST_DAY)
    assert verdict.fires and (verdict.window.days, verdict.window.onset) == (31, None)


def test_a_quality_drop_on_a_drifted_night_waits_for_the_new_regime():
    """The generated shift's first night: its inputs drifted (one night, not yet k of n) and
    its quality fell. Training at once would learn only the old regime."""
    from driftline.monitoring.drift_rule import QUALITY_DROP_RULE, WAITING, with_window

    nights = [night(n, 0.1) for n in range(20, 0, -1)] + [night(0, 0.8, auc=0.62)]
    fired = judge(ADAPTIVE, nights, DAY, None)
    assert fired.fired_by == (QUALITY_DROP_RULE,)
    assert with_window(fired, ADAPTIVE, nights, DAY, 3, 31, FIRST_DAY).decision == WAITING
