"""Hostile input from outside: a training trigger's conf and the plugin's URLs.

Every field of a `flights_training` conf is either refused (by the DAG's Params when the run is
created, and again by `TrainingRequest.from_conf` against the same schema, which the CLI and
the sensor go through too) or kept only as text: the reason in a git commit message and an
MLflow tag, the evidence in one MLflow tag; nothing opens a file or follows a link a conf
names. The plugin's pages serve only files under $DRIFTLINE_HOME that a known use-case, a real
date and a fixed report kind name.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from driftline.operator import views
from driftline.training import pipeline as training
from driftline.training.request import (
    MAX_EVIDENCE_CHARS,
    MAX_REASON_CHARS,
    TrainingRequest,
    TrainingRequestError,
)
from driftline.training.workspace import Workspace
from tests.conftest import REPO

OK = {"window_end": "2013-01-31", "window_days": 31, "reason": "manual"}
SQL = "2013-01-31'; DROP TABLE flights;--"
TRAVERSALS = [
    "../../etc/passwd",
    "/etc/passwd",
    "..\\..\\windows\\win.ini",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "2013-01-31/../../../etc/passwd",
    "file:///etc/passwd",
]
MEGABYTE = "x" * (1 << 20)


def _nested(depth: int) -> dict:
    inner: dict = {"leaf": 1}
    for _ in range(depth):
        inner = {"a": inner}
    return inner


@pytest.fixture(scope="module")
def training_dag():
    """The DAG as the dag-processor builds it (tests/dags/test_dag_integrity.py)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(REPO / "dags"), bundle_path=REPO / "dags", safe_mode=False)
    assert bag.import_errors == {}
    return bag.dags["flights_training"]


@pytest.fixture(scope="module")
def served_dag(training_dag):
    """The DAG as the api-server holds it: serialized, then read back."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(training_dag))


def server_check(served_dag, conf: dict) -> None:
    """What the api-server does with a trigger's conf before it creates the run (the REST API
    answers 400 with this error): SerializedDAG.create_dagrun's params check."""
    served_dag.params.deep_merge(conf).validate()


def worker_check(training_dag, conf: dict) -> None:
    """The task side: the DAG's ParamsDict updated with the conf (as `airflow dags test -c`)."""
    params = copy.deepcopy(training_dag.params)
    params.update(conf)
    params.validate()


# (conf, the param the schema names) -- refused when the run is created, and again by
# driftline.training.request for every way in that has no Params (the CLI, the replay, the sensor)
REFUSED_BY_PARAMS = [
    *[({**OK, "window_end": bad}, "window_end") for bad in [SQL, *TRAVERSALS]],
    ({**OK, "window_end": "2013-01-31\n"}, "window_end"),
    ({**OK, "window_end": "2013-02-30"}, "window_end"),
    ({**OK, "window_end": "２０１３-01-31"}, "window_end"),  # fullwidth digits
    ({**OK, "window_end": "2013-W05-4"}, "window_end"),  # ISO week date: Python reads it
    ({**OK, "window_end": "0001-01-01"}, "window_end"),
    ({**OK, "window_end": MEGABYTE}, "window_end"),
    ({**OK, "window_end": 20130131}, "window_end"),
    ({**OK, "window_end": None}, "window_end"),
    ({**OK, "window_end": ["2013-01-31"]}, "window_end"),
    ({**OK, "window_days": "31"}, "window_days"),
    ({**OK, "window_days": "31; DROP TABLE flights"}, "window_days"),
    ({**OK, "window_days": 10**30}, "window_days"),
    ({**OK, "window_days": -1}, "window_days"),
    ({**OK, "window_days": 31.5}, "window_days"),
    ({**OK, "window_days": True}, "window_days"),
    ({**OK, "window_days": None}, "window_days"),
    ({**OK, "reason": MEGABYTE}, "reason"),
    ({**OK, "reason": "x" * (MAX_REASON_CHARS + 1)}, "reason"),
    ({**OK, "reason": ""}, "reason"),
    ({**OK, "reason": "drift\x00; rm -rf /"}, "reason"),  # a NUL cannot go into `git commit`
    ({**OK, "reason": "\x1b]0;owned\x07\x1b[2J"}, "reason"),  # terminal escapes
    ({**OK, "reason": ["manual"]}, "reason"),
    ({**OK, "reason": {"sql": SQL}}, "reason"),
    ({**OK, "force_promote": "true"}, "force_promote"),
    ({**OK, "force_promote": 1}, "force_promote"),
    ({**OK, "force_promote": None}, "force_promote"),
    ({**OK, "evidence": "../../etc/passwd"}, "evidence"),
    ({**OK, "evidence": ["/etc/passwd"]}, "evidence"),
    ({**OK, "evidence": {"report": {"path": "../../etc/passwd"}}}, "evidence"),
    ({**OK, "evidence": {"report": [{"path": "/etc/passwd"}]}}, "evidence"),
    ({**OK, "evidence": _nested(50)}, "evidence"),
    ({**OK, "evidence": {"report": MEGABYTE}}, "evidence"),
    ({**OK, "evidence": {"drifted_columns": ["c"] * 1000}}, "evidence"),
    ({**OK, "evidence": {f"k{i}": i for i in range(1000)}}, "evidence"),
    ({**OK, "evidence": {"x" * 1000: 1}}, "evidence"),
    ({**OK, "evidence": {"drifted_columns": ["c" * 1000]}}, "evidence"),
]


@pytest.mark.parametrize(
    ("conf", "field"),
    REFUSED_BY_PARAMS,
    ids=[f"{i}-{field}" for i, (_, field) in enumerate(REFUSED_BY_PARAMS)],
)
def test_the_params_schema_refuses_it_and_so_does_the_request_check(
    training_dag, served_dag, usecase, conf, field
):
    from airflow.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=f"Invalid input for param {field}:"):
        server_check(served_dag, conf)
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {field}:"):
        worker_check(training_dag, conf)
    with pytest.raises(TrainingRequestError) as refused:
        TrainingRequest.from_conf(conf, usecase)
    message = str(refused.value)
    assert message.startswith(f"{field}:"), message
    assert len(message) < 1000, "a refusal quotes the value, briefly"


# Let through by Params (Airflow admits undeclared keys; JSON Schema has no total size), and
# refused by check_request, the DAG's first task, before anything is read or written
REFUSED_BY_THE_REQUEST_CHECK = [
    ({**OK, "colour": "blue"}, "unknown field(s) ['colour']"),
    ({**OK, SQL: 1}, "unknown field(s)"),
    ({**OK, "../../etc/passwd": "x"}, "unknown field(s) ['../../etc/passwd']"),
    ({**OK, MEGABYTE: 1}, "unknown field(s)"),
    ({**OK, "window_days": 31.0}, "window_days"),  # JSON Schema counts 31.0 as an integer
    (
        {**OK, "evidence": {f"k{i}": "x" * 1000 for i in range(10)}},
        f"more than {MAX_EVIDENCE_CHARS}",
    ),
]


@pytest.mark.parametrize(("conf", "named"), REFUSED_BY_THE_REQUEST_CHECK)
def test_what_params_let_through_the_request_check_refuses(
    training_dag, served_dag, usecase, conf, named
):
    server_check(served_dag, conf)
    worker_check(training_dag, conf)
    with pytest.raises(TrainingRequestError) as refused:
        TrainingRequest.from_conf(conf, usecase)
    assert named in str(refused.value) and len(str(refused.value)) < 1000


@pytest.mark.parametrize("window_end", ["9999-12-31", "0001-01-01", "0001-01-31"])
def test_a_date_at_the_end_of_the_calendar_is_refused_not_an_overflow(usecase, window_end):
    """No Params on the CLI's way in: the check itself must not crash on extreme dates."""
    with pytest.raises(TrainingRequestError, match="^window_end: "):
        TrainingRequest.from_conf({**OK, "window_end": window_end, "window_days": 31}, usecase)


@pytest.mark.parametrize("depth", [50, 500, 5000])
def test_nested_evidence_is_refused_with_a_short_message(training_dag, served_dag, usecase, depth):
    """Refused at run creation however deep; but past ~450 levels Airflow's own refusal fails
    to print the value (jsonschema pretty-prints it: RecursionError, so the REST API answers
    500 rather than 400). The run is not created either way; check_request's message stays
    short at any depth."""
    from airflow.exceptions import ParamValidationError

    conf = {**OK, "evidence": _nested(depth)}
    with pytest.raises((ParamValidationError, RecursionError)):
        server_check(served_dag, conf)
    with pytest.raises((ParamValidationError, RecursionError)):
        worker_check(training_dag, conf)
    with pytest.raises(TrainingRequestError, match="^evidence: 'a' must be text") as refused:
        TrainingRequest.from_conf(conf, usecase)
    assert len(str(refused.value)) < 300


# Accepted everywhere: text that only looks dangerous. It must come out as the same text.
HOSTILE_REASONS = [
    SQL,
    "x'); DELETE FROM runs; --",
    "../../etc/passwd",
    "$(touch /tmp/driftline-pwned) `id` ; rm -rf / && echo",
    "--amend --author=evil",
    "line one\nline two",
    "<script>alert(1)</script> & ünïcödé 漢字 🚀 \u202eevil",
    "r" * MAX_REASON_CHARS,
]
HOSTILE_EVIDENCE = {
    "day": "2013-02-10",
    "report": "../../../../etc/passwd",
    "report_json": "/etc/passwd",
    "encoded": "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "windows": "..\\..\\windows\\win.ini",
    "link": "file:///etc/passwd",
    "sql": SQL,
    "drifted_columns": ["dest", "../../etc/shadow", SQL],
    "drift_share": float("nan"),
    "roc_auc": None,
}


@pytest.mark.parametrize("reason", HOSTILE_REASONS, ids=range(len(HOSTILE_REASONS)))
def test_hostile_text_is_accepted_as_text(training_dag, served_dag, usecase, reason):
    conf = {**OK, "reason": reason, "evidence": HOSTILE_EVIDENCE}
    server_check(served_dag, conf)
    worker_check(training_dag, conf)
    request = TrainingRequest.from_conf(conf, usecase)
    assert request.reason == reason
    # what check_request hands the next tasks through XCom comes back unchanged
    again = TrainingRequest.from_dict(json.loads(json.dumps(request.as_dict())))
    assert again.reason == reason and again.evidence.keys() == HOSTILE_EVIDENCE.keys()


@pytest.mark.parametrize("reason", HOSTILE_REASONS, ids=range(len(HOSTILE_REASONS)))
def test_a_hostile_reason_is_one_argument_of_git_commit_kept_verbatim(tmp_path, usecase, reason):
    """run_dvc_pipeline commits the workspace with the reason in the message: it is one argv
    entry (no shell), so it cannot run a command or add an option."""
    ws = Workspace(tmp_path)
    ws.run("git", "init", "-q")
    request = TrainingRequest.from_conf({**OK, "reason": reason}, usecase)
    message = training.commit_message(request, "flights_training", "manual__2013'; --")
    ws.commit(message)
    assert ws.run("git", "log", "-1", "--format=%B") == message
    assert ws.run("git", "log", "--format=%H").count("\n") == 0  # one commit, nothing amended
    assert not Path("/tmp/driftline-pwned").exists()


@contextmanager
def opened_files():
    """Every file the interpreter opens and every process it starts, while inside."""
    seen: list[str] = []
    recording = [True]

    def hook(event: str, args: tuple) -> None:
        if recording[0] and event in ("open", "subprocess.Popen", "os.listdir", "os.scandir"):
            seen.append(f"{event} {args[:2]!r}")

    sys.addaudithook(hook)  # hooks cannot be removed: this one goes quiet on leaving
    try:
        yield seen
    finally:
        recording[0] = False


def test_hostile_evidence_is_only_kept_as_text_on_the_model_version(
    usecase, settings, monkeypatch, tmp_path
):
    """From the trigger's conf to the MLflow run: the reason and the evidence are tags (MLflow
    stores tags with bound parameters), and no file the evidence names is opened or listed."""
    from driftline.training import registry

    captured: dict = {}

    class FakeWorkspace:
        root = tmp_path

        @contextmanager
        def at_commit(self, commit):
            yield self

        def tag(self, name, commit):
            captured["git_tag"] = name

        def run(self, *args, check=True):
            return ""

    def find_or_start_run(settings_, usecase_, run_key, tags):
        captured["run_key"], captured["tags"] = run_key, tags
        return "run-1"

    monkeypatch.setattr(training, "workspace", lambda *a: FakeWorkspace())
    monkeypatch.setattr(training, "_train_params", lambda ws: {})
    monkeypatch.setattr(training, "code_revision", lambda: "abc")
    monkeypatch.setattr(registry, "find_or_start_run", find_or_start_run)
    monkeypatch.setattr(registry, "log_model_version", lambda *a: "7")
    monkeypatch.setattr(registry, "experiment_id", lambda *a: "1")

    conf = {**OK, "reason": SQL, "evidence": HOSTILE_EVIDENCE}
    with opened_files() as seen:
        request = TrainingRequest.from_conf(conf, usecase)
        registered = training.register(
            usecase,
            settings,
            request,
            training.run_key_for("flights_training", "manual__x'; DROP TABLE runs;--"),
            {"airflow_dag_id": "flights_training", "airflow_run_id": "manual__x"},
            {"commit": "c0ffee", "hashes": {}},
        )
    assert registered["version"] == "7"
    tags = captured["tags"]
    assert tags["trigger_reason"] == SQL
    assert json.loads(tags["trigger_evidence"].replace("NaN", "null")) == {
        **HOSTILE_EVIDENCE,
        "drift_share": None,
    }
    assert len(tags["trigger_evidence"]) <= MAX_EVIDENCE_CHARS  # whole, not cut
    # the MLflow search by run key is a filter string: the key has no quote to break out of
    assert set(captured["run_key"]) <= set(
        "abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:+-"
    )
    touched = "\n".join(seen)
    for needle in ("passwd", "shadow", "win.ini", "%2e", "DROP"):
        assert needle not in touched, touched


@pytest.mark.parametrize("run", [".", "..", "", "../..", "manual__../../x", "/etc", "a/../.."])
def test_an_etl_run_id_cannot_move_its_staging_folder(settings, run):
    """The ETL's staging folder is named after the Airflow run id (Airflow's default pattern
    admits "." and ".."): it stays one folder below the day's, never the day's or above."""
    day = dt.date(2013, 1, 2)
    staged = settings.staging_dir("flights", day, run)
    assert staged.parent == settings.home / "staging" / "flights" / "2013-01-02"
    assert staged.name not in {"", ".", ".."} and "/" not in staged.name


# -- the plugin's pages ---------------------------------------------------------------------


@pytest.fixture
def pages(settings, tmp_path):
    """The plugin's app for a user Airflow lets read and edit everything, a report, a Data
    Docs page, and a secret file beside $DRIFTLINE_HOME that no URL may reach."""
    from fastapi.testclient import TestClient

    async def admin(request):
        return "admin"

    everything = views.Access(admin, lambda user, method, dag_ids: True, lambda url: "/login")
    app = views.create_app(lambda: settings, lambda: everything)
    report = settings.reports_dir("flights", dt.date(2013, 1, 2)) / "drift.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html>the drift report</html>")
    docs = settings.validation_result_path("flights", dt.date(2013, 1, 2)).with_suffix(".html")
    docs.parent.mkdir(parents=True)
    docs.with_suffix(".json").write_text("{}")  # the stored result the page was made from
    docs.write_text("<html>the data docs</html>")
    (tmp_path / "secret.html").write_text("SECRET")
    (settings.home / "secret.html").write_text("SECRET")
    return TestClient(app)


def test_the_pages_serve_what_they_name(pages):
    assert pages.get("/reports/flights/2013-01-02/drift").text == "<html>the drift report</html>"
    assert pages.get("/data-docs/flights/2013-01-02").text == "<html>the data docs</html>"


def test_the_pages_need_a_login(settings):
    from fastapi.testclient import TestClient

    anonymous = TestClient(views.create_app(lambda: settings))
    assert anonymous.get("/reports/flights/2013-01-02/drift").status_code == 401


TRAVERSAL_URLS = [
    "/reports/..%2F..%2F..%2F/2013-01-02/drift",
    "/reports/flights/..%2F..%2Fsecret.html/drift",
    "/reports/flights/2013-01-02/..%2F..%2F..%2F..%2Fsecret",
    "/reports/flights/2013-01-02/%2e%2e%2f%2e%2e%2fsecret",
    "/reports/flights/2013-01-02/%252e%252e%252fsecret",
    "/reports/flights/2013-01-02/drift%00.html",
    "/reports/flights/2013-01-02/drift.html",
    "/reports/flights/2013-01-02%2F..%2F..%2F..%2F..%2F/drift",
    "/reports/flights/..%5C..%5C..%5Csecret/drift",
    "/reports/%2Fetc%2Fpasswd/2013-01-02/drift",
    "/reports/flights/20130102/quality",
    "/data-docs/flights/..%2F..%2Fsecret",
    "/data-docs/flights/%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret",
    "/data-docs/..%2F..%2F/2013-01-02",
    "/data-docs/flights/2013-01-02%00",
    "/data-docs/flights/2013-01-02'%20OR%20'1'='1",
    "/history/..%2F..%2Fsecret",
    "/history/flights'%3B%20DROP%20TABLE%20drift_history%3B--",
]


@pytest.mark.parametrize("url", TRAVERSAL_URLS)
def test_a_url_cannot_reach_a_file_it_does_not_name(pages, url):
    answer = pages.get(url)
    assert answer.status_code == 404, (answer.status_code, answer.text[:300])
    assert "SECRET" not in answer.text and "root:" not in answer.text


@fuzz_settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    usecase_name=st.one_of(st.sampled_from(["flights", "../flights", "flights/..", ""]), st.text()),
    day=st.one_of(
        st.dates().map(dt.date.isoformat),
        st.sampled_from(["2013-01-02/../../..", "../../secret", "2013-01-02\x00", "20130102"]),
        st.text(),
    ),
    kind=st.one_of(st.sampled_from(["drift", "quality", "../secret", "drift.html"]), st.text()),
)
def test_any_path_parts_give_a_file_under_the_home_or_not_found(settings, usecase_name, day, kind):
    home = settings.home.resolve()
    for find in (
        lambda: views.report_file(settings, usecase_name, day, kind),
        lambda: views.data_docs_file(settings, usecase_name, day),
    ):
        try:
            found = find()
        except views.NotFound:
            continue
        assert found.resolve().is_relative_to(home), found
