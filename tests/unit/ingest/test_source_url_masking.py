"""A password in the source database URL never reaches a log, an error or a task's return value.

The source URL comes from $DRIFTLINE_FLIGHTS_SOURCE_URL, not from an Airflow connection, so
Airflow's secrets masker does not know it: driftline must mask it itself (etl.masked_url).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import traceback

import pytest
import sqlalchemy as sa

from driftline.ingest import etl

JAN1 = dt.date(2013, 1, 1)
DUMMY = "pw-1234"  # a stand-in password for the URL-shape cases
ESCAPED = "%40%3A%2F"  # "@:/" inside a password, URL-encoded


def _password() -> str:
    return "pw" + secrets.token_hex(8)  # fresh each run: nothing else can contain it by chance


def _urls(password: str, host: str) -> dict[str, tuple[str, str]]:
    """How a password can sit in a URL -> (url, what the masked form shows)."""
    return {
        "userinfo": (
            f"postgresql://flights:{password}@{host}/flights",
            f"postgresql://flights:***@{host}/flights",
        ),
        "query": (
            f"postgresql://flights@{host}/flights?password={password}&sslmode=prefer",
            f"postgresql://flights@{host}/flights?password=***&sslmode=prefer",
        ),
        "driver and special characters": (
            f"postgresql+psycopg2://flights:{password}{ESCAPED}@{host}/flights",
            f"postgresql+psycopg2://flights:***@{host}/flights",
        ),
    }


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        if record.exc_info:
            lines.extend(traceback.format_exception(*record.exc_info))
    return "\n".join(lines)


@pytest.mark.parametrize("form", ["userinfo", "query", "driver and special characters"])
def test_masked_url_hides_the_password_wherever_it_is(form):
    password = _password()
    url, shown = _urls(password, "db.internal:5432")[form]
    assert etl.masked_url(url) == shown
    assert password not in etl.masked_url(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "sqlite:////srv/driftline/source/flights.db",
            "sqlite:////srv/driftline/source/flights.db",
        ),
        ("http://mlflow:5000", "http://mlflow:5000"),
        (f"http://ops:{DUMMY}@mlflow:5000", "http://ops:***@mlflow:5000"),
        (f"postgresql://u:{DUMMY}@db:notaport/x", "postgresql://u:***@db:notaport/x"),  # no parse
        ("databricks", "databricks"),
    ],
)
def test_masked_url_keeps_what_is_not_secret(url, shown):
    assert etl.masked_url(url) == shown


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_an_unreachable_source_never_shows_its_password(usecase, settings, caplog, form):
    password = _password()
    url, shown = _urls(password, "127.0.0.1:1")[form]  # nothing listens on port 1
    caplog.set_level(logging.DEBUG)
    window = etl.BatchWindow.for_day(JAN1, usecase)

    with pytest.raises(etl.SourceUnavailableError) as raised:
        etl.extract(usecase, url, window)

    message = str(raised.value)
    assert shown in message
    # what a task log shows of a failure: the message and the whole chained traceback
    failure = "".join(traceback.format_exception(raised.value))
    assert "Connection refused" in failure or "could not be read" in failure
    assert password not in failure
    assert password not in _everything_logged(caplog)


@pytest.fixture
def tiny_source(tmp_path) -> sa.Engine:
    """A SQLite source with the four tables the flights queries read (one flight)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'tiny.db'}")
    with engine.begin() as conn:
        for statement in (
            "CREATE TABLE flights (origin TEXT, time_hour TIMESTAMP)",
            "CREATE TABLE weather (origin TEXT, time_hour TIMESTAMP)",
            "CREATE TABLE planes (tailnum TEXT)",
            "CREATE TABLE airports (faa TEXT)",
            "INSERT INTO flights VALUES ('JFK', '2013-01-01 12:00:00.000000')",
        ):
            conn.exec_driver_sql(statement)
    return engine


def test_the_extract_task_logs_and_returns_no_password(
    usecase, settings, caplog, monkeypatch, tiny_source
):
    """What the Airflow task `extract_flights` does: it reads the URL from the environment,
    logs what it extracted from where, and returns a dict that goes to XCom."""
    password = _password()
    url, shown = _urls(password, "db.internal:5432")["userinfo"]
    monkeypatch.setenv(usecase.source.url_env, url)
    # the tiny SQLite file stands in for the PostgreSQL server the URL names
    monkeypatch.setattr(etl, "source_engine", lambda _url, _zone="UTC": tiny_source)
    caplog.set_level(logging.DEBUG)

    returned = etl.extract_to_staging(
        usecase, settings, etl.BatchWindow.for_day(JAN1, usecase), "manual__1"
    )

    assert returned["rows"] == 1
    assert password not in json.dumps(returned, default=str)
    logged = _everything_logged(caplog)
    assert f"from {shown}" in logged
    assert password not in logged
