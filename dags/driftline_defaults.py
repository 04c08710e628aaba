"""House rules shared by every driftline DAG: an owner, retries with back-off, a timeout, an
alert when a task fails for good; and the nightly DAGs' shared calendar and deadline."""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference
from airflow.timetables.interval import CronDataIntervalTimetable

from driftline.operator.alerts import on_night_deadline_missed, on_task_failure


def default_args(execution_timeout: dt.timedelta) -> dict:
    return {
        "owner": "driftline",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "execution_timeout": execution_timeout,
        # after the last try only (a retry calls on_retry_callback: no alert); a task that
        # refused a batch sends the quarantine alert here, with its failed expectations
        "on_failure_callback": on_task_failure,
    }


def night_deadline(usecase) -> DeadlineAlert | None:
    """The use-case's night_deadline_hours as an Airflow Deadline Alert: a run still not
    finished that long after it was queued gets one alert, sent from the triggerer. Counted
    from queued_at, not the logical date: a catch-up of past nights is not late by design."""
    hours = usecase.night_deadline_hours
    if hours is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(hours=hours),
        callback=AsyncCallback(on_night_deadline_missed, kwargs={"hours": hours}),
        name="night_deadline",
    )


def nightly(usecase) -> tuple[CronDataIntervalTimetable, pendulum.DateTime, pendulum.DateTime]:
    """Schedule, start and end of a nightly DAG: one run per day of the use-case's time zone,
    whose data interval is that day (a plain cron schedule would give empty intervals)."""

    def midnight(day: dt.date | None):  # as pendulum's: the DAG's timezone is the use-case's
        return pendulum.instance(usecase.day_start(day)) if day else None

    timetable = CronDataIntervalTimetable("0 0 * * *", timezone=usecase.timezone)
    return timetable, midnight(usecase.start_date), midnight(usecase.end_date)


def with_links(task_output, *extra_links) -> None:
    """Give a TaskFlow task the plugin's extra links (its buttons in the task's UI view)."""
    task_output.operator.operator_extra_links = tuple(extra_links)
