"""Which days and rows a night's figures judge (pure: explicit days and frames)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from driftline.monitoring.judged_rows import Days, after_window, drift_days, quality_judged

JAN_31 = dt.date(2013, 1, 31)  # the window end of `make demo`'s champion


def feb(day: int) -> dt.date:
    return dt.date(2013, 2, day)


def test_drift_judges_the_trailing_window_whatever_the_model():
    assert drift_days(feb(1), 7) == Days(dt.date(2013, 1, 26), feb(1))
    assert drift_days(feb(1), 1) == Days(feb(1), feb(1))


def test_days_print_as_a_range_or_one_day_and_refuse_an_empty_range():
    assert str(Days(feb(1), feb(7))) == "2013-02-01..2013-02-07"
    assert str(Days(feb(1), feb(1))) == "2013-02-01" and Days(feb(1), feb(7)).count == 7
    with pytest.raises(ValueError, match="empty day range"):
        Days(feb(2), feb(1))


def test_a_prediction_counts_only_after_the_window_of_the_version_that_made_it():
    """Version 1's window ends 31 January, version 2's on 7 February; a rerun night scored
    5 February again with version 2 (trained on it): that prediction does not count."""
    days = pd.Series([JAN_31, feb(1), feb(5), feb(5), feb(8), feb(9)])
    versions = pd.Series(["1", "1", "1", "2", "2", "3"])
    judged = after_window(days, versions, {"1": JAN_31, "2": feb(7), "3": None})
    assert judged.tolist() == [False, True, True, False, True, False]
    assert after_window(days.iloc[:0], versions.iloc[:0], {}).empty


def test_quality_is_judged_from_the_minimum_on():
    assert quality_judged(200, 200) and not quality_judged(199, 200)
