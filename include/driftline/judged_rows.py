"""Which rows a night's figures judge, as pure functions of explicit inputs.

Feature drift judges the night's trailing window (`monitoring.current_days`): it compares
data, not the model's answers, so rows the model was trained on do not flatter it. What
judges the model's answers counts only the days after its training window ("unseen" days):
quality (ROC AUC, log loss) on their labelled rows, since a day the model was fitted on would
read as quality it never had; and the prediction's drift on their predictions, since in-sample
predictions are sharper than any night's and would read as drift against out-of-sample ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pandas as pd


@dataclass(frozen=True)
class Days:
    """An inclusive range of local days."""

    first: dt.date
    last: dt.date

    def __post_init__(self) -> None:
        if self.first > self.last:
            raise ValueError(f"an empty day range: {self.first} is after {self.last}")

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}..{self.last}"

    @property
    def count(self) -> int:
        return (self.last - self.first).days + 1


def drift_days(night: dt.date, current_days: int) -> Days:
    """The night and the `current_days - 1` days before it."""
    return Days(night - dt.timedelta(days=current_days - 1), night)


def unseen_days(night: dt.date, current_days: int, window_end: dt.date | None) -> Days | None:
    """The days of the trailing window after the judged model's training window.

    None when no day qualifies: the window ends on or after the night, or it is unknown
    (a version whose window end was not recorded cannot show that its rows are unseen).
    """
    if window_end is None:
        return None
    first = max(drift_days(night, current_days).first, window_end + dt.timedelta(days=1))
    return Days(first, night) if first <= night else None


def local_days(rows: pd.DataFrame, event_time: str, timezone: str) -> pd.Series:
    """Each row's local day of its event time: the day training assigned it to."""
    return rows[event_time].dt.tz_convert(ZoneInfo(timezone)).dt.date


def on_days(rows: pd.DataFrame, days: Days | None, event_time: str, timezone: str) -> pd.Series:
    """Whether each row's local event day is in `days` (none is when `days` is None)."""
    if days is None or rows.empty:
        return pd.Series(False, index=rows.index)
    day = local_days(rows, event_time, timezone)
    return (day >= days.first) & (day <= days.last)


def rows_of_days(
    rows: pd.DataFrame, days: Days | None, event_time: str, timezone: str
) -> pd.DataFrame:
    """The rows whose local event day is in `days`."""
    return rows[on_days(rows, days, event_time, timezone)]


def quality_rows(
    rows: pd.DataFrame, days: Days | None, event_time: str, timezone: str, label: str
) -> pd.DataFrame:
    """The labelled rows of `days`: what a night's quality figures may be computed on."""
    eligible = rows_of_days(rows, days, event_time, timezone)
    return eligible[eligible[label].notna()]


def blank_outside(
    rows: pd.DataFrame, days: Days | None, column: str, event_time: str, timezone: str
) -> pd.DataFrame:
    """The rows with `column` emptied outside `days`, so that a report judges that column on
    the rows of those days only (Evidently's drift tests leave missing values out)."""
    inside = on_days(rows, days, event_time, timezone)
    return rows.assign(**{column: rows[column].where(inside)})


def quality_judged(labelled_rows: int, min_labelled_rows: int) -> bool:
    """Whether there are enough eligible labelled rows for a quality figure worth reading."""
    return labelled_rows >= min_labelled_rows
