"""source.time_zone: a source whose naive times are Chicago wall times loads each day with
exactly its rows, daylight-saving days included, on SQLite (text times, as `seed` writes them).

The truth is each row's instant, known when the source is written; a day's rows are those
whose instant falls in it, whatever zone the day is in and whatever the text looks like.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from driftline.config import UseCase
from driftline.ingest import etl

CHICAGO = ZoneInfo("America/Chicago")
SPRING, FALL = dt.date(2021, 3, 14), dt.date(2021, 11, 7)  # Chicago: 23 and 25 hours
# A wall time the clocks skip: read as the moment they jump to (03:00 CDT)
SKIPPED = ("2021-03-14 02:30:00", dt.datetime(2021, 3, 14, 8, tzinfo=dt.UTC))


# the day's rows of each table the tests write (here SQLite's; PostgreSQL's: one per type)
QUERIES = {
    "events": "SELECT * FROM events WHERE at >= :start AND at < :end",
    "events_timestamp": "SELECT * FROM events_timestamp WHERE at >= :start AND at < :end",
    "events_timestamptz": "SELECT * FROM events_timestamptz WHERE at >= :start AND at < :end",
}


def usecase(day_zone: str, source_zone: str | None, table: str = "events") -> UseCase:
    source = {
        "url_env": "DRIFTLINE_TEST_EVENTS_URL",
        "batch_table": table,
        "time_column": "at",
        "queries": {table: QUERIES[table]},
    }
    if source_zone is not None:
        source["time_zone"] = source_zone
    return UseCase.model_validate({
        "name": "events",
        "timezone": day_zone,
        "start_date": "2021-01-01",
        "source": source,
        "key": "event_id",
        "event_time": "at",
        "label": {"name": "late", "rule": "delay > 1", "missing_when_null": "delay"},
        "features": {"numerical": ["size"]},
        "passthrough": ["delay"],
        "validation": {"suite": "events_batch"},
    })


def instants() -> list[dt.datetime]:
    """Every 20 minutes around both daylight-saving changes, as UTC instants."""
    found = []
    for first in (dt.datetime(2021, 3, 12), dt.datetime(2021, 11, 5)):
        start = first.replace(tzinfo=dt.UTC)
        found += [start + dt.timedelta(minutes=20 * n) for n in range(5 * 72)]
    return found


def wall_text(instant: dt.datetime, separator: str = " ") -> str:
    return instant.astimezone(CHICAGO).strftime(f"%Y-%m-%d{separator}%H:%M:%S")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[str, dict[int, dt.datetime]]:
    """The events: naive Chicago wall text, some with a 'T'; every 7th with its own offset
    instead (then in any zone); and one wall time that does not exist. Returns the URL and
    the instant each event_id was written for."""
    path = tmp_path_factory.mktemp("events") / "events.db"
    truth, rows = {}, []
    for event_id, instant in enumerate(instants()):
        if event_id % 7 == 0:
            zone = dt.timezone(dt.timedelta(hours=(event_id % 27) - 12))
            text = instant.astimezone(zone).isoformat()
        else:
            text = wall_text(instant, "T" if event_id % 5 == 0 else " ")
        rows.append((event_id, text, 1.0, 0.5))
        # a repeated wall time (01:xx on the fall day) means its first occurrence (CDT)
        local = dt.datetime.fromisoformat(text.replace("T", " "))
        truth[event_id] = (
            instant if local.tzinfo else local.replace(tzinfo=CHICAGO).astimezone(dt.UTC)
        )
    rows.append((10_000, SKIPPED[0], 1.0, 0.5))
    truth[10_000] = SKIPPED[1]
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (event_id INTEGER, at TEXT, size REAL, delay REAL)")
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    return f"sqlite:///{path}", truth


@pytest.mark.parametrize("day_zone", ["America/Chicago", "UTC", "Asia/Tokyo"])
@pytest.mark.parametrize(
    "day", [SPRING - dt.timedelta(days=1), SPRING, FALL, FALL + dt.timedelta(days=1)]
)
def test_a_day_of_a_chicago_source_loads_exactly_its_rows(source, day_zone, day):
    url, truth = source
    events = usecase(day_zone, "America/Chicago")
    window = etl.BatchWindow.for_day(day, events)
    expected = {i for i, instant in truth.items() if window.start <= instant < window.end}
    assert expected

    counts = etl.count_source(events, url, window)
    extracted = etl.extract(events, url, window)["events"]

    assert set(extracted["event_id"]) == expected
    assert counts.day_rows == len(expected) and counts.unplaced_rows == 0
    read = dict(zip(extracted["event_id"], extracted["at"], strict=True))
    assert {i: read[i].to_pydatetime() for i in expected} == {i: truth[i] for i in expected}


def test_the_queries_are_bound_with_the_days_wall_times_in_the_source_zone():
    window = etl.BatchWindow.for_day(FALL, usecase("America/Chicago", "America/Chicago"))
    assert window.query_params == {
        "start": dt.datetime(2021, 11, 7), "end": dt.datetime(2021, 11, 8)
    }
    assert window.end - window.start == dt.timedelta(hours=25)
    in_utc = etl.BatchWindow.for_day(FALL, usecase("America/Chicago", None))
    assert in_utc.query_params == {  # the default: the source writes naive UTC
        "start": dt.datetime(2021, 11, 7, 5), "end": dt.datetime(2021, 11, 8, 6)
    }


def test_naive_values_mean_utc_unless_the_source_says_otherwise():
    values = pd.Series(["2021-11-07 01:30:00", "2021-11-07T01:30:00-06:00", "2021-11-07", None])
    as_utc, unreadable = etl.parse_instants(values)
    assert list(as_utc[:3]) == [pd.Timestamp("2021-11-07 01:30", tz="UTC"),
                                pd.Timestamp("2021-11-07 07:30", tz="UTC"),
                                pd.Timestamp("2021-11-07 00:00", tz="UTC")]
    in_chicago, _ = etl.parse_instants(values, "America/Chicago")
    assert list(in_chicago[:3]) == [pd.Timestamp("2021-11-07 06:30", tz="UTC"),  # first 01:30
                                    pd.Timestamp("2021-11-07 07:30", tz="UTC"),  # as written
                                    pd.Timestamp("2021-11-07 05:00", tz="UTC")]  # midnight
    assert not unreadable.any()
    typed = pd.Series(pd.to_datetime(["2021-03-14 02:30", "2021-03-14 12:00"]))
    assert list(etl.parse_instants(typed, "America/Chicago")[0]) == [
        pd.Timestamp("2021-03-14 08:00", tz="UTC"), pd.Timestamp("2021-03-14 17:00", tz="UTC")
    ]


def test_an_unknown_source_zone_is_refused():
    with pytest.raises(ValueError, match="unknown time zone 'Chicago'"):
        usecase("UTC", "Chicago")
