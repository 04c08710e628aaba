"""Load a use-case's source tables into a SQL database (a stand-in for the operational DB).

Each table is replaced inside one transaction, so a second seed leaves the same row counts
and a failed seed leaves the previous tables in place.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from driftline.config import UseCase, import_object
from driftline.etl import masked_url

log = logging.getLogger(__name__)


def seed(usecase: UseCase, url: str) -> dict[str, int]:
    """Write the use-case's source tables to `url`; returns the row count of each table."""
    if usecase.source.seed is None:
        raise ValueError(f"use-case {usecase.name!r} has no source.seed loader")
    tables: dict[str, pd.DataFrame] = import_object(usecase.source.seed)()
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
