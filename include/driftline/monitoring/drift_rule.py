"""When drift is worth a retraining: the drift sensor's rule, as a pure function.

Drift share at or above a threshold on k of the last n nights, or a quality drop beyond a
margin below the champion's holdout figure once enough labelled rows after its training
window exist (a night "not judged yet" has no quality figure, so it can only be quiet on
quality); never inside a cool-down after the last retraining, and never on a night whose ETL
validation failed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from driftline.config import DriftRule
from driftline.monitoring.history import FIRED, NightSummary

QUIET = "skipped: quiet"
COOL_DOWN = "skipped: cool-down"
NO_VALID_DATA = "skipped: validation failed"


# The rules that can fire a night (a Verdict's `fired_by`, the history's `fired_by`).
DRIFT_SHARE_RULE, QUALITY_DROP_RULE = "drift share", "quality drop"


@dataclass(frozen=True)
class Verdict:
    decision: str  # FIRED, QUIET, COOL_DOWN, NO_VALID_DATA
    reason: str
    fired_by: tuple[str, ...] = ()  # the rules that held (also inside a cool-down)

    @property
    def fires(self) -> bool:
        return self.decision == FIRED


def judge(
    rule: DriftRule,
    nights: list[NightSummary],
    day: dt.date,
    last_training: dt.date | None,
    validation_passed: bool = True,
) -> Verdict:
    """The decision for `day`, given the recorded nights up to it (oldest first)."""
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
    return Verdict(FIRED, "; ".join(reasons), tuple(held))
