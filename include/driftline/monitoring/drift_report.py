"""Evidently 0.7 reports of a night, and the figures the drift rule reads from them.

Two reports: data drift of the model's features and of its prediction (every scored row),
and classification quality (only rows whose label is known, of days the model was not trained
on: driftline.monitoring.judged_rows). `summarize` reads both from their JSON form, so it is a pure
function that tests can feed saved results.
Evidently is imported inside the functions: it costs ~7 s, and DAG files import this module.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from driftline.config import PREDICTION, DriftTestConfig, UseCase

DRIFTED_COUNT = "evidently:metric_v2:DriftedColumnsCount"
VALUE_DRIFT = "ValueDrift"
ROC_AUC = "evidently:metric_v2:RocAuc"
LOG_LOSS = "evidently:metric_v2:LogLoss"


class ReportError(ValueError):
    """A report could not be made or read; the message says which part is missing."""


@dataclass(frozen=True)
class DriftFigures:
    """What a night's reports say, in the terms of the drift history."""

    drift_share: float
    drifted_columns: list[str]
    dataset_drift: bool
    column_scores: dict[str, float] = field(default_factory=dict)
    roc_auc: float | None = None
    log_loss: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judged_columns(reference: pd.DataFrame, current: pd.DataFrame, usecase: UseCase) -> list[str]:
    """The monitored columns that have values on both sides (Evidently refuses an all-null
    column, and e.g. `wind_gust` is unset on calm days)."""
    return [
        c for c in usecase.drift_columns if reference[c].notna().any() and current[c].notna().any()
    ]


def drift_reference(features: pd.DataFrame, predictions: pd.Series) -> pd.DataFrame:
    """One reference frame for two references of different rows: the features' rows (the
    training sample) with no prediction, then the prediction's rows (holdout predictions)
    with no features.

    Evidently runs a report on one (current, reference) pair, and each column's drift test
    leaves out missing values on either side, so every column is judged against its own rows
    while one DriftedColumnsCount still counts all columns (its share stays the share of the
    columns whose ValueDrift test failed). The current side may blank the prediction the same
    way (driftline.monitoring.judged_rows.blank_outside): an all-blank column is not judged at all.
    """
    return pd.concat(
        [
            features.drop(columns=[PREDICTION], errors="ignore"),
            pd.DataFrame({PREDICTION: predictions.to_numpy(dtype=float)}),
        ],
        ignore_index=True,
    )


def _definition(usecase: UseCase, columns: list[str], with_label: bool):
    from evidently import BinaryClassification, DataDefinition

    categorical = [c for c in columns if c in usecase.features.categorical]
    numerical = [c for c in columns if c not in categorical]
    classification = (
        [BinaryClassification(target=usecase.label.name, prediction_probas=PREDICTION)]
        if with_label
        else None
    )
    return DataDefinition(
        categorical_columns=categorical,
        numerical_columns=numerical,
        classification=classification,
    )


def _dataset(frame: pd.DataFrame, definition):
    from evidently import Dataset

    return Dataset.from_pandas(frame, data_definition=definition)


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    usecase: UseCase,
    tests: DriftTestConfig,
    timestamp: dt.datetime,
    metadata: dict[str, str] | None = None,
):
    """Data drift of the monitored columns and of the prediction (an Evidently Snapshot).

    `metadata` (which days, rows and references it judged) goes into the snapshot, where the
    Evidently workspace shows it beside the report.

    One ValueDrift per column (its score, its test, its plots) and the DriftedColumnsCount the
    dashboard plots; DataDriftPreset would compute each column's drift a third time for its
    overview table. The methods are set explicitly: with a small reference Evidently would
    pick chi-square for categories, which divides by zero on a category the reference never
    saw.
    """
    from evidently import Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    for name, frame in (("reference", reference), ("current", current)):
        missing = sorted(set(usecase.drift_columns) - set(frame.columns))
        if missing:
            raise ReportError(f"the {name} data has no column(s) {missing}")
        if frame.empty:
            raise ReportError(f"the {name} data is empty: nothing to compare")
    columns = judged_columns(reference, current, usecase)
    definition = _definition(usecase, columns, with_label=False)
    count = DriftedColumnsCount(
        columns=columns,
        num_method=tests.num_method,
        num_threshold=tests.num_threshold,
        cat_method=tests.cat_method,
        cat_threshold=tests.cat_threshold,
        drift_share=tests.dataset_drift_share,
    )
    per_column = [
        ValueDrift(column=column, method=tests.cat_method, threshold=tests.cat_threshold)
        if column in definition.categorical_columns
        else ValueDrift(column=column, method=tests.num_method, threshold=tests.num_threshold)
        for column in columns
    ]
    return Report([count, *per_column], include_tests=True).run(
        current_data=_dataset(current[columns], definition),
        reference_data=_dataset(reference[columns], definition),
        timestamp=timestamp,
        metadata=metadata or {},
    )


def labelled(frame: pd.DataFrame, usecase: UseCase) -> pd.DataFrame:
    """The rows whose label is known, with the int64 label Evidently's quality metrics need."""
    label = usecase.label.name
    known = frame[frame[label].notna()]
    return known.astype({label: "int64"})


def quality_report(
    current: pd.DataFrame,
    usecase: UseCase,
    timestamp: dt.datetime,
    metadata: dict[str, str] | None = None,
):
    """ROC AUC and log loss of the prediction on the labelled rows (an Evidently Snapshot).

    The caller chooses the rows (driftline.monitoring.judged_rows.quality_rows) and says which in
    `metadata`."""
    from evidently import Report
    from evidently.metrics import LogLoss, RocAuc

    rows = labelled(current, usecase)
    if rows.empty:
        raise ReportError("no labelled rows: no quality report")
    definition = _definition(usecase, [PREDICTION], with_label=True)
    columns = [PREDICTION, usecase.label.name]
    return Report([RocAuc(), LogLoss()]).run(
        current_data=_dataset(rows[columns], definition),
        reference_data=None,
        timestamp=timestamp,
        metadata=metadata or {},
    )


def save(snapshot, folder: Path, stem: str) -> tuple[Path, Path]:
    """HTML for people, JSON for programs; each written to a temp name, then renamed."""
    from driftline.storage import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"{stem}.html", folder / f"{stem}.json"
    for target, writer in zip(paths, (snapshot.save_html, snapshot.save_json), strict=True):
        with atomic_path(target) as temporary:
            writer(str(temporary))  # a pathlib.Path makes Evidently write nothing
    return paths


def summarize(drift: dict[str, Any], quality: dict[str, Any] | None) -> DriftFigures:
    """The drift share, the drifted columns and the quality figures of a night's reports.

    `drift` and `quality` are the reports' JSON (`snapshot.dict()`). A column has drifted
    when its ValueDrift test failed: the score alone cannot say, since p-values and
    distances compare against their thresholds in opposite directions.
    """
    metrics = drift.get("metrics") or []
    counts = [m for m in metrics if m.get("config", {}).get("type") == DRIFTED_COUNT]
    if not counts:
        raise ReportError("the drift report has no DriftedColumnsCount metric")
    count = counts[0]
    share = float(count["value"]["share"])
    threshold = float(count["config"].get("drift_share", 0.5))
    scores = {
        m["config"]["column"]: float(m["value"])
        for m in metrics
        if m.get("config", {}).get("type", "").endswith(VALUE_DRIFT)
    }
    drifted = sorted(
        t["metric_config"]["params"]["column"]
        for t in drift.get("tests") or []
        if t.get("metric_config", {}).get("params", {}).get("type", "").endswith(VALUE_DRIFT)
        and t.get("status") == "FAIL"
    )
    if round(share * len(scores)) != len(drifted):
        raise ReportError(
            f"the drift report is inconsistent: share {share} of {len(scores)} columns, "
            f"but {len(drifted)} failed column tests"
        )
    return DriftFigures(
        drift_share=share,
        drifted_columns=drifted,
        dataset_drift=share >= threshold,
        column_scores=scores,
        roc_auc=_metric(quality, ROC_AUC),
        log_loss=_metric(quality, LOG_LOSS),
    )


def _metric(report: dict[str, Any] | None, kind: str) -> float | None:
    if report is None:
        return None
    for metric in report.get("metrics") or []:
        if metric.get("config", {}).get("type") == kind:
            value = float(metric["value"])
            return value if math.isfinite(value) else None  # one class only: no ROC AUC
    return None
