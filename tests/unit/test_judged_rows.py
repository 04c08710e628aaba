"""Which days and rows a night's figures judge (pure: explicit days and frames)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from driftline.judged_rows import (
    Days,
    blank_outside,
    drift_days,
    quality_judged,
    quality_rows,
    rows_of_days,
    unseen_days,
)

TZ = "America/New_York"
JAN_31 = dt.date(2013, 1, 31)  # the window end of `make demo`'s champion


def feb(day: int) -> dt.date:
    return dt.date(2013, 2, day)


def test_drift_judges_the_trailing_window_whatever_the_model():
    assert drift_days(feb(1), 7) == Days(dt.date(2013, 1, 26), feb(1))
    assert drift_days(feb(1), 1) == Days(feb(1), feb(1))


@pytest.mark.parametrize(
    ("night", "expected"),
    [
        (feb(1), Days(feb(1), feb(1))),  # six of the seven trailing days were trained on
        (feb(4), Days(feb(1), feb(4))),
        (feb(7), Days(feb(1), feb(7))),  # the first full week after the window
        (feb(14), Days(feb(8), feb(14))),  # the window is long past: the trailing week
    ],
)
def test_quality_starts_the_day_after_the_window_end(night, expected):
    assert unseen_days(night, 7, JAN_31) == expected


@pytest.mark.parametrize("night", [JAN_31, dt.date(2013, 1, 20)])
def test_no_quality_day_on_or_before_the_window_end(night):
    assert unseen_days(night, 7, JAN_31) is None


def test_an_unknown_window_end_judges_no_quality():
    assert unseen_days(feb(14), 7, None) is None


def test_days_print_as_a_range_or_one_day_and_refuse_an_empty_range():
    assert str(Days(feb(1), feb(7))) == "2013-02-01..2013-02-07"
    assert str(Days(feb(1), feb(1))) == "2013-02-01" and Days(feb(1), feb(7)).count == 7
    with pytest.raises(ValueError, match="empty day range"):
        Days(feb(2), feb(1))


def rows(*stamps: str, labels=None) -> pd.DataFrame:
    """Rows with a UTC event time, as the curated store keeps them."""
    times = pd.to_datetime(list(stamps), utc=True)
    label = [1.0] * len(stamps) if labels is None else labels
    return pd.DataFrame({"sched_time": times, "is_delayed": label, "flight_id": range(len(times))})


def test_a_row_belongs_to_its_new_york_day_not_its_utc_day():
    # 23:30 in New York on 31 January is 04:30 UTC on 1 February: a training day
    frame = rows("2013-02-01 04:30", "2013-02-01 05:30", "2013-02-02 12:00")
    picked = rows_of_days(frame, Days(feb(1), feb(1)), "sched_time", TZ)
    assert picked["flight_id"].tolist() == [1]


def test_quality_rows_are_the_labelled_rows_of_the_eligible_days():
    frame = rows(
        "2013-01-31 15:00",  # trained on
        "2013-02-01 15:00",
        "2013-02-01 16:00",  # cancelled: no label
        "2013-02-02 15:00",
        labels=[1.0, 0.0, np.nan, 1.0],
    )
    picked = quality_rows(frame, unseen_days(feb(2), 7, JAN_31), "sched_time", TZ, "is_delayed")
    assert picked["flight_id"].tolist() == [1, 3]
    assert quality_rows(frame, None, "sched_time", TZ, "is_delayed").empty


def test_predictions_outside_the_unseen_days_are_blanked_not_dropped():
    frame = rows("2013-01-31 15:00", "2013-02-01 15:00").assign(prediction=[0.9, 0.4])
    judged = blank_outside(frame, unseen_days(feb(1), 7, JAN_31), "prediction", "sched_time", TZ)
    assert judged["flight_id"].tolist() == [0, 1]  # the features keep every row
    assert judged["prediction"].isna().tolist() == [True, False]
    assert frame["prediction"].notna().all()  # the input is not changed
    assert blank_outside(frame, None, "prediction", "sched_time", TZ)["prediction"].isna().all()


def test_quality_is_judged_from_the_minimum_on():
    assert quality_judged(200, 200) and not quality_judged(199, 200)
