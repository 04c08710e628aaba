"""House rules shared by every driftline DAG: an owner, retries with back-off, a timeout;
and the nightly DAGs' shared calendar."""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.timetables.interval import CronDataIntervalTimetable


def default_args(execution_timeout: dt.timedelta) -> dict:
    return {
        "owner": "driftline",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "execution_timeout": execution_timeout,
    }


def nightly(usecase) -> tuple[CronDataIntervalTimetable, pendulum.DateTime, pendulum.DateTime]:
    """Schedule, start and end of a nightly DAG: one run per day of the use-case's time zone,
    whose data interval is that day (a plain cron schedule would give empty intervals)."""

    def midnight(day: dt.date | None):
        return pendulum.datetime(day.year, day.month, day.day, tz=usecase.timezone) if day else None

    timetable = CronDataIntervalTimetable("0 0 * * *", timezone=usecase.timezone)
    return timetable, midnight(usecase.start_date), midnight(usecase.end_date)


def with_links(task_output, *extra_links) -> None:
    """Give a TaskFlow task the plugin's extra links (its buttons in the task's UI view)."""
    task_output.operator.operator_extra_links = tuple(extra_links)
