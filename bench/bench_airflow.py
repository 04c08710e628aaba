"""Airflow's overhead: one nightly ETL -> monitoring chain through `airflow dags test` against
the same core functions in-process; and each DAG file's parse time.

Setup (not measured): a temporary AIRFLOW_HOME (SQLite, `airflow db migrate`) and
DRIFTLINE_HOME, a seeded SQLite source given by DRIFTLINE_FLIGHTS_SOURCE_URL, the window and
holdout days loaded by driftline.etl.run_day, and a champion trained by
driftline.training.train (dvc repro, MLflow, gate; force_promote so a champion exists) on
January (quick: 3 days), its drift reference fetched once.

Platform: the night after the holdout, as the scheduler would run it (logical date = midnight
New York after the day, like the Makefile's RUN_AT): `airflow dags test flights_etl <date>`
then `airflow dags test flights_monitoring <date>`, wall time of each CLI process.

Baseline, same run, same night: a fresh Python process running the same core functions
in-process (driftline.etl.run_day, scoring.score_day, monitoring.report_night,
monitoring.decide_night), wall time; the functions' own time is reported too. It runs after
Airflow, so it replaces the night's outputs (a little more work than Airflow had to do).

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

FULL = {"window_end": dt.date(2013, 1, 31), "window_days": 31}
QUICK = {"window_end": dt.date(2013, 1, 3), "window_days": 3}
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


def logical_date(day: dt.date, timezone: str) -> str:
    """The logical date of the nightly run that processes `day` (the Makefile's RUN_AT)."""
    import pendulum

    return pendulum.datetime(day.year, day.month, day.day, tz=timezone).add(days=1).isoformat()


# --- children ---------------------------------------------------------------------------------


def child_inproc(night: dt.date) -> None:
    """The monitoring chain's core functions in this fresh process (DRIFTLINE_HOME from env)."""
    with timed() as imports:
        from driftline import etl, monitoring, scoring
        from driftline.config import Settings, load_usecase

    settings = Settings.from_env()
    usecase = load_usecase("flights", settings)
    steps = {}
    with timed() as step:
        etl.run_day(usecase, settings, night)
    steps["run_day"] = step.seconds
    with timed() as step:
        scored = scoring.score_day(usecase, settings, night)
    steps["score_day"] = step.seconds
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


def airflow_run(env, dag_id: str, date: str, log: Path):
    run = run_child(["airflow", "dags", "test", dag_id, date], env, timeout=3600)
    log.write_text(run.stdout + "\n--- stderr ---\n" + run.stderr)
    if run.returncode != 0:
        raise SystemExit(
            f"airflow dags test {dag_id} {date} failed; log {log}:\n{run.stdout[-3000:]}"
        )
    return run


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

        from driftline import etl, training

        request = training.TrainingRequest(
            window_end=plan["window_end"],
            window_days=plan["window_days"],
            holdout_days=usecase.training.holdout_days,
            reason="bench_airflow",
            force_promote=True,
        )
        night = request.holdout_end + dt.timedelta(days=1)
        date = logical_date(night, usecase.timezone)
        seed_source(usecase, url, first=request.window_start, last=night)
        migrate = checked(
            run_child(["airflow", "db", "migrate"], env, timeout=1800),
            "migrate",
            needs_result=False,
        )
        with timed() as backfill:
            for day in days(request.window_start, request.holdout_end):
                etl.run_day(usecase, settings, day, url)
        with timed() as train, contextlib.redirect_stdout(sys.stderr):  # MLflow prints
            trained = training.train(usecase, settings, request)

        from driftline import monitoring

        champion = monitoring.champion_facts(usecase, settings, trained["version"])
        monitoring.reference_sample(usecase, settings, champion)  # fetched once, as in service

        etl_run = airflow_run(env, "flights_etl", date, root / "flights_etl.log")
        if not (settings.partition_dir(usecase.name, night) / etl.PARTITION_FILE).exists():
            raise SystemExit(f"flights_etl {date} left no partition for {night}")
        monitoring_run = airflow_run(env, "flights_monitoring", date, root / "monitoring.log")
        if not (settings.reports_dir(usecase.name, night) / "drift.html").exists():
            raise SystemExit(f"flights_monitoring {date} left no drift report for {night}")
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
    airflow_total = etl_run.seconds + monitoring_run.seconds
    table = Table(f"bench_airflow: the night {night} (logical date {date})", args.quick)
    table.add(
        "ETL -> monitoring: airflow dags test vs fresh process", airflow_total, "s", inproc.seconds
    )
    table.add(
        "ETL -> monitoring: airflow dags test vs functions only", airflow_total, "s", functions
    )
    table.add("  flights_etl: dags test vs run_day", etl_run.seconds, "s", steps["run_day"])
    table.add(
        "  flights_monitoring: dags test vs score+report+decide",
        monitoring_run.seconds,
        "s",
        functions - steps["run_day"],
    )
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
    table.add("setup: airflow db migrate", migrate.seconds, "s")
    table.add(
        f"setup: ETL of {request.window_start}..{request.holdout_end} in-process",
        backfill.seconds,
        "s",
    )
    table.add("setup: training.train (champion)", train.seconds, "s")
    table.note(f"drift sensor decision on {night}: {inproc.result['decision']}")
    table.note(
        "'fresh process' = a new python running the four core functions (imports included), "
        "like one `airflow dags test` process per DAG but without Airflow; parse = "
        "BundleDagBag(<file>) in a fresh process after `import airflow.sdk`."
    )
    table.finish(args)
    return None


if __name__ == "__main__":
    sys.exit(main())
