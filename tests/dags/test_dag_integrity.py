"""Every DAG file imports cleanly under Airflow 3, cheaply, and follows the house rules."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from driftline.operator.alerts import on_task_failure
from tests.conftest import REPO

DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = {"pandas", "great_expectations", "mlflow", "evidently", "xgboost", "dvc", "sklearn",
         "pyarrow"}


def _dagbag(dag_folder: Path = REPO / "dags"):
    """The bag the dag-processor uses (it puts the bundle's folder on sys.path)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(dag_folder), bundle_path=dag_folder, safe_mode=False)


@pytest.fixture(scope="module")
def dagbag():
    return _dagbag()


def test_dag_files_exist():
    assert DAG_FILES


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"flights_etl", "flights_training", "flights_monitoring"} <= set(dagbag.dag_ids)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_nothing_heavy_at_parse_time(path):
    """Run the file in a fresh interpreter and list the top-level packages it pulled in."""
    probe = (
        "import sys, json, importlib.util\n"
        f"sys.path.insert(0, {str(path.parent)!r})  # as Airflow does for its dags folder\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert not imported & HEAVY, f"{path.name} imports {sorted(imported & HEAVY)} at parse time"


def test_house_rules(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.owner and dag.owner != "airflow", f"{dag_id} has no owner"
        assert dag.doc_md and "When it fails" in dag.doc_md, f"{dag_id} doc_md lacks what to do"
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries {task.retries}"
            assert task.retry_exponential_backoff, f"{dag_id}.{task.task_id}: no back-off"
            assert task.retry_delay.total_seconds() >= 30, f"{dag_id}.{task.task_id} retry_delay"
            assert task.execution_timeout, f"{dag_id}.{task.task_id} has no execution_timeout"
            assert not task.on_retry_callback, f"{dag_id}.{task.task_id} alerts on a retry"
            if (dag_id, task.task_id) not in REPEATS_AN_ALERTED_FAILURE:
                assert task.on_failure_callback == [on_task_failure], (
                    f"{dag_id}.{task.task_id}: no alert when it fails for good")


# Tasks that fail only because another task did, which already sent that event's alert.
REPEATS_AN_ALERTED_FAILURE = {("flights_monitoring", "not_scored_ahead")}


def test_a_use_cases_night_deadline_is_an_airflow_deadline_alert(dagbag, usecase):
    """night_deadline_hours: a Deadline Alert counted from the run's queueing, whose callback
    the triggerer can import; flights.yaml sets none (`dags test` fails on one)."""
    from airflow.sdk import AsyncCallback, DeadlineReference

    from driftline_defaults import night_deadline

    deadline = night_deadline(usecase.model_copy(update={"night_deadline_hours": 6}))
    assert deadline.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert deadline.interval == dt.timedelta(hours=6)
    assert isinstance(deadline.callback, AsyncCallback)
    assert deadline.callback.path == "driftline.operator.alerts.on_night_deadline_missed"
    assert deadline.callback.kwargs == {"hours": 6}
    assert night_deadline(usecase) is None
    for dag_id in ("flights_etl", "flights_monitoring", "flights_training"):
        assert not dagbag.dags[dag_id].deadline


def test_etl_dag_covers_one_new_york_day_per_run(dagbag):
    from airflow.timetables.interval import CronDataIntervalTimetable

    dag = dagbag.dags["flights_etl"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert str(dag.timezone) == "America/New_York"
    assert dag.start_date == dt.datetime.fromisoformat("2013-01-01T00:00:00-05:00")
    assert dag.catchup is True
    assert [t.task_id for t in dag.tasks] == [
        "extract_flights", "build_batch", "validate_batch", "load_partition",
    ]
    load = dag.get_task("load_partition")
    assert [o.name for o in load.outlets] == ["flights_curated"]


def test_a_second_usecase_needs_only_a_config_file(tmp_path, monkeypatch):
    raw = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    raw["name"] = "flights_copy"
    usecases = tmp_path / "usecases"
    usecases.mkdir()
    (usecases / "flights.yaml").write_text((REPO / "usecases" / "flights.yaml").read_text())
    (usecases / "flights_copy.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DRIFTLINE_USECASES_DIR", str(usecases))
    bag = _dagbag()
    assert bag.import_errors == {}
    assert {"flights_etl", "flights_copy_etl"} <= set(bag.dag_ids)


@pytest.mark.parametrize("path", sorted((REPO / "usecases").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_usecase_config_passes_the_check(path):
    """`driftline check`'s every check, the hooks imported included."""
    from driftline.config import Settings, check_usecase

    settings = Settings(home=REPO / "data", usecases_dir=REPO / "usecases",
                        expectations_dir=REPO / "expectations")
    assert check_usecase(path, settings) == []


def test_a_wrong_config_is_one_import_error_and_the_others_dags_still_load(tmp_path,
                                                                          monkeypatch):
    usecases, expectations = tmp_path / "usecases", tmp_path / "expectations"
    usecases.mkdir()
    shutil.copytree(REPO / "expectations", expectations)
    shutil.copy(REPO / "usecases" / "flights.yaml", usecases)
    raw = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    raw["name"] = "broken"
    raw["training"]["gate"]["slices"] = {"tailnum": 0}
    raw["label"]["rule"] = "arr_delay >> > 15"
    del raw["validation"]["parameters"]["min_rows"]
    (usecases / "broken.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DRIFTLINE_USECASES_DIR", str(usecases))
    monkeypatch.setenv("DRIFTLINE_EXPECTATIONS_DIR", str(expectations))
    bag = _dagbag()
    assert list(bag.import_errors) == ["usecase_configs.py"]  # relative to the bundle
    error = next(iter(bag.import_errors.values()))
    for field in ("training.gate.slices", "label.rule", "validation.parameters"):
        assert f"{usecases / 'broken.yaml'}: {field}: " in error, error
    assert "flights.yaml" not in error
    assert {"flights_etl", "flights_training", "flights_monitoring"} <= set(bag.dag_ids)
    assert not [d for d in bag.dag_ids if d.startswith("broken")]


def test_monitoring_scores_ahead_then_judges_the_night_even_when_scoring_failed(dagbag):
    dag = dagbag.dags["flights_monitoring"]
    assert {t.task_id for t in dag.tasks} == {
        "wait_for_partition", "score_ahead", "report_drift", "not_scored_ahead",
        "drift_sensor", "trigger_retraining",
    }
    assert dag.get_task("score_ahead").upstream_task_ids == {"wait_for_partition"}
    assert dag.get_task("report_drift").upstream_task_ids == {"score_ahead"}
    assert dag.get_task("report_drift").trigger_rule == "all_done"
    watcher = dag.get_task("not_scored_ahead")  # a leaf: the run is red when scoring failed
    assert watcher.upstream_task_ids == {"score_ahead"} and not watcher.downstream_task_ids
    assert watcher.trigger_rule == "one_failed"


@pytest.mark.parametrize(
    ("start", "night"),
    [("2013-03-10T05:00:00+00:00", "2013-03-10"), ("2013-11-03T04:00:00+00:00", "2013-11-03")],
)
def test_a_monitoring_run_names_the_new_york_day_of_its_interval(dagbag, start, night):
    """The night's day, as its tasks and the retraining's run id get it (the DAG's macro over
    UseCase.run_day), on the two DST days: Airflow hands the interval start in UTC."""
    import pendulum

    dag = dagbag.dags["flights_monitoring"]
    context = {"data_interval_start": pendulum.parse(start)}
    env = dag.get_template_env()
    assert env.from_string(dag.get_task("drift_sensor").day).render(context) == night
    trigger_run_id = dag.get_task("trigger_retraining").trigger_run_id
    assert env.from_string(trigger_run_id).render(context) == f"drift__{night}"


def test_training_dag_is_manual_one_at_a_time_with_a_params_schema(dagbag):
    dag = dagbag.dags["flights_training"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # by hand or by the drift sensor
    assert dag.max_active_runs == 1
    assert dag.is_paused_upon_creation is False  # its queued runs never wait unseen
    assert set(dag.params) == {"window_end", "window_days", "reason", "force_promote",
                               "evidence"}
    assert dag.params.get_param("window_days").schema["minimum"] == 1
    assert [t.task_id for t in dag.tasks] == [
        "check_request", "snapshot_window", "run_dvc_pipeline", "register_model",
        "gate_challenger",
    ]


def test_the_etl_fails_at_once_only_what_no_retry_can_heal(monkeypatch):
    """A broken source (a missing table, a corrupt file), a refused day or a wrong config
    fails the task without retries; an unreachable or locked source is retried with back-off."""
    import importlib

    from airflow.sdk.exceptions import AirflowFailException

    from driftline.config import ConfigError
    from driftline.ingest import etl

    monkeypatch.syspath_prepend(str(REPO / "dags"))
    etl_dag_file = importlib.import_module("etl")
    for permanent in (etl.SourceBrokenError("no such table: weather"),
                      etl.BatchRejectedError("refused at the source", Path("/q")),
                      ConfigError("transform: cannot import 'x:y'")):
        with pytest.raises(AirflowFailException):
            with etl_dag_file.fail_without_retry_when_rejected():
                raise permanent
    with pytest.raises(etl.SourceUnavailableError):
        with etl_dag_file.fail_without_retry_when_rejected():
            raise etl.SourceUnavailableError("database is locked")
