"""A load killed mid-write (SIGKILL, as the OOM killer or a lost worker does it to the task
process) leaves the old partition, never a partial one; the next run loads the new one."""

from __future__ import annotations

import datetime as dt
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd

from driftline.ingest import etl
from tests.conftest import REPO, corrupt, sqlite_url

DAY = dt.date(2013, 1, 1)

# The task process: the real run_day, whose Parquet write stops halfway through its file and
# hangs there, so that the parent can kill it at that exact point.
KILLED_MID_WRITE = textwrap.dedent(
    """
    import datetime as dt, sys, time
    from pathlib import Path
    from driftline.ingest import etl
    from driftline import storage
    from driftline.config import Settings, load_usecase

    ready, url = Path(sys.argv[1]), sys.argv[2]
    write_table = storage.pq.write_table

    def half_then_hang(table, where, **kwargs):
        write_table(table, where, **kwargs)
        if not isinstance(where, (str, Path)):  # in memory: the batch's hash, not the load
            return
        whole = Path(where).read_bytes()
        Path(where).write_bytes(whole[: len(whole) // 2])
        ready.write_text(str(where))
        time.sleep(600)

    storage.pq.write_table = half_then_hang
    settings = Settings.from_env()
    etl.run_day(load_usecase("flights", settings), settings, dt.date(2013, 1, 1), url)
    """
)


def kill_mid_write(settings, url: str, tmp_path: Path) -> Path:
    """Run the day's ETL in a child process, SIGKILL it halfway through writing the partition;
    the path of the half-written temporary file."""
    ready = tmp_path / "mid-write"
    env = {**os.environ, "DRIFTLINE_HOME": str(settings.home)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_WRITE, str(ready), url],
        env=env,
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():
            assert child.poll() is None, f"the ETL ended before its write: {child.stderr.read()}"
            assert time.monotonic() < deadline, "the ETL never reached its write"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    return Path(ready.read_text())


def test_a_load_killed_mid_write_leaves_the_old_partition_and_the_next_run_succeeds(
    usecase, settings, source_copy, tmp_path
):
    url = sqlite_url(source_copy)
    old = etl.run_day(usecase, settings, DAY, url)
    old_bytes = old.path.read_bytes()
    # the source changes (a late correction), so the new partition differs from the old
    corrupt(source_copy, usecase, DAY,
            "UPDATE flights SET arr_delay = arr_delay + 30 "
            "WHERE time_hour >= :start AND time_hour < :end AND arr_delay IS NOT NULL")

    half_written = kill_mid_write(settings, url, tmp_path)

    assert half_written.parent == old.path.parent and half_written.name.startswith(".")
    assert 0 < half_written.stat().st_size  # the killed write really was under way
    assert old.path.read_bytes() == old_bytes  # readers still see the whole old partition
    visible = [p for p in old.path.parent.iterdir() if not p.name.startswith(".")]
    assert visible == [old.path]
    # a dataset read of the folder skips the hidden leftover, as every reader of the store does
    assert len(pd.read_parquet(old.path.parent)) == old.rows
    assert etl.list_partitions(usecase, settings) == [(DAY, old.path, old.rows)]

    new = etl.run_day(usecase, settings, DAY, url)
    assert new.path == old.path and new.rows == old.rows
    before, after = pd.read_parquet(io.BytesIO(old_bytes)), pd.read_parquet(new.path)
    pd.testing.assert_series_equal(after["arr_delay"], before["arr_delay"] + 30)
