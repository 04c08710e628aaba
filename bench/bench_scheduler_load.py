"""The 30-night load: flights_etl caught up by a real scheduler, two nights at a time, with
the scheduler killed mid-night and restarted, against the same days loaded in-process.

Platform: tests/integration/test_operator_stack.py's night test, run by pytest with
DRIFTLINE_LOAD_NIGHTS=30 (quick: 6, what `make test` runs): `make up` (LocalExecutor,
SQLite, default parallelism), flights_etl unpaused with an end_date 30 nights after 1 January,
SIGKILL of the scheduler while a task runs after 2 nights, `driftline stack restart
scheduler`; the test asserts every run green and every partition byte-identical to the day
loaded alone. One night (3 January) is rejected by the suite on purpose; the figure is the
wall time from the unpause until every night has ended (the rejected one failed), as the test
measures it. The stack's start-up is reported apart; the source fix and the rejected night's
rerun come after the figure and are not in the table.

Baseline, same run, same nights: driftline.ingest.etl.run_day of each day in one process, in order
(what `driftline etl` does), wall time. The ratio is the scheduler's cost per night: task
start-up, queueing, two nights sharing 2 cores, the crash's lost work and the restart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

from bench.common import (
    REPO,
    Table,
    days,
    flights,
    isolate,
    parse_args,
    seed_source,
    settings_for,
    sqlite_url,
    temp_dir,
    timed,
)

TEST = "tests/integration/test_operator_stack.py"
NIGHT_TEST = "test_nights_two_at_a_time_survive_a_scheduler_crash_and_load_correct_partitions"
FIRST = dt.date(2013, 1, 1)


def through_scheduler(nights: int) -> dict:
    """Run the test with `nights` nights; its LOAD-TIMINGS line holds the figures."""
    env = {**os.environ, "DRIFTLINE_LOAD_NIGHTS": str(nights)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q",
         f"{TEST}::{NIGHT_TEST}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=3600, check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("LOAD-TIMINGS "):
            if done.returncode != 0:
                break
            return json.loads(line.removeprefix("LOAD-TIMINGS "))
    raise SystemExit(f"the load test failed (exit {done.returncode}):\n{done.stdout[-4000:]}")


def main() -> None:
    args = parse_args(__doc__)
    nights = 6 if args.quick else 30
    timings = through_scheduler(nights)
    with temp_dir("load", args.keep) as root:
        url = sqlite_url(root / "source.db")
        isolate(root / "home", url)
        settings = settings_for(root / "home")
        usecase = flights(settings)
        seed_source(usecase, url)
        from driftline.ingest import etl

        with timed() as alone:
            for day in days(FIRST, FIRST + dt.timedelta(days=nights - 1)):
                etl.run_day(usecase, settings, day, url)
    through = timings[f"{nights} nights"]
    table = Table(f"{nights} nights of flights_etl through the scheduler", args.quick)
    table.add("setup: driftline stack up (not in the figure)", timings["stack up"], "s")
    table.add(f"{nights} nights, scheduler killed and restarted", through, "s", alone.seconds)
    table.add("per night", through / nights, "s", alone.seconds / nights)
    table.note("value: unpause -> every night ended (2 at a time, 3 January rejected); "
               "baseline: etl.run_day of each day in one process, in order")
    table.finish(args)


if __name__ == "__main__":
    main()
