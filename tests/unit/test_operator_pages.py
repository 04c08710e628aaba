"""What the plugin links to and serves: URLs, Data Docs pages, the drift history page, and the
refusal of anything that is not a known use-case's page."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from driftline import etl, links, views
from driftline.history import NightSummary
from driftline.validation import BatchValidationError, data_docs_path
from tests.conftest import corrupt, sqlite_url

JAN2 = dt.date(2013, 1, 2)


def test_plugin_urls_follow_airflows_base_path():
    at_root = {"AIRFLOW__API__BASE_URL": "http://localhost:8080"}
    under = {"AIRFLOW__API__BASE_URL": "https://ops.example/airflow/"}
    assert (
        links.data_docs_url("flights", JAN2, at_root) == "/driftline/data-docs/flights/2013-01-02"
    )
    assert (
        links.report_url("flights", JAN2, "quality", under)
        == "/airflow/driftline/reports/flights/2013-01-02/quality"
    )
    with pytest.raises(ValueError, match="report kind"):
        links.report_url("flights", JAN2, "html", at_root)


def test_mlflow_links_need_a_browsable_mlflow():
    ui = {"DRIFTLINE_MLFLOW_UI_URL": "http://127.0.0.1:5000/"}
    assert links.mlflow_run_url("3", "abc", ui) == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert (
        links.model_version_url("flights_delay", "7", ui)
        == "http://127.0.0.1:5000/#/models/flights_delay/versions/7"
    )
    served = {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert links.mlflow_run_url("3", "abc", served).startswith("http://mlflow:5000/")
    # a database store has no pages: no link rather than a broken one
    assert links.mlflow_run_url("3", "abc", {"MLFLOW_TRACKING_URI": "sqlite:///x.db"}) == ""


def test_a_failed_day_gets_its_data_docs_page_at_once_a_passed_day_when_opened(
    usecase, settings, source_copy
):
    url = sqlite_url(source_copy)
    etl.run_day(usecase, settings, JAN2, url)
    page = data_docs_path(settings.validation_result_path(usecase.name, JAN2))
    assert not page.exists()  # a passing day costs no page until somebody opens it
    assert views.data_docs_file(settings, "flights", "2013-01-02") == page
    passed = page.read_text()
    assert "flights_batch" in passed and "expect_column_values_to_not_be_null" not in passed[:200]
    assert "Status: Succeeded" in text_of(passed)

    corrupt(
        source_copy,
        usecase,
        JAN2,
        "UPDATE flights SET distance = -distance WHERE time_hour >= :start AND time_hour < :end",
    )
    with pytest.raises(BatchValidationError):
        etl.run_day(usecase, settings, JAN2, url)
    failed = page.read_text()  # written by the gate itself, beside the quarantine
    assert "Status: Failed" in text_of(failed) and "distance" in failed

    # the source is fixed and the day rerun: the failed page must not be served for it
    corrupt(
        source_copy,
        usecase,
        JAN2,
        "UPDATE flights SET distance = -distance WHERE time_hour >= :start AND time_hour < :end",
    )
    etl.run_day(usecase, settings, JAN2, url)
    assert not page.exists()
    rerun = views.data_docs_file(settings, "flights", "2013-01-02").read_text()
    assert "Status: Succeeded" in text_of(rerun)


def text_of(page: str) -> str:
    """A page's words without markup, one space between them."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


@pytest.mark.parametrize(
    ("usecase_name", "day", "kind", "why"),
    [
        ("../../etc", "2013-01-02", "drift", "no use-case"),
        ("flights", "2013-01-02/../../x", "drift", "not a date"),
        ("flights", "2013-01-02", "passwd", "no report kind"),
        ("flights", "2013-01-02", "drift", "no drift report for flights 2013-01-02 yet"),
    ],
)
def test_only_existing_pages_of_known_usecases_are_served(settings, usecase_name, day, kind, why):
    with pytest.raises(views.NotFound, match=why):
        views.report_file(settings, usecase_name, day, kind)


def test_a_report_that_exists_is_served(settings):
    report = settings.reports_dir("flights", JAN2) / "drift.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html>drift</html>")
    assert views.report_file(settings, "flights", "2013-01-02", "drift") == report


def test_history_page_lists_nights_newest_first_and_escapes_text():
    nights = [
        NightSummary(
            usecase="flights",
            day=dt.date(2013, 2, d),
            model_version="1",
            reference_md5="abc",
            rows=900,
            dataset_drift=d == 14,
            drift_share=0.1 * (d - 12),
            drifted_columns=["<script>"],
            roc_auc=0.61,
            champion_holdout_roc_auc=0.66,
            decision="fired" if d == 14 else "skipped: quiet",
            decision_reason="k of n",
        )
        for d in (13, 14)
    ]
    page = views.history_page("flights", nights)
    assert page.index("2013-02-14") < page.index("2013-02-13")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count('class="fired"') == 1
    assert links.report_url("flights", dt.date(2013, 2, 14), "quality") in page
    assert "no night monitored yet" in views.history_page("flights", [])


def test_a_fired_night_links_the_report_of_its_rule_and_the_training_it_started():
    night = NightSummary(usecase="flights", day=dt.date(2013, 2, 14), model_version="1",
                         reference_md5="abc", rows=900, dataset_drift=False, drift_share=0.1,
                         decision="fired", fired_by=["quality drop"],
                         training_run="flights_training/drift__2013-02-14",
                         training_decision="version 2 not promoted: no gain")
    page = views.history_page("flights", [night])
    quality = links.report_url("flights", night.day, "quality")
    assert f'<a href="{quality}">quality drop</a>' in page
    assert '<a href="/dags/flights_training/runs/drift__2013-02-14">' in page
    assert "version 2 not promoted: no gain" in page


def test_history_page_says_which_rows_were_judged_and_which_night_is_not_judged_yet():
    night = NightSummary(usecase="flights", day=dt.date(2013, 2, 1), model_version="1",
                         reference_md5="abc", rows=6070, dataset_drift=False, drift_share=0.0,
                         champion_holdout_roc_auc=0.66, quality_first_day=dt.date(2013, 2, 1),
                         quality_last_day=dt.date(2013, 2, 1), quality_rows=150,
                         quality_judged=False)
    page = views.history_page("flights", [night])
    assert "<td>not judged yet</td>" in page
    assert "quality not judged yet: 150 labelled predictions of 2013-02-01" in page
