"""The promotion lock holds across processes, in SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

from driftline import locks

HOLDER = (
    "import sys, time; from pathlib import Path; from driftline import locks\n"
    "with locks.held(sys.argv[1], sys.argv[2]):\n"
    "    print('locked', flush=True); time.sleep(3)\n"
    "    Path(sys.argv[3]).write_text(str(time.time()))\n"
)


def _postgres_url() -> str:
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    try:
        sa.create_engine(url).connect().close()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is down ({exc}); .ci/run starts it")
    return url
TRY_FOR_1_S = (
    "import sys; from driftline import locks\n"
    "with locks.held(sys.argv[1], sys.argv[2], wait_seconds=1): pass\n"
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_second_process_waits_for_the_promotion_lock(backend, tmp_path):
    url = f"sqlite:///{tmp_path / 'monitoring.db'}" if backend == "sqlite" else _postgres_url()
    name = f"driftline.promotion.test-{uuid.uuid4().hex}"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, name, str(tmp_path / "released")],
        stdout=subprocess.PIPE, text=True,
    )
    assert first.stdout.readline().strip() == "locked"
    began = time.time()
    with locks.held(url, name):
        acquired = time.time()
    first.wait(timeout=30)
    first.stdout.close()
    assert acquired >= float((tmp_path / "released").read_text()), "taken while held"
    assert acquired - began > 1
    with locks.held(url, name):  # a holder that does not let go: the other one gives up
        tried = subprocess.run(
            [sys.executable, "-c", TRY_FOR_1_S, url, name], capture_output=True, text=True
        )
    assert tried.returncode != 0 and "LockTimeout" in tried.stderr and name in tried.stderr
