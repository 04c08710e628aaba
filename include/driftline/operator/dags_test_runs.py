"""Give the runs of `airflow dags test` their real start time (apache/airflow#66127).

`airflow dags test DAG DATE` records the run's start as its logical date, so a demo night
of 2013 shows a duration of thousands of days in the DAG list. `make demo` calls this after
its test runs: a test run that started "at" its logical date gets the start of its first
task instead. Runs the scheduler made are never touched.
"""

from __future__ import annotations

import sys


def correct_start_dates() -> list[str]:
    """Fix the start of every `dags test` run recorded as starting at its logical date;
    returns "dag_id/run_id" of the runs corrected. Needs Airflow's metadata DB (the CLI's
    environment), so it runs as a command, never inside a task."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import func, select

    corrected = []
    with create_session() as session:
        runs = session.scalars(
            select(DagRun).where(
                DagRun.triggered_by == DagRunTriggeredByType.TEST,
                DagRun.start_date == DagRun.logical_date,
            )
        ).all()
        for run in runs:
            first_task = session.scalar(
                select(func.min(TaskInstance.start_date)).where(
                    TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id
                )
            )
            if first_task is not None and first_task > run.start_date:
                run.start_date = first_task
                corrected.append(f"{run.dag_id}/{run.run_id}")
    return corrected


def main() -> None:
    """`python -m driftline.operator.dags_test_runs`."""
    corrected = correct_start_dates()
    sys.stdout.write(f"start time corrected on {len(corrected)} `airflow dags test` run(s)\n")


if __name__ == "__main__":
    main()
