"""Airflow's overhead: one nightly ETL -> monitoring chain run by the scheduler of a real
`driftline stack up` stack, against the same core functions in-process; and each DAG file's
parse time.

Setup (not measured): a temporary DRIFTLINE_HOME and AIRFLOW_HOME, a seeded SQLite source
given by DRIFTLINE_FLIGHTS_SOURCE_URL, the window and holdout days loaded by
driftline.ingest.etl.run_day, and a champion trained by driftline.training.pipeline.train (dvc
repro, MLflow,
gate; force_promote so a champion exists) on January (quick: 3 days), its drift reference
fetched once. Then `driftline stack up` (the embedded default: LocalExecutor on SQLite, the
api-server, scheduler, dag-processor, triggerer, MLflow and Evidently UIs) on free ports,
with a use-case override whose start_date and end_date are the night after the holdout.

Platform: flights_etl and flights_monitoring are unpaused through the REST API; the
scheduler's catchup runs flights_etl for exactly that night (the override bounds it), then a
backfill of the same night runs flights_monitoring, as an operator would start one. Wall time
from the unpause to the ETL run's end, and from the backfill's creation to the monitoring
run's end (polled every 0.5 s); the task instances' own durations are reported too, so the
rest is the scheduler's (queueing, task start-up, sensors' pokes).

Baseline, same run, same night, after `stack down`: a fresh Python process running the same
core functions in-process (driftline.ingest.etl.run_day, scoring.score_ahead,
monitoring.report_night, monitoring.decide_night), wall time; the functions' own time is
reported too. It runs after Airflow, so it replaces the night's outputs (a little more work
than Airflow had to do).

Parse: each dags/*.py parsed alone in a fresh process by the dag-processor's bag
(airflow.dag_processing.dagbag.BundleDagBag), against a trivial one-DAG file parsed the same
way (the baseline), plus the whole folder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    REPO,
    Table,
    bench_env,
    days,
    emit,
    flights,
    isolate,
    parse_args,
    run_child,
    seed_source,
    settings_for,
    sqlite_url,
    temp_dir,
    timed,
)
from driftline.config import UseCase

FULL = {"window_end": dt.date(2013, 1, 31), "window_days": 31}
QUICK = {"window_end": dt.date(2013, 1, 3), "window_days": 3}
ETL_DAG, MONITORING_DAG = "flights_etl", "flights_monitoring"
POLL_SECONDS = 0.5
TRIVIAL_DAG = '''"""A trivial DAG file: what parsing costs Airflow itself."""
from airflow.sdk import DAG

with DAG("trivial", schedule=None):
    pass
'''


def extra_arguments(parser) -> None:
    parser.add_argument("--child", choices=["inproc", "parse"], help=argparse.SUPPRESS)
    parser.add_argument("--night", type=dt.date.fromisoformat)
    parser.add_argument("--file", type=Path)
    parser.add_argument("--bundle", type=Path)


# --- children ---------------------------------------------------------------------------------


def child_inproc(night: dt.date) -> None:
    """The monitoring chain's core functions in this fresh process (DRIFTLINE_HOME from env)."""
    with timed() as imports:
        from driftline.config import Settings, load_usecase
        from driftline.ingest import etl
        from driftline.monitoring import nightly as monitoring
        from driftline.monitoring import scoring

    settings = Settings.from_env()
    usecase = load_usecase("flights", settings)
    steps = {}
    with timed() as step:
        etl.run_day(usecase, settings, night)
    steps["run_day"] = step.seconds
    with timed() as step:
        scored = scoring.score_ahead(usecase, settings, night)
    steps["score_ahead"] = step.seconds
    with timed() as step:
        monitoring.report_night(usecase, settings, night, scored.model_version)
    steps["report_night"] = step.seconds
    with timed() as step:
        verdict, _ = monitoring.decide_night(usecase, settings, night)
    steps["decide_night"] = step.seconds
    emit({"imports": imports.seconds, "steps": steps, "decision": verdict.decision})


def child_parse(path: Path, bundle: Path) -> None:
    """Parse one DAG file (or folder) as the dag-processor does, in this fresh process."""
    with timed() as imports:
        import airflow.sdk  # noqa: F401
        from airflow.dag_processing.dagbag import BundleDagBag
    with timed() as parse:
        bag = BundleDagBag(dag_folder=str(path), bundle_path=bundle, safe_mode=False)
    emit(
        {
            "import_airflow": imports.seconds,
            "parse": parse.seconds,
            "files": {Path(s.file).name: s.duration.total_seconds() for s in bag.dagbag_stats},
            "dags": len(bag.dag_ids),
            "errors": {str(k): str(v)[-300:] for k, v in bag.import_errors.items()},
        }
    )


# --- the parent ---------------------------------------------------------------------------------


def checked(run, what: str, needs_result: bool = True):
    problem = run.failed(needs_result)
    if problem:
        raise SystemExit(f"{what} failed: {problem}\n{run.stdout[-3000:]}")
    return run


def one_night_usecases(folder: Path, night: dt.date) -> Path:
    """flights.yaml whose calendar is the one night (catchup schedules exactly that run) and
    whose rule stays quiet (no training is started while the chain is timed)."""
    import yaml

    config = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    config["start_date"] = config["end_date"] = night.isoformat()
    config["monitoring"]["rule"].update(drift_share=1.0, quality_drop=None)
    folder.mkdir(parents=True)
    (folder / "flights.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def stack_env(env: dict[str, str], usecases: Path) -> dict[str, str]:
    """The bench's environment for `driftline stack up`: free ports, the one-night use-case."""
    from tests.stack_helpers import free_port

    names = ("AIRFLOW", "MLFLOW", "EVIDENTLY", "WORKER_LOG", "TRIGGER_LOG")
    ports = {f"DRIFTLINE_{name}_PORT": str(free_port()) for name in names}
    extra = {
        "DRIFTLINE_USECASES_DIR": str(usecases),
        "DRIFTLINE_EXPECTATIONS_DIR": str(REPO / "expectations"),
    }
    return {**env, **ports, **extra}


@dataclass
class ScheduledRun:
    """One DAG run as the scheduler ran it: wall time seen by the operator, task time inside."""

    dag_id: str
    run_id: str
    wall: float  # from the unpause / backfill request to the run's end, as polled
    tasks: float  # the task instances' own durations, summed
    states: dict[str, str]


def run_through_scheduler(api, dag_id: str, start, timeout: float = 1800) -> ScheduledRun:
    """Call `start()` (unpause, or create a backfill), then wait for the DAG's one run."""
    from airflow_client.client.api.task_instance_api import TaskInstanceApi

    began = time.perf_counter()
    start()
    while True:
        runs = api.runs(dag_id)
        done = [r for r in runs if str(r.state.value) in ("success", "failed")]
        if done:
            wall = time.perf_counter() - began
            break
        if time.perf_counter() - began > timeout:
            raise SystemExit(f"{dag_id}: no run finished in {timeout:.0f} s: {runs}")
        time.sleep(POLL_SECONDS)
    run = done[0]
    instances = TaskInstanceApi(api.client).get_task_instances(dag_id, run.dag_run_id)
    states = {
        ti.task_id: str(ti.state.value) if ti.state else "none" for ti in instances.task_instances
    }
    if str(run.state.value) != "success":
        raise SystemExit(f"{dag_id} {run.dag_run_id} ended {run.state.value}: {states}")
    tasks = sum(ti.duration or 0.0 for ti in instances.task_instances)
    return ScheduledRun(dag_id, run.dag_run_id, wall, tasks, states)


def log_tails(home: Path, lines: int = 30) -> str:
    """The end of each service's log and of each task log: what to read when a run failed."""
    logs = [
        *sorted((home / "stack" / "logs").glob("*.log")),
        *sorted(home.rglob("task_id=*/**/*.log")),
    ]
    return "\n".join(
        f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        for log in logs
    )


def scheduled_chain(env: dict[str, str], night: dt.date, usecase: UseCase):
    """`driftline stack up`, the night's flights_etl (catchup) then flights_monitoring
    (backfill) through its scheduler, `driftline stack down`."""
    import json

    from airflow_client.client.api.backfill_api import BackfillApi
    from airflow_client.client.models.backfill_post_body import BackfillPostBody
    from tests.stack_helpers import AirflowApi

    home = Path(env["DRIFTLINE_HOME"])
    up = run_child(["driftline", "stack", "up", "--timeout", "600"], env, timeout=900)
    try:
        if up.returncode != 0:
            raise SystemExit(
                f"driftline stack up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
            )
        state = json.loads((home / "stack" / "state.json").read_text())
        login = state["login"]["airflow"]
        api = AirflowApi(state["urls"]["airflow"], login["user"], login["password"])
        api.wait_for_dags({ETL_DAG, MONITORING_DAG})
        if api.import_errors():
            raise SystemExit(f"DAG import errors: {api.import_errors()}")
        etl_run = run_through_scheduler(api, ETL_DAG, lambda: api.unpause(ETL_DAG))
        midnight = usecase.day_start(night)  # the night's data interval start

        def backfill() -> None:
            api.unpause(MONITORING_DAG)
            body = BackfillPostBody(
                dag_id=MONITORING_DAG, from_date=midnight, to_date=midnight, max_active_runs=1
            )
            BackfillApi(api.client).create_backfill(body)

        monitoring_run = run_through_scheduler(api, MONITORING_DAG, backfill)
    except BaseException:
        sys.stderr.write(log_tails(home) + "\n")
        raise
    finally:
        down = run_child(["driftline", "stack", "down"], env, timeout=300)
        if down.returncode != 0:
            raise SystemExit(f"driftline stack down failed:\n{down.stdout}\n{down.stderr}")
    return up, etl_run, monitoring_run


def parse_times(env, root: Path) -> dict:
    trivial = root / "trivial_dags"
    trivial.mkdir()
    (trivial / "trivial.py").write_text(TRIVIAL_DAG)
    dags = REPO / "dags"
    runs = {"trivial.py (baseline)": (trivial / "trivial.py", trivial)}
    runs.update({p.name: (p, dags) for p in sorted(dags.glob("*.py"))})
    runs["dags/ (whole folder)"] = (dags, dags)
    results = {}
    for name, (path, bundle) in runs.items():
        argv = ["-m", "bench.bench_airflow", "--child", "parse", "--file", str(path)]
        run = checked(run_child([*argv, "--bundle", str(bundle)], env), f"parsing {name}")
        if run.result["errors"]:
            raise SystemExit(f"{name} has import errors: {run.result['errors']}")
        results[name] = {**run.result, "wall": run.seconds}
    return results


def main() -> None:
    args = parse_args(__doc__, extra_arguments)
    logging.basicConfig(level=logging.ERROR)
    if args.child == "inproc":
        return child_inproc(args.night)
    if args.child == "parse":
        return child_parse(args.file, args.bundle)

    plan = QUICK if args.quick else FULL
    with temp_dir("airflow", args.keep) as root:
        home, airflow_home = root / "state", root / "airflow"
        url = sqlite_url(root / "source" / "flights.db")
        isolate(home, url)
        env = bench_env(home, url, airflow_home)
        settings = settings_for(home)
        usecase = flights(settings)

        from driftline.ingest import etl
        from driftline.training import pipeline as training
        from driftline.training.request import TrainingRequest

        request = TrainingRequest(
            window_end=plan["window_end"],
            window_days=plan["window_days"],
            holdout_days=usecase.training.holdout_days,
            reason="bench_airflow",
            force_promote=True,
        )
        night = request.holdout_end + dt.timedelta(days=1)
        # through the day after the night: the night scores it ahead
        seed_source(usecase, url, first=request.window_start, last=night + dt.timedelta(days=1))
        with timed() as backfill:
            for day in days(request.window_start, request.holdout_end):
                etl.run_day(usecase, settings, day, url)
        with timed() as train, contextlib.redirect_stdout(sys.stderr):  # MLflow prints
            trained = training.train(usecase, settings, request)

        from driftline.monitoring import nightly as monitoring

        champion = monitoring.champion_facts(usecase, settings, trained["version"])
        monitoring.reference_sample(usecase, settings, champion)  # fetched once, as in service

        env = stack_env(env, one_night_usecases(root / "usecases", night))
        up, etl_run, monitoring_run = scheduled_chain(env, night, usecase)
        if not (settings.partition_dir(usecase.name, night) / etl.PARTITION_FILE).exists():
            raise SystemExit(f"flights_etl left no partition for {night}")
        if not (settings.reports_dir(usecase.name, night) / "drift.html").exists():
            raise SystemExit(f"flights_monitoring left no drift report for {night}")
        inproc = checked(
            run_child(
                ["-m", "bench.bench_airflow", "--child", "inproc", "--night", night.isoformat()],
                env,
            ),
            "the in-process chain",
        )
        parsed = parse_times(env, root)

    steps = inproc.result["steps"]
    functions = sum(steps.values())
    chain = etl_run.wall + monitoring_run.wall
    table = Table(f"bench_airflow: the night {night}, through the scheduler", args.quick)
    table.add("ETL -> monitoring: scheduler vs fresh process", chain, "s", inproc.seconds)
    table.add("ETL -> monitoring: scheduler vs functions only", chain, "s", functions)
    table.add("  flights_etl: scheduler vs run_day", etl_run.wall, "s", steps["run_day"])
    table.add(
        "  flights_monitoring: scheduler vs score+report+decide",
        monitoring_run.wall,
        "s",
        functions - steps["run_day"],
    )
    for run in (etl_run, monitoring_run):
        table.add(f"  {run.dag_id}: task instances' own time vs run wall", run.tasks, "s", run.wall)
    for name, seconds in steps.items():
        table.add(f"  in-process {name}", seconds, "s")
    table.add(
        "  in-process imports (driftline etl, scoring, monitoring)", inproc.result["imports"], "s"
    )
    baseline = parsed.pop("trivial.py (baseline)")
    for name, result in parsed.items():
        table.add(
            f"parse {name} ({result['dags']} DAGs) vs trivial DAG file",
            result["parse"],
            "s",
            baseline["parse"],
        )
    table.add("import airflow.sdk + DagBag (per parse process)", baseline["import_airflow"], "s")
    table.add("setup: driftline stack up (db migrate, services healthy)", up.seconds, "s")
    table.add(
        f"setup: ETL of {request.window_start}..{request.holdout_end} in-process",
        backfill.seconds,
        "s",
    )
    table.add("setup: training.train (champion)", train.seconds, "s")
    table.note(f"drift sensor decision on {night}: {inproc.result['decision']}")
    for run in (etl_run, monitoring_run):
        table.note(f"{run.dag_id} {run.run_id}: {run.states}")
    table.note(
        "scheduler = `driftline stack up` (LocalExecutor, SQLite), wall from the unpause "
        "(flights_etl) or the backfill request (flights_monitoring) to the run's end; "
        "'fresh process' = a new python running the four core functions (imports included); "
        "parse = BundleDagBag(<file>) in a fresh process after `import airflow.sdk`."
    )
    table.finish(args)
    return None


if __name__ == "__main__":
    sys.exit(main())
