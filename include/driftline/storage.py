"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every write goes to a temporary file in the target's own folder (same filesystem), is flushed
to disk, then renamed over the target with os.replace, which POSIX makes atomic.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"driftline"


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; readers expect open()'s mode
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(data: Any, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return target


def write_text(text: str, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return target


def write_parquet(
    frame: pd.DataFrame, target: Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write `frame` (without its index) with optional driftline metadata in the footer.

    No timestamps go into the file, so the same rows give byte-identical files on a rerun.
    """
    table = to_arrow(frame)
    if metadata is not None:
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[METADATA_KEY] = json.dumps(metadata, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(schema_meta)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    return target


def parquet_sha256(frame: pd.DataFrame) -> str:
    """SHA-256 of the file `write_parquet(frame, path)` writes (without metadata)."""
    buffer = io.BytesIO()
    pq.write_table(to_arrow(frame), buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of `frame`; object columns of mixed types are written as their text.

    Such columns only occur in bad batches (e.g. a number column holding a word); keeping
    the text preserves what arrived for the quarantine, and the column stays `object` typed
    in pandas so the expectation suite still reports it. Text mixed with bytes counts as mixed:
    Arrow would store the whole column as bytes, and every text value would come back as bytes.
    """
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if not any(
            pa.types.is_binary(field.type) and _holds_text(frame[field.name])
            for field in table.schema
        ):
            return table
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    mixed = {
        column: frame[column].map(lambda v: v if v is None or pd.isna(v) else str(v))
        for column in frame.columns
        if frame[column].dtype == object
    }
    return pa.Table.from_pandas(frame.assign(**mixed), preserve_index=False)


def _holds_text(column: pd.Series) -> bool:
    return bool(column.map(lambda v: isinstance(v, str)).any())


def read_parquet_metadata(path: Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}
