"""What the plugin links to and serves: URLs, Data Docs pages, the drift history page, and the
refusal of anything that is not a known use-case's page."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from driftline.ingest import etl
from driftline.ingest.validation import BatchValidationError, data_docs_path
from driftline.monitoring.history import NightSummary
from driftline.operator import links, views
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


def test_a_wrong_config_takes_only_its_own_pages_down(settings, tmp_path):
    """As in the DAG files: flights' pages are served beside a config that does not load."""
    import dataclasses
    import shutil

    own = dataclasses.replace(settings, usecases_dir=tmp_path / "usecases")
    own.usecases_dir.mkdir()
    shutil.copy(settings.usecase_path("flights"), own.usecases_dir)
    (own.usecases_dir / "broken.yaml").write_text("name: broken\n")
    report = own.reports_dir("flights", JAN2) / "drift.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html>drift</html>")
    assert views.report_file(own, "flights", "2013-01-02", "drift") == report
    with pytest.raises(views.NotFound, match="config of use-case 'broken' has problems"):
        views.report_file(own, "broken", "2013-01-02", "drift")


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
    table = page[: page.index("</table>")]  # (the page's own script is after it)
    assert "<script>" not in table and "&lt;script&gt;" in table
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
    assert f'<a href="{quality}" target="_blank" rel="noopener">quality drop</a>' in page
    assert '<a href="/dags/flights_training/runs/drift__2013-02-14" target="_blank"' in page
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


# --- who may read and roll back: the app against a stand-in for Airflow's auth manager -------

ROLES = {  # user -> the DAGs it may read (None: all) and edit
    "admin": (None, None),
    "reader": ({"flights_etl", "flights_training", "flights_monitoring"}, set()),
}


def stand_in_access(queued: dict[str, int] | None = None) -> views.Access:
    """Users named by their token (bearer or the session cookie), as Airflow's get_user
    resolves them; the answers Airflow's auth manager would give for ROLES."""

    async def user(request):
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") or request.cookies.get(views.SESSION_COOKIE)
        if token not in ROLES:
            raise views.NotLoggedIn("no session")
        return token

    def may(user, method, dag_ids):
        reads, edits = ROLES[user]
        allowed = reads if method == "GET" else edits
        return allowed is None or set(dag_ids) <= allowed

    return views.Access(user, may, lambda next_url: f"/auth/login?next={next_url}",
                        lambda dag_ids: queued or {})


@pytest.fixture
def two_usecases(settings, tmp_path):
    """flights and a second use-case (the same config under another name)."""
    from dataclasses import replace

    from tests.conftest import REPO

    folder = tmp_path / "usecases"
    folder.mkdir()
    flights = (REPO / "usecases" / "flights.yaml").read_text()
    (folder / "flights.yaml").write_text(flights)
    (folder / "taxis.yaml").write_text(flights.replace("name: flights", "name: taxis", 1))
    return replace(settings, usecases_dir=folder)


def client_for(settings, **kwargs):
    from fastapi.testclient import TestClient

    app = views.create_app(lambda: settings, lambda: stand_in_access(**kwargs))
    return TestClient(app, base_url="http://airflow.test")


HTML = {"accept": "text/html"}


def test_without_a_session_a_browser_goes_to_the_login_page_and_a_program_gets_401(settings):
    web = client_for(settings)
    page = web.get("/reports/flights/2013-01-02/drift", headers=HTML, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == (
        "/auth/login?next=http://airflow.test/reports/flights/2013-01-02/drift")
    assert web.get("/reports/flights/2013-01-02/drift").status_code == 401
    assert web.get("/history/flights", cookies={views.SESSION_COOKIE: "forged"}).status_code == 401


def test_a_usecases_pages_need_read_access_to_its_dags(two_usecases):
    settings = two_usecases
    report = settings.reports_dir("taxis", JAN2) / "drift.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html>taxis drift</html>")
    web = client_for(settings)
    reader = {"authorization": "Bearer reader"}
    for url in ("/reports/taxis/2013-01-02/drift", "/data-docs/taxis/2013-01-02",
                "/history/taxis", "/champion/taxis"):
        refused = web.get(url, headers=reader)
        assert refused.status_code == 403, url
        assert "taxis_etl" in refused.json()["detail"]
    # a name no config knows is refused alike: the answer does not say which exist
    assert web.get("/history/nosuch", headers=reader).status_code == 403
    admin = {"authorization": "Bearer admin"}
    assert web.get("/reports/taxis/2013-01-02/drift", headers=admin).text == report.read_text()
    assert web.get("/history/nosuch", headers=admin).status_code == 404
    assert web.get("/reports/flights/2013-01-02/drift", headers=reader).status_code == 404
    # the nav entry opens on the use-case when the user reads just one
    index = web.get("/history", headers=reader, follow_redirects=False)
    assert index.status_code == 303 and index.headers["location"] == "/driftline/history/flights"
    both = web.get("/history", headers=admin)
    assert both.status_code == 200 and "taxis" in both.text and "flights" in both.text
    browser = web.get("/history/taxis", headers={**reader, **HTML})
    assert browser.status_code == 403 and "<html>" in browser.text


def test_the_champion_page_offers_a_rollback_to_editors_only(three_versions):
    from tests.unit.operator.test_champion import SCORES

    settings, _ = three_versions
    web = client_for(settings, queued={"flights_training": 2})
    page = web.get("/champion/flights", cookies={views.SESSION_COOKIE: "admin"})
    assert page.status_code == 200
    text = text_of(page.text)
    assert "@champion version 2" in text and "@previous version 1" in text
    assert f"{SCORES['2']:.4f}" in text and "promoted by its gate: better" in text
    assert "flights_training is paused with 2 queued run(s)" in text
    assert '<form class="rollback"' in page.text
    viewer = web.get("/champion/flights", cookies={views.SESSION_COOKIE: "reader"})
    assert viewer.status_code == 200 and "<form" not in viewer.text
    assert "Rolling back needs edit access to" in viewer.text
    refused = web.post("/champion/flights/rollback", data={"reason": "x"},
                       headers={"authorization": "Bearer reader"})
    assert refused.status_code == 403


def test_a_rollback_posted_from_the_page_moves_the_champion_as_the_cli_does(three_versions):
    from driftline.training import registry

    settings, usecase = three_versions
    web = client_for(settings)
    web.cookies.set(views.SESSION_COOKIE, "admin")
    page = web.get("/champion/flights").text
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    form = {"reason": "bad night <b>", "csrf": token}
    origin = {"origin": "http://airflow.test", **HTML}
    # another site's page, or a form without this page's token: refused
    elsewhere = web.post("/champion/flights/rollback", data=form,
                         headers={**origin, "origin": "https://evil.example"})
    assert elsewhere.status_code == 403
    assert web.post("/champion/flights/rollback", data={**form, "csrf": "0" * 64},
                    headers=origin).status_code == 403
    assert web.post("/champion/flights/rollback", data=form, headers=HTML).status_code == 403
    name = usecase.training.registered_model
    assert registry.alias_version(settings, name, "champion") == "2"
    done = web.post("/champion/flights/rollback", data=form, headers=origin,
                    follow_redirects=False)
    assert done.status_code == 303, done.text
    assert registry.alias_version(settings, name, "champion") == "1"
    assert registry.alias_version(settings, name, "previous") == "2"
    restored = registry.client(settings).get_model_version(name, "1").tags["rollback.restored"]
    assert restored.endswith(": bad night <b>")
    after = web.get(done.headers["location"].removeprefix("/driftline"))
    assert "the champion is version 1 again" in after.text
    assert "<b>" not in after.text and "bad night &lt;b&gt;" in after.text
    # a program with a bearer token (no ambient cookie) needs no form token
    api = web.post("/champion/flights/rollback", data={"reason": "back"},
                   headers={"authorization": "Bearer admin"})
    assert api.json() == {"demoted": "1", "restored": "2"}


def test_report_links_open_in_a_new_tab():
    night = NightSummary(usecase="flights", day=JAN2, model_version="1", reference_md5="abc",
                         rows=900, dataset_drift=False, drift_share=0.1)
    page = views.history_page("flights", [night])
    url = links.report_url("flights", JAN2, "quality")
    assert f'<a href="{url}" target="_blank" rel="noopener">quality</a>' in page
    table = page[: page.index("</table>")]
    assert table.count('target="_blank"') == 4  # the day, drift, quality, Data Docs


@pytest.fixture
def three_versions(settings, usecase):
    from tests.unit.operator.test_champion import gate, register

    for version, promote in (("1", True), ("2", True), ("3", False)):
        register(settings, usecase, f"2013-01-0{version}..2013-01-1{version}",
                 f"drift night {version}")
        gate(settings, usecase, version, promote)
    return settings, usecase


# --- the Evidently dashboard: what it plots, read back through Evidently's own storage ---------


def test_the_dashboard_plots_each_night_on_its_own_day_and_one_drift_share_line(settings,
                                                                                  usecase):
    """Nights judging different columns (one without `plane_age`) stay one line; each point is
    at noon of the night's day, not 04:59 UTC the day after."""
    import asyncio

    import numpy as np
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local.base import InMemoryDataStorage

    from driftline.monitoring import dashboard, drift_report
    from tests.unit.monitoring.test_drift_report import frame

    reference = frame(usecase, 3000, seed=1)
    nights = {dt.date(2013, 1, 5): 0, dt.date(2013, 1, 6): 30}
    shares = {}
    for night, shift in nights.items():
        current = frame(usecase, 2000, seed=night.day, temp_shift=shift)
        current["distance"] += shift
        if shift:
            current["plane_age"] = np.nan  # not judged that night
        stamp = dt.datetime.combine(night, dt.time(23, 59), tzinfo=usecase.tz)
        snapshot = drift_report.drift_report(reference, current, usecase,
                                             usecase.monitoring.tests, stamp)
        shares[night] = drift_report.summarize(snapshot.dict(), None).drift_share
        dashboard.record(settings, usecase, night, [snapshot], [])
        assert snapshot.to_snapshot_model().timestamp == stamp  # the caller's is untouched
    assert len(set(shares.values())) == 2 and min(shares.values()) > 0

    storage = InMemoryDataStorage(path=str(settings.evidently_workspace))
    (project_id,) = storage.state.snapshots  # one project per use-case
    plotted = {}
    for panel in dashboard.dashboard_model().panels[:2]:
        (value,) = panel.values
        answer = asyncio.run(storage.get_data_series(
            project_id,
            [SeriesFilter(tags=value.tags, metadata=value.metadata, metric=value.metric,
                          metric_labels=value.metric_labels)],
            None, None))
        assert len(answer.series) == 1, answer.series  # one line, not a lone point per night
        plotted[panel.title] = answer.series[0].values
        days = [source.timestamp for source in answer.sources]
        assert days == [dt.datetime.combine(n, dt.time(12)) for n in nights]
    assert plotted["Share of drifted columns"] == pytest.approx(list(shares.values()))
