"""Locks across processes and machines, held in the database driftline already uses.

Promotion (read the champion, decide, move the aliases) must happen one at a time per
registered model, whether the training DAG's gate, `driftline train`, a rollback or a replay
does it, and on whichever Celery worker. MLflow has no compare-and-set on aliases, and a
file lock holds only on one machine, so the lock lives in the drift history's database:
- PostgreSQL (production): a session advisory lock, `pg_try_advisory_lock` polled until it is
  free (no row, no table; released when the session ends, even if the process dies);
- SQLite (the embedded default, one machine by nature): a write transaction (BEGIN
  IMMEDIATE) on a lock file beside the history database, so the history itself stays
  writable while a promotion runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

WAIT_SECONDS = 900.0  # longer than any gate takes; then the task fails and retries
POLL_SECONDS = 0.5


class LockTimeout(TimeoutError):
    """The lock stayed taken for longer than the wait; the message names it."""


def _key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def sqlite_lock_file(url: sa.engine.URL) -> Path:
    database = Path(url.database or "driftline.db")
    return database.with_name(f"{database.stem}.locks.db")


@contextmanager
def held(url: str, name: str, wait_seconds: float = WAIT_SECONDS) -> Iterator[None]:
    """Hold the lock `name` in the database at `url` for the body of the `with`."""
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        with _postgres(parsed, name, wait_seconds):
            yield
    elif backend == "sqlite":
        with _sqlite(parsed, name, wait_seconds):
            yield
    else:
        raise ValueError(f"no lock for a {backend} database ({name}): use PostgreSQL or SQLite")


@contextmanager
def _postgres(url: sa.engine.URL, name: str, wait_seconds: float) -> Iterator[None]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            deadline = time.monotonic() + wait_seconds
            take = sa.text("SELECT pg_try_advisory_lock(:key)")
            while not conn.execute(take, {"key": _key(name)}).scalar_one():
                conn.rollback()
                if time.monotonic() > deadline:
                    raise LockTimeout(f"{name}: still held by another process after "
                                      f"{wait_seconds:.0f} s")
                time.sleep(POLL_SECONDS)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _key(name)})
                conn.commit()
    finally:
        engine.dispose()


@contextmanager
def _sqlite(url: sa.engine.URL, name: str, wait_seconds: float) -> Iterator[None]:
    import sqlite3

    path = sqlite_lock_file(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=wait_seconds, isolation_level=None)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, since REAL)")
        try:
            conn.execute("BEGIN IMMEDIATE")  # waits up to `timeout` for another holder
        except sqlite3.OperationalError as exc:
            raise LockTimeout(f"{name}: still held by another process after "
                              f"{wait_seconds:.0f} s ({path})") from exc
        conn.execute("INSERT OR REPLACE INTO locks VALUES (?, ?)", (name, time.time()))
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()
