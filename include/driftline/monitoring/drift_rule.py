"""When drift is worth a retraining: the drift sensor's rule, as a pure function.

Drift share at or above a threshold on k of the last n nights, or a quality drop beyond a
margin below the champion's holdout figure once enough labelled rows after its training
window exist (a night "not judged yet" has no quality figure, so it can only be quiet on
quality); never inside a cool-down after the last retraining (or, with `retry_days`, after
the champion's training, and inside the retry wait after a retraining the gate refused), and
never on a night whose ETL validation failed.

A firing names the window to train on. With `from_onset` a firing among drifted nights
trains from the shift's onset, so that the new champion learns the new regime rather than the one
that drifted away; until the onset leaves `min_window_days` days before the holdout the rule
waits.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from driftline.config import DriftRule
from driftline.monitoring.history import FIRED, NightSummary

QUIET = "skipped: quiet"
COOL_DOWN = "skipped: cool-down"
WAITING = "skipped: waiting for the new regime"
NO_VALID_DATA = "skipped: validation failed"


# The rules that can fire a night (a Verdict's `fired_by`, the history's `fired_by`).
DRIFT_SHARE_RULE, QUALITY_DROP_RULE = "drift share", "quality drop"


@dataclass(frozen=True)
class Window:
    """The training window a firing asks for; its holdout is the holdout_days after it."""

    end: dt.date
    days: int
    onset: dt.date | None = None  # where the shift began, when the window starts there

    @property
    def start(self) -> dt.date:
        return self.end - dt.timedelta(days=self.days - 1)


@dataclass(frozen=True)
class Verdict:
    decision: str  # FIRED, QUIET, COOL_DOWN, WAITING, NO_VALID_DATA
    reason: str
    fired_by: tuple[str, ...] = ()  # the rules that held (also inside a cool-down)
    window: Window | None = None  # what a firing trains on (None: the configured window)

    @property
    def fires(self) -> bool:
        return self.decision == FIRED


def onset(rule: DriftRule, nights: list[NightSummary], day: dt.date) -> dt.date | None:
    """The first night of the run of drifted nights (drift share at or above the rule's) that
    ends at `day`, among the nights judged with the champion of `day` (what drifted from an
    earlier one says nothing of this one). The run may skip as many quiet nights as the
    k-of-n rule does. A quality drop has no onset: the inputs may not have moved at all."""
    by_day = {n.day: n for n in nights}
    tonight = by_day.get(day)
    if tonight is None:
        return None
    gap_allowed = rule.nights_window - rule.nights_drifted
    first, gap, current = None, 0, day
    while (night := by_day.get(current)) is not None:
        if night.model_version != tonight.model_version:
            break
        if night.drift_share >= rule.drift_share:
            first, gap = current, 0
        else:
            gap += 1
            if gap > gap_allowed:
                break
        current -= dt.timedelta(days=1)
    return first


def training_window(
    rule: DriftRule,
    day: dt.date,
    began: dt.date | None,
    holdout_days: int,
    window_days: int,
    first_day: dt.date,
) -> Window | None:
    """The newest window whose holdout ends on `day` (later days do not exist yet), no longer
    than window_days and not before the use-case's first day; with `from_onset`, not before
    the onset either: None while that leaves fewer than min_window_days days."""
    end = day - dt.timedelta(days=holdout_days)
    start = max(end - dt.timedelta(days=window_days - 1), first_day)
    if rule.from_onset and began is not None and began > start:
        days = (end - began).days + 1
        return Window(end, days, began) if days >= rule.min_window_days else None
    return Window(end, (end - start).days + 1)


def judge(
    rule: DriftRule,
    nights: list[NightSummary],
    day: dt.date,
    last_training: dt.date | None,
    validation_passed: bool = True,
    last_fired: dt.date | None = None,
) -> Verdict:
    """The decision for `day`, given the recorded nights up to it (oldest first).

    `last_training`: the night the champion was trained on (the cool-down counts from it);
    `last_fired`: the last night the rule fired (if its retraining did not make the
    champion, the next waits retry_days from it).
    """
    if not validation_passed:
        return Verdict(NO_VALID_DATA, f"the ETL validation of {day} failed: no retraining")
    recent = [n for n in nights if (day - n.day).days < rule.nights_window]
    drifted = [n for n in recent if n.drift_share >= rule.drift_share]
    today = next((n for n in recent if n.day == day), None)
    reasons, held = [], []
    if len(drifted) >= rule.nights_drifted:
        held.append(DRIFT_SHARE_RULE)
        reasons.append(
            f"drift share >= {rule.drift_share} on {len(drifted)} of the last "
            f"{rule.nights_window} nights ({', '.join(str(n.day) for n in drifted)})"
        )
    quality_judged = (
        today is not None and today.quality_judged is not False and today.roc_auc is not None
    )
    if (
        rule.quality_drop is not None
        and quality_judged
        and today.champion_holdout_roc_auc is not None
        and today.roc_auc < today.champion_holdout_roc_auc - rule.quality_drop
    ):
        held.append(QUALITY_DROP_RULE)
        reasons.append(
            f"ROC AUC {today.roc_auc:.4f} ({today.quality_basis()}) is more than "
            f"{rule.quality_drop} below the champion's holdout {today.champion_holdout_roc_auc:.4f}"
        )
    if not reasons:
        share = f"{today.drift_share:.2f}" if today else "unknown"
        unjudged = f"; {today.quality_basis()}" if today and today.quality_judged is False else ""
        return Verdict(
            QUIET,
            f"drift share {share} tonight; {len(drifted)} of the last "
            f"{rule.nights_window} nights at or above "
            f"{rule.drift_share} (need {rule.nights_drifted}){unjudged}",
        )
    if last_training is not None and (day - last_training).days < rule.cooldown_days:
        return Verdict(
            COOL_DOWN,
            f"{'; '.join(reasons)}; but the last retraining was on "
            f"{last_training}, inside the {rule.cooldown_days}-day cool-down",
            tuple(held),
        )
    retry_days = rule.cooldown_days if rule.retry_days is None else rule.retry_days
    refused = last_fired is not None and (last_training is None or last_fired > last_training)
    if refused and (day - last_fired).days < retry_days:
        return Verdict(
            COOL_DOWN,
            f"{'; '.join(reasons)}; but the retraining started on {last_fired} did not replace "
            f"the champion, and the next waits {retry_days} days",
            tuple(held),
        )
    return Verdict(FIRED, "; ".join(reasons), tuple(held))


def with_window(
    verdict: Verdict,
    rule: DriftRule,
    nights: list[NightSummary],
    day: dt.date,
    holdout_days: int,
    window_days: int,
    first_day: dt.date,
) -> Verdict:
    """A firing with the window it trains on; WAITING while the onset leaves too short a one.
    Only drifted nights make an onset: a quality drop among undrifted nights trains on the
    configured window at once (on 2013's flights a week's ROC AUC dips for a few nights and
    recovers: waiting for "its" regime lost the retraining that served May)."""
    if not verdict.fires:
        return verdict
    began = onset(rule, nights, day) if rule.from_onset else None
    window = training_window(rule, day, began, holdout_days, window_days, first_day)
    if window is None:
        ready = began + dt.timedelta(days=rule.min_window_days + holdout_days - 1)
        return Verdict(
            WAITING,
            f"{verdict.reason}; the shift began on {began}: a window from it holds fewer than "
            f"{rule.min_window_days} days before the {holdout_days}-day holdout until {ready}",
            verdict.fired_by,
        )
    if window.onset is not None:
        reason = f"{verdict.reason}; trains on {window.start}..{window.end}, from the onset"
        return Verdict(verdict.decision, reason, verdict.fired_by, window)
    return Verdict(verdict.decision, verdict.reason, verdict.fired_by, window)
