"""The replay's comparison of policies: one CSV, one plot, one markdown table.

Reads the nights.csv of each replayed policy; writes what docs/RESULTS.md shows. Pure
pandas + matplotlib (Agg), so it reruns in a second from the CSVs alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from driftline.experiments.replay import NIGHTS_FILE, POLICIES

COMBINED_CSV = "replay-nights.csv"
PLOT = "replay-quality.png"
TABLE = "replay-table.md"
ROLLING_NIGHTS = 7


@dataclass(frozen=True)
class PolicySummary:
    policy: str
    nights: int  # nights judged with enough labels
    first: dt.date
    last: dt.date
    mean_roc_auc: float
    mean_log_loss: float
    worst_week: str  # ISO week (Monday's date) with the lowest mean nightly ROC AUC
    worst_week_roc_auc: float
    trainings: int
    promotions: int
    training_seconds: float


def load(out: Path) -> pd.DataFrame:
    """Every replayed policy's nights under `out`, in the order of POLICIES."""
    frames = [
        pd.read_csv(out / policy / NIGHTS_FILE, dtype={"champion_version": str, "new_version": str})
        for policy in POLICIES
        if (out / policy / NIGHTS_FILE).exists()
    ]
    if not frames:
        raise FileNotFoundError(f"no {NIGHTS_FILE} under {out}: run `driftline replay` first")
    nights = pd.concat(frames, ignore_index=True)
    nights["night"] = pd.to_datetime(nights["night"])
    return nights


def summarize(nights: pd.DataFrame) -> list[PolicySummary]:
    """Mean and worst-week quality, trainings and their time, per policy."""
    summaries = []
    for policy, rows in nights.groupby("policy", sort=False):
        judged = rows.dropna(subset=["roc_auc"])
        weeks = judged.groupby(judged["night"].dt.to_period("W-SUN"))["roc_auc"].mean()
        worst = weeks.idxmin()
        retrained = rows[rows["retrained"]]
        summaries.append(
            PolicySummary(
                policy=str(policy),
                nights=len(judged),
                first=rows["night"].min().date(),
                last=rows["night"].max().date(),
                mean_roc_auc=float(judged["roc_auc"].mean()),
                mean_log_loss=float(judged["log_loss"].mean()),
                worst_week=worst.start_time.date().isoformat(),
                worst_week_roc_auc=float(weeks.min()),
                trainings=len(retrained),
                promotions=int(retrained["promoted"].astype(str).eq("True").sum()),
                training_seconds=float(retrained["training_seconds"].sum()),
            )
        )
    return summaries


@dataclass(frozen=True)
class Adaptation:
    """How long a policy took to serve a champion that learned the regime begun at `onset`."""

    policy: str
    onset: dt.date
    night: dt.date | None  # the night it was promoted (it scores from the next); None: never
    nights: int | None  # night - onset
    post_onset_share: float | None  # of its training rows, those of the onset's day or later
    window: str | None
    firings_before_onset: int  # nights the rule fired before the onset (false alarms)


def training_windows(
    rows: pd.DataFrame, holdout_days: int, window_days: int
) -> pd.DataFrame:
    """Each retraining's window; replays recorded before the window columns existed trained
    on the window_days ending holdout_days before the night."""
    rows = rows.copy()
    for column in ("window_start", "window_end"):
        if column not in rows:
            rows[column] = None
        rows[column] = pd.to_datetime(rows[column])
    end = rows["night"] - pd.Timedelta(days=holdout_days)
    rows["window_end"] = rows["window_end"].fillna(end)
    rows["window_start"] = rows["window_start"].fillna(end - pd.Timedelta(days=window_days - 1))
    return rows


def time_to_adapt(
    nights: pd.DataFrame,
    policy: str,
    onset: dt.date,
    holdout_days: int,
    window_days: int,
    share: float = 0.5,
) -> Adaptation:
    """From `onset` to the first promoted champion with at least `share` of its training rows
    from the onset on. Rows per day: the day's labelled rows as the replay judged them (days
    before the replay's first night count as its mean day)."""
    per_day = nights.groupby("night")["labelled"].max()
    mean_day = float(per_day.mean())
    rows = nights[nights["policy"] == policy]
    start = pd.Timestamp(onset)
    false_alarms = int(((rows["night"] < start) & (rows["decision"] == "fired")).sum())
    promoted = rows[rows["retrained"] & rows["promoted"].astype(str).eq("True")]
    promoted = training_windows(promoted[promoted["night"] >= start], holdout_days, window_days)
    for record in promoted.itertuples():
        days = pd.date_range(record.window_start, record.window_end, freq="D")
        counts = per_day.reindex(days).fillna(mean_day)
        post = float(counts[days >= start].sum() / counts.sum())
        if post >= share:
            return Adaptation(
                policy,
                onset,
                record.night.date(),
                (record.night.date() - onset).days,
                round(post, 3),
                f"{record.window_start:%Y-%m-%d}..{record.window_end:%Y-%m-%d}",
                false_alarms,
            )
    return Adaptation(policy, onset, None, None, None, None, false_alarms)


def table(summaries: list[PolicySummary]) -> str:
    lines = [
        "| policy | replayed | nights | mean ROC AUC | mean log loss | worst week (ROC AUC) "
        "| trainings | promoted | training time |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.policy} | {s.first}..{s.last} | {s.nights} | {s.mean_roc_auc:.4f} | "
            f"{s.mean_log_loss:.4f} | "
            f"{s.worst_week} ({s.worst_week_roc_auc:.4f}) | {s.trainings} | {s.promotions} | "
            f"{s.training_seconds / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def plot(nights: pd.DataFrame, target: Path) -> Path:
    """ROC AUC over the year (7-night rolling mean) per policy; retraining nights below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(nights["policy"]))
    figure, (quality, marks) = plt.subplots(
        2, 1, figsize=(12, 6.5), sharex=True, gridspec_kw={"height_ratios": [4, 1]}
    )
    for policy in policies:
        rows = nights[nights["policy"] == policy].set_index("night").sort_index()
        rolling = rows["roc_auc"].rolling(ROLLING_NIGHTS, min_periods=3).mean()
        quality.plot(rolling.index, rolling.to_numpy(), label=policy, linewidth=1.4)
    quality.set_ylabel(f"ROC AUC on the night's labels\n({ROLLING_NIGHTS}-night rolling mean)")
    replayed = f"{nights['night'].min():%Y-%m-%d} .. {nights['night'].max():%Y-%m-%d}"
    quality.set_title(f"Replay of {replayed}: the champion's quality per retraining policy")
    quality.grid(alpha=0.3)
    quality.legend(loc="lower left", ncol=len(policies))
    for lane, policy in enumerate(policies):
        rows = nights[(nights["policy"] == policy) & nights["retrained"]]
        promoted = rows["promoted"].astype(str).eq("True")
        for chosen, alpha in ((promoted, 1.0), (~promoted, 0.3)):
            marks.scatter(
                rows.loc[chosen, "night"],
                [lane] * int(chosen.sum()),
                marker="|",
                s=60,
                color=f"C{lane}",
                alpha=alpha,
            )
    marks.set_yticks(range(len(policies)), policies)
    marks.set_ylim(-0.7, len(policies) - 0.3)
    marks.set_title("retraining nights (faint: the gate kept the champion)", fontsize=9)
    marks.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target


def adaptation_table(adaptations: list[Adaptation], false_alarms: bool = False) -> str:
    """Markdown rows of `adaptations`; with `false_alarms`, the firings before each onset
    (a known onset with nothing before it: on real data earlier firings are no alarms)."""
    head = "| onset | policy | adapted on | nights | rows from the onset | window |"
    lines = [head + (" firings before the onset |" if false_alarms else "")]
    lines.append("|---|---|---|---:|---:|---|" + ("---:|" if false_alarms else ""))
    for a in adaptations:
        share = f"{a.post_onset_share:.0%}" if a.post_onset_share is not None else ""
        row = (
            f"| {a.onset} | {a.policy} | {a.night or 'not in the replay'} | "
            f"{'' if a.nights is None else a.nights} | {share} | {a.window or ''} |"
        )
        lines.append(row + (f" {a.firings_before_onset} |" if false_alarms else ""))
    return "\n".join(lines) + "\n"


def between(nights: pd.DataFrame, first: dt.date, last: dt.date) -> pd.DataFrame:
    night = nights["night"]
    return nights[(night >= pd.Timestamp(first)) & (night <= pd.Timestamp(last))]


def write(out: Path, docs: Path, split: dt.date | None = None) -> list[PolicySummary]:
    """Combined CSV, plot and markdown table of every policy replayed under `out`; with
    `split`, the table also shows the nights before it and from it on, apart."""
    nights = load(out)
    summaries = summarize(nights)
    docs.mkdir(parents=True, exist_ok=True)
    nights.assign(night=nights["night"].dt.date).to_csv(docs / COMBINED_CSV, index=False)
    plot(nights, docs / PLOT)
    text = table(summaries)
    if split is not None:
        first, last = nights["night"].min().date(), nights["night"].max().date()
        for label, part in (
            (f"before {split}", between(nights, first, split - dt.timedelta(days=1))),
            (f"from {split} on", between(nights, split, last)),
        ):
            if not part.empty:
                text += f"\nNights {label}:\n\n" + table(summarize(part))
    (docs / TABLE).write_text(text)
    return summaries
