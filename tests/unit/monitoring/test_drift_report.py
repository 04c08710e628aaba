"""The night's Evidently reports and the figures read from them (real Evidently, small data)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from driftline.monitoring import drift_report
from driftline.monitoring.drift_report import ReportError, summarize

STAMP = dt.datetime(2013, 7, 1, 23, 59)


def frame(usecase, rows: int, seed: int, temp_shift: float = 0.0) -> pd.DataFrame:
    """Rows of the monitored columns: the same distributions, except `temp` moved by a shift."""
    rng = np.random.default_rng(seed)
    data = {c: rng.choice(["a", "b", "c"], rows) for c in usecase.features.categorical}
    data |= {c: rng.normal(50, 10, rows) for c in usecase.features.numerical}
    data["temp"] = rng.normal(40 + temp_shift, 10, rows)
    data["prediction"] = rng.uniform(0, 1, rows)
    data[usecase.label.name] = (rng.uniform(0, 1, rows) < data["prediction"]).astype(float)
    return pd.DataFrame(data)


def every_feature(usecase):
    """The use-case, monitoring every feature at Evidently's default 0.1 thresholds, so that
    these tests do not move with the shipped monitoring defaults."""
    tests = usecase.monitoring.tests.model_copy(update={"num_threshold": 0.1,
                                                        "cat_threshold": 0.1})
    monitoring = usecase.monitoring.model_copy(update={"columns": None, "tests": tests})
    return usecase.model_copy(update={"monitoring": monitoring})


@pytest.fixture
def usecase(usecase):
    return every_feature(usecase)


@pytest.fixture(scope="module")
def reports(request):
    from driftline.config import load_usecase
    from tests.conftest import repo_settings

    usecase = every_feature(
        load_usecase("flights", repo_settings(request.config.cache.mkdir("home"))))
    reference = frame(usecase, 5000, seed=1)
    current = frame(usecase, 3000, seed=2, temp_shift=25)
    current.loc[:99, usecase.label.name] = np.nan  # cancelled flights: no label
    tests = usecase.monitoring.tests
    drift = drift_report.drift_report(reference, current, usecase, tests, STAMP).dict()
    quality = drift_report.quality_report(
        drift_report.labelled(current, usecase), usecase, STAMP
    ).dict()
    return usecase, current, drift, quality


def test_the_shifted_column_is_named_and_the_others_are_not(reports):
    usecase, _, drift, quality = reports
    figures = summarize(drift, quality)
    assert figures.drifted_columns == ["temp"]
    judged = len(usecase.drift_columns)
    assert figures.drift_share == pytest.approx(1 / judged)
    assert set(figures.column_scores) == set(usecase.drift_columns)
    assert figures.column_scores["temp"] > usecase.monitoring.tests.num_threshold
    assert not figures.dataset_drift  # 1 of 23 columns is below the 0.5 share


def test_quality_is_read_on_the_labelled_rows_and_matches_sklearn(reports):
    from sklearn.metrics import log_loss, roc_auc_score

    usecase, current, drift, quality = reports
    figures = summarize(drift, quality)
    known = current.dropna(subset=[usecase.label.name])
    assert figures.roc_auc == pytest.approx(
        roc_auc_score(known[usecase.label.name], known["prediction"])
    )
    assert figures.log_loss == pytest.approx(
        log_loss(known[usecase.label.name], known["prediction"])
    )
    assert summarize(drift, None).roc_auc is None


def test_a_quality_figure_that_is_not_finite_is_unknown(reports):
    _, _, drift, quality = reports
    broken = {"metrics": [{**m, "value": math.nan} for m in quality["metrics"]]}
    assert summarize(drift, broken).roc_auc is None


def test_a_result_without_the_drift_count_is_refused(reports):
    _, _, drift, _ = reports
    without = {**drift, "metrics": [m for m in drift["metrics"]
                                    if m["config"]["type"] != drift_report.DRIFTED_COUNT]}
    with pytest.raises(ReportError, match="no DriftedColumnsCount"):
        summarize(without, None)


def test_a_result_whose_share_disagrees_with_its_tests_is_refused(reports):
    _, _, drift, _ = reports
    no_tests = {**drift, "tests": []}
    with pytest.raises(ReportError, match="inconsistent"):
        summarize(no_tests, None)


def test_an_all_null_column_is_left_out_not_fatal(usecase):
    reference, current = frame(usecase, 500, seed=3), frame(usecase, 200, seed=4)
    current["wind_gust"] = np.nan  # a calm day
    assert "wind_gust" in usecase.drift_columns
    assert "wind_gust" not in drift_report.judged_columns(reference, current, usecase)
    figures = summarize(
        drift_report.drift_report(reference, current, usecase, usecase.monitoring.tests,
                                  STAMP).dict(), None)
    assert "wind_gust" not in figures.column_scores


@pytest.mark.parametrize("side", ["reference", "current"])
def test_empty_or_incomplete_data_is_named(usecase, side):
    data = {"reference": frame(usecase, 300, seed=5), "current": frame(usecase, 300, seed=6)}
    empty = {**data, side: data[side].iloc[0:0]}
    with pytest.raises(ReportError, match=f"the {side} data is empty"):
        drift_report.drift_report(empty["reference"], empty["current"], usecase,
                                  usecase.monitoring.tests, STAMP)
    partial = {**data, side: data[side].drop(columns=["dest"])}
    with pytest.raises(ReportError, match=rf"the {side} data has no column\(s\) \['dest'\]"):
        drift_report.drift_report(partial["reference"], partial["current"], usecase,
                                  usecase.monitoring.tests, STAMP)


def test_save_writes_html_and_json(reports, tmp_path):
    usecase, current, _, _ = reports
    snapshot = drift_report.drift_report(frame(usecase, 300, seed=7), current, usecase,
                                         usecase.monitoring.tests, STAMP)
    html, json_path = drift_report.save(snapshot, tmp_path / "2013-07-01", "drift")
    assert html.stat().st_size > 10_000 and "temp" in html.read_text()
    assert json_path.read_text().startswith("{")
    assert sorted(p.name for p in html.parent.iterdir()) == ["drift.html", "drift.json"]


def test_each_column_is_judged_against_its_own_reference_rows(usecase):
    """The features against the training sample, the prediction against the holdout's
    predictions: in-sample predictions (sharper than any night's) would drift, the holdout's
    do not, and the share still counts every judged column."""
    current = frame(usecase, 1500, seed=8)
    training_rows = frame(usecase, 4000, seed=9)
    rng = np.random.default_rng(10)
    in_sample = pd.Series(rng.beta(0.3, 0.3, 4000))  # a fitted model is surer on its own rows
    holdout = pd.Series(rng.uniform(0, 1, 1000))  # like the night's: out-of-sample
    tests = usecase.monitoring.tests

    def figures(predictions: pd.Series):
        reference = drift_report.drift_reference(training_rows, predictions)
        return summarize(
            drift_report.drift_report(reference, current, usecase, tests, STAMP).dict(), None
        )

    against_training, against_holdout = figures(in_sample), figures(holdout)
    assert "prediction" in against_training.drifted_columns
    assert "prediction" not in against_holdout.drifted_columns
    assert set(against_holdout.column_scores) == set(usecase.drift_columns)
    judged = len(usecase.drift_columns)
    assert against_training.drift_share == pytest.approx(
        len(against_training.drifted_columns) / judged)


def test_the_combined_reference_keeps_each_part_apart(usecase):
    training_rows = frame(usecase, 300, seed=11)
    reference = drift_report.drift_reference(training_rows, pd.Series([0.2, 0.4]))
    assert len(reference) == 302
    assert reference["prediction"].notna().sum() == 2  # the training rows' own are dropped
    assert reference["carrier"].notna().sum() == 300
    assert reference["prediction"].dropna().tolist() == [0.2, 0.4]


def test_the_snapshots_carry_what_they_judged(usecase):
    current = frame(usecase, 300, seed=12)
    quality = drift_report.quality_report(
        drift_report.labelled(current, usecase), usecase, STAMP,
        metadata={"quality_days": "2013-02-01", "quality_rows": "300"})
    model = quality.to_snapshot_model()
    assert model.metadata == {"quality_days": "2013-02-01", "quality_rows": "300"}
