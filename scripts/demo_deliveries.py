"""A generated source table to try `driftline new-usecase` on: parcel deliveries.

A few hundred deliveries a day (seeded): a text key, a naive-UTC order time, a region, an
express flag, numbers with some nulls, a free-text column, and the outcome, the delay in
minutes (null for a cancelled delivery), which depends on distance, region and express.

    .venv/bin/python scripts/demo_deliveries.py [--first 2024-03-01 --days 10] [--db URL]

writes the table `deliveries` to the URL (default: the SQLite file the use-case `deliveries`
reads when $DRIFTLINE_DELIVERIES_SOURCE_URL is unset: $DRIFTLINE_HOME/source/deliveries.db).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

TABLE = "deliveries"


def deliveries(first: dt.date, days: int, seed: int = 7) -> pd.DataFrame:
    """The table's rows of `days` days from `first` (the same rows for the same arguments)."""
    rng = np.random.default_rng(seed)
    frames = []
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        n = int(rng.integers(250, 350))
        seconds = np.sort(rng.integers(0, 86_400, n))
        region = rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1])
        express = rng.random(n) < 0.3
        distance = rng.integers(1, 120, n)
        weight = np.round(rng.gamma(2.0, 3.0, n), 2)
        delay = (
            distance * 0.4
            + np.where(region == "west", 25, 0)
            - np.where(express, 20, 0)
            + rng.normal(0, 12, n)
        ).round(1)
        frames.append(
            pd.DataFrame(
                {
                    "delivery_id": [f"D{day:%m%d}-{i:04d}" for i in range(n)],
                    "ordered_at": pd.Timestamp(day) + pd.to_timedelta(seconds, unit="s"),
                    "region": region,
                    "express": express,
                    "distance_km": distance,
                    "weight_kg": np.where(rng.random(n) < 0.05, np.nan, weight),
                    "customer": [f"customer {int(c)}" for c in rng.integers(0, 100_000, n)],
                    "delay_min": np.where(rng.random(n) < 0.03, np.nan, delay),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def write(frame: pd.DataFrame, url: str) -> None:
    """Replace the table at `url` (a SQLite file's folder is made)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    try:
        frame.to_sql(TABLE, engine, index=False, if_exists="replace")
    finally:
        engine.dispose()


def main() -> None:
    from driftline.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=dt.date.fromisoformat, default=dt.date(2024, 3, 1))
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--db", help="SQLAlchemy URL (default: the use-case's SQLite file)")
    args = parser.parse_args()
    url = args.db or Settings.from_env().default_source_url(TABLE)
    frame = deliveries(args.first, args.days)
    write(frame, url)
    print(f"{len(frame):,} rows of {TABLE} ({args.first}, {args.days} days) -> {url}")  # noqa: T201


if __name__ == "__main__":
    main()
