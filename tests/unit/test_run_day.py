"""The day a nightly run covers, and back: one pair of functions for the DAGs, the plugin, the
ETL, the Makefile and the tests, checked against Airflow's own daily timetable."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from driftline.config import UseCase, run_day

NEW_YORK = "America/New_York"


def in_zone(usecase: UseCase, timezone: str) -> UseCase:
    return UseCase.model_validate({**usecase.model_dump(), "timezone": timezone})


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("day", "start", "end"),
    [
        (dt.date(2013, 1, 1), "2013-01-01T05:00", "2013-01-02T05:00"),
        (dt.date(2013, 3, 10), "2013-03-10T05:00", "2013-03-11T04:00"),  # 23 hours: EST -> EDT
        (dt.date(2013, 7, 1), "2013-07-01T04:00", "2013-07-02T04:00"),
        (dt.date(2013, 11, 3), "2013-11-03T04:00", "2013-11-04T05:00"),  # 25 hours: EDT -> EST
    ],
)
def test_a_new_york_day_starts_at_its_local_midnight_across_dst(usecase, day, start, end):
    assert usecase.timezone == NEW_YORK
    assert usecase.day_start(day) == utc(start)
    assert usecase.day_start(day + dt.timedelta(days=1)) == utc(end)
    assert usecase.run_day(utc(start)) == day
    assert usecase.run_day(utc(end) - dt.timedelta(microseconds=1)) == day
    assert usecase.run_day(utc(end)) == day + dt.timedelta(days=1)
    assert usecase.day_bounds(day) == (utc(start), utc(end))


def test_the_day_start_is_local_so_that_a_dag_takes_the_use_cases_zone(usecase):
    start = usecase.day_start(dt.date(2013, 1, 1))
    assert start.isoformat() == "2013-01-01T00:00:00-05:00"  # the Makefile's logical dates
    assert str(pendulum.instance(start).tz) == NEW_YORK


def test_a_utc_use_case_runs_utc_days(usecase):
    in_utc = in_zone(usecase, "UTC")
    assert in_utc.day_start(dt.date(2013, 3, 10)) == utc("2013-03-10T00:00")
    assert in_utc.run_day(utc("2013-03-10T23:59:59")) == dt.date(2013, 3, 10)
    assert in_utc.run_day(utc("2013-03-11T00:00")) == dt.date(2013, 3, 11)
    # the same instant is another day in New York
    assert usecase.run_day(utc("2013-03-11T00:00")) == dt.date(2013, 3, 10)


def test_a_pendulum_instant_in_any_zone_gives_the_use_cases_day(usecase):
    """Airflow hands the task a pendulum DateTime in UTC; the plugin, one in any zone."""
    start = pendulum.datetime(2013, 11, 3, 4, tz="UTC")
    assert usecase.run_day(start) == dt.date(2013, 11, 3)
    assert run_day(start.in_timezone("Asia/Tokyo"), NEW_YORK) == dt.date(2013, 11, 3)
    assert type(usecase.run_day(start)) is dt.date  # not pendulum's Date: it goes into JSON


def test_a_naive_instant_is_refused_not_read_as_the_machines_zone(usecase):
    with pytest.raises(ValueError, match="no time zone"):
        usecase.run_day(dt.datetime(2013, 1, 1, 5))


@pytest.mark.parametrize("timezone", [NEW_YORK, "UTC", "Asia/Kolkata", "Australia/Lord_Howe"])
def test_each_day_of_a_year_is_one_run_of_airflows_daily_timetable(usecase, timezone):
    """The nightly DAGs' timetable (driftline_defaults.nightly): the run that `airflow dags
    test` starts at the local midnight after a day covers exactly that day."""
    from airflow.timetables.interval import CronDataIntervalTimetable

    zoned = in_zone(usecase, timezone)
    timetable = CronDataIntervalTimetable("0 0 * * *", timezone=timezone)
    day = dt.date(2013, 1, 1)
    while day.year == 2013:
        after = zoned.day_start(day + dt.timedelta(days=1))
        interval = timetable.infer_manual_data_interval(run_after=pendulum.instance(after))
        assert (interval.start, interval.end) == (zoned.day_start(day), after), day
        assert zoned.run_day(interval.start) == day
        day += dt.timedelta(days=1)


def test_changing_the_zone_of_a_copy_changes_its_days(usecase):
    """model_copy keeps a cached attribute: the zone is read from the field every time."""
    moved = usecase.model_copy(update={"timezone": "UTC"})
    assert moved.day_start(dt.date(2013, 1, 1)) == utc("2013-01-01T00:00")


def test_the_plugins_links_name_the_day_of_the_runs_interval(monkeypatch):
    """The Data Docs / report buttons of a task: the use-case's day, not UTC's."""
    from tests.conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    from driftline_ui import DataDocsLink

    class TaskInstance:
        def __init__(self, start):
            self.start = start

        def get_template_context(self):
            return {"data_interval_start": self.start}

    tokyo = DataDocsLink(usecase="flights", timezone="Asia/Tokyo")
    start = pendulum.datetime(2013, 3, 9, 15, tz="UTC")  # midnight in Tokyo
    assert tokyo.get_link(None, ti_key=TaskInstance(start)).endswith("/flights/2013-03-10")
    assert tokyo.get_link(None, ti_key=TaskInstance(None)) == ""
