"""Classification quality of a model's probabilities: overall, per slice, and plot data.

One implementation for the DVC evaluate stage, the champion/challenger gate and monitoring,
so every figure that is compared was computed the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False}


def quality(y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss and Brier score; AUCs are NaN when one class is absent."""
    from sklearn import metrics  # ~2 s: imported by the stages that score, not by every one

    y_true = np.asarray(y_true, dtype=int)
    y_prob = np.clip(np.asarray(y_prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "roc_auc": float(metrics.roc_auc_score(y_true, y_prob)) if both_classes else float("nan"),
        "pr_auc": float(metrics.average_precision_score(y_true, y_prob))
        if both_classes
        else float("nan"),
        "log_loss": float(metrics.log_loss(y_true, y_prob, labels=[0, 1])),
        "brier": float(metrics.brier_score_loss(y_true, y_prob)),
        "rows": int(len(y_true)),
        "positive_rate": float(y_true.mean()) if len(y_true) else float("nan"),
    }


def slice_values(frame: pd.DataFrame, slices: dict[str, int]) -> dict[str, list[str]]:
    """For each slice column, the values that form slices: all (0) or the N most frequent."""
    chosen = {}
    for column, largest in slices.items():
        counts = frame[column].astype(str).value_counts()
        values = counts.index.tolist() if largest == 0 else counts.index[:largest].tolist()
        chosen[column] = sorted(values)
    return chosen


def slice_quality(
    frame: pd.DataFrame, y_prob: np.ndarray, label: str, slices: dict[str, list[str]], min_rows: int
) -> dict[str, dict[str, float]]:
    """quality() of every slice `column=value` with at least `min_rows` rows."""
    result = {}
    y_true = frame[label].astype(int).to_numpy()
    for column, values in slices.items():
        as_text = frame[column].astype(str).to_numpy()
        for value in values:
            mask = as_text == value
            if mask.sum() >= min_rows:
                result[f"{column}={value}"] = quality(y_true[mask], y_prob[mask])
    return result


def plot_data(y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    """ROC curve (at most ~200 points) and a 10-bin calibration table, as DVC plot rows."""
    from sklearn import metrics

    fpr, tpr, _ = metrics.roc_curve(y_true, y_prob)
    step = max(1, len(fpr) // 200)
    roc = [
        {"fpr": round(float(f), 5), "tpr": round(float(t), 5)}
        for f, t in zip(fpr[::step], tpr[::step], strict=True)
    ]
    bins = np.clip((np.asarray(y_prob) * 10).astype(int), 0, 9)
    calibration = []
    for b in range(10):
        mask = bins == b
        if mask.any():
            calibration.append(
                {
                    "bin": b,
                    "predicted": round(float(np.mean(y_prob[mask])), 5),
                    "observed": round(float(np.mean(y_true[mask])), 5),
                    "rows": int(mask.sum()),
                }
            )
    return {"roc": roc, "calibration": calibration}
