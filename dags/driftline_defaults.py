"""House rules shared by every driftline DAG: an owner, retries with back-off, a timeout."""

from __future__ import annotations

import datetime as dt


def default_args(execution_timeout: dt.timedelta) -> dict:
    return {
        "owner": "driftline",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "execution_timeout": execution_timeout,
    }
