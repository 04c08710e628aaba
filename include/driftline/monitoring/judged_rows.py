"""Which rows a night's figures judge, as pure functions of explicit inputs.

Every figure judges predictions as they were made ahead and stored
(driftline.serving.predictions), never a re-scoring. Feature drift judges the rows scored in
the trailing window (`monitoring.current_days`) that ends on the newest day scored: data as
the model saw it. What judges the model's answers counts only predictions of days after the
training window of the version that made them: quality (ROC AUC, log loss) on those of the
days whose labels have arrived, since a day a model was fitted on would read as quality it
never had; and the prediction's drift on the night's version's own, since in-sample
predictions are sharper than any night's and would read as drift against out-of-sample ones.
Predictions made ahead meet this by construction; a night rerun after a retraining is the
exception it guards against.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

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


def after_window(
    days: pd.Series, versions: pd.Series, window_ends: dict[str, dt.date | None]
) -> pd.Series:
    """Whether each prediction's day is after the training window of the version that made
    it (a version whose window end is unknown cannot show it: False)."""
    ends = versions.astype(str).map(lambda v: window_ends.get(v))
    known = ends.notna()
    inside = pd.Series(False, index=days.index)
    inside[known] = [day > end for day, end in zip(days[known], ends[known], strict=True)]
    return inside


def quality_judged(labelled_rows: int, min_labelled_rows: int) -> bool:
    """Whether there are enough eligible labelled rows for a quality figure worth reading."""
    return labelled_rows >= min_labelled_rows
