"""Measure Evidently drift over 2013 to choose the monitoring defaults.

See docs/notes/drift-defaults.md for the figures and the choice.

For every night D in --start..--end, and for a current window of 1 and of 7 days ending on D:
- stale: against a sample of January (what the January champion was trained on);
- fresh: against a sample of the 31 days that end 7 days before D (what a model retrained that
  night would have been trained on, its 7-day holdout being the days up to D).
Features only (the prediction needs a model per night). Writes one CSV row per night, window and
reference. Needs the curated store of the year:
`driftline etl --start 2013-01-01 --end 2013-12-31`.

    python scripts/measure_drift.py --out /tmp/drift-2013.csv
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging

import numpy as np
import pandas as pd

from driftline.config import Settings, load_usecase
from driftline.ingest import etl
from driftline.monitoring import drift_report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2013, 2, 1))
    parser.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2013, 12, 31))
    parser.add_argument("--windows", default="1,7")
    parser.add_argument("--step", type=int, default=1, help="Measure every STEP-th night.")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    settings = Settings.from_env()
    usecase = load_usecase("flights", settings)
    sample = usecase.monitoring.reference
    year = etl.read_curated(usecase, settings, dt.date(2013, 1, 1), dt.date(2013, 12, 31))
    year["day"] = pd.to_datetime(year[usecase.event_time]).dt.tz_convert(usecase.timezone).dt.date
    # no model here: a prediction column of one distribution on both sides, left out below
    year["prediction"] = np.random.default_rng(0).uniform(size=len(year))

    def days(first: dt.date, last: dt.date) -> pd.DataFrame:
        return year[(year["day"] >= first) & (year["day"] <= last)]

    def reference(first: dt.date, last: dt.date) -> pd.DataFrame:
        rows = days(first, last)
        return rows.sample(n=min(sample.rows, len(rows)), random_state=sample.seed)

    stale = reference(dt.date(2013, 1, 1), dt.date(2013, 1, 31))
    rows = []
    night = args.start
    while night <= args.end:
        fresh = reference(night - dt.timedelta(days=37), night - dt.timedelta(days=7))
        for window in (int(w) for w in args.windows.split(",")):
            current = days(night - dt.timedelta(days=window - 1), night)
            for kind, ref in (("stale", stale), ("fresh", fresh)):
                snapshot = drift_report.drift_report(
                    ref, current, usecase, usecase.monitoring.tests, dt.datetime(2013, 1, 1)
                )
                figures = drift_report.summarize(snapshot.dict(), None)
                drifted = [c for c in figures.drifted_columns if c != "prediction"]
                judged = len(figures.column_scores) - 1
                rows.append(
                    {
                        "night": night.isoformat(),
                        "window": window,
                        "reference": kind,
                        "drift_share": len(drifted) / judged,
                        "drifted": json.dumps(drifted),
                        "scores": json.dumps(figures.column_scores),
                    }
                )
        print(night, rows[-1]["drift_share"], flush=True)  # noqa: T201 (progress)
        night += dt.timedelta(days=args.step)
    pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
