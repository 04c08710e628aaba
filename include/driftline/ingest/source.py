"""Load a use-case's source tables into a SQL database (a stand-in for the operational DB).

Each table is replaced inside one transaction, so a second seed leaves the same row counts
and a failed seed leaves the previous tables in place.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from driftline.config import UseCase, import_object
from driftline.ingest.etl import BatchWindow, masked_url

log = logging.getLogger(__name__)


def seed(
    usecase: UseCase, url: str, first: dt.date | None = None, last: dt.date | None = None
) -> dict[str, int]:
    """Write the use-case's source tables to `url`; returns the row count of each table.

    With `first` (and `last`), the batch table holds only the rows of those days (each day as
    the nightly ETL bounds it); the other tables are whole. A test or a trial database then
    costs its days, not the year.
    """
    if usecase.source.seed is None:
        raise ValueError(f"use-case {usecase.name!r} has no source.seed loader")
    tables: dict[str, pd.DataFrame] = import_object(usecase.source.seed)()
    if first is not None:
        tables[usecase.source.batch_table] = _days(tables, usecase, first, last or first)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    if parsed.get_backend_name() == "sqlite":
        _transactional_ddl(engine)
    try:
        with engine.begin() as conn:
            for name, frame in tables.items():
                frame.to_sql(name, conn, if_exists="replace", index=False, chunksize=50_000)
                _create_index(conn, name, usecase.source.indexes.get(name))
        with engine.connect() as conn:
            counts = {name: _count(conn, name) for name in tables}
    finally:
        engine.dispose()
    log.info("seeded %s: %s", masked_url(url), counts)
    return counts


def _days(
    tables: dict[str, pd.DataFrame], usecase: UseCase, first: dt.date, last: dt.date
) -> pd.DataFrame:
    if last < first:
        raise ValueError(f"the last day to seed ({last}) is before the first ({first})")
    start = BatchWindow.for_day(first, usecase).query_params["start"]
    end = BatchWindow.for_day(last, usecase).query_params["end"]
    frame = tables[usecase.source.batch_table]
    when = pd.to_datetime(frame[usecase.source.time_column])
    return frame[(when >= start) & (when < end)].reset_index(drop=True)


def _transactional_ddl(engine: sa.Engine) -> None:
    """pysqlite commits before DDL on its own; take over BEGIN so DROP/CREATE roll back too
    (SQLAlchemy's documented recipe for SQLite)."""

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN")


def _create_index(conn: sa.Connection, table_name: str, columns: list[str] | None) -> None:
    if not columns:
        return
    table = sa.Table(table_name, sa.MetaData(), autoload_with=conn)
    sa.Index(f"ix_{table_name}_{'_'.join(columns)}", *(table.c[c] for c in columns)).create(conn)


def _count(conn: sa.Connection, table_name: str) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table_name))).scalar_one()
