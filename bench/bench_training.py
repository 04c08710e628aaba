"""XGBoost training: driftline.training.model.fit on the year and on a 10x year; and threads.

Platform: driftline.training.model.fit (what the DVC `train` stage runs) with params.yaml's `train`
section (hist on CPU, native categorical splits, 300 rounds, nthread from params.yaml) on
the labelled rows of the curated year (built by driftline.ingest.etl.transform over the seed
tables), then on a 10x year (every flight 10 times with new flight ids and a small time
jitter; see bench/common.py scale_flights). The fit is broken down into the category
vocabulary, the encoding (driftline.training.model.encode) and xgboost.train.

Baselines, same run: the 1x year's fit (ratio 10x / 1x: linear growth is 10x), and the 1x
fit with nthread=1 against nthread=2 (the speed-up the second core buys).
"""

from __future__ import annotations

import datetime as dt
import logging
import os

from bench.common import (
    YEAR,
    Table,
    curated_frame,
    feature_schema,
    flights,
    parse_args,
    peak_rss_mb,
    settings_for,
    stage_timers,
    temp_dir,
    timed,
    train_params,
)

QUICK = (dt.date(2013, 1, 1), dt.date(2013, 1, 3))
FACTOR = 10


def timed_fit(frame, usecase, params: dict) -> dict:
    import xgboost

    from driftline.training import model

    targets = {
        "vocabulary": (model, "vocabulary_of"),
        "encode": (model, "encode"),
        "xgboost.train": (xgboost, "train"),
    }
    with stage_timers(targets) as stages, timed() as total:
        fitted = model.fit(frame, feature_schema(usecase), params)
    labelled = int(frame[usecase.label.name].notna().sum())
    return {"seconds": total.seconds, "rows": labelled, "stages": stages, "model": fitted}


def warm_up(frame, usecase, params: dict) -> None:
    """A tiny untimed fit first: loading xgboost's library and its OpenMP pool is not
    training (it would land on whichever fit runs first)."""
    from driftline.training.model import fit

    fit(frame.head(500), feature_schema(usecase), {**params, "num_boost_round": 2})


def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.ERROR)
    first, last = QUICK if args.quick else YEAR
    params = train_params()
    threads = int(params.get("nthread", 0)) or os.cpu_count()
    with temp_dir("training", args.keep) as root:
        usecase = flights(settings_for(root / "home"))
        with timed() as build_1x:
            year = curated_frame(usecase, first, last)
        warm_up(year, usecase, params)
        one = timed_fit(year, usecase, params)
        single = timed_fit(year, usecase, {**params, "nthread": 1})
        del year
        with timed() as build_10x:
            big = curated_frame(usecase, first, last, factor=FACTOR)
        ten = timed_fit(big, usecase, params)
        del big

    span = f"{first}..{last}"
    table = Table(f"bench_training: model.fit on {span} and on {FACTOR}x", args.quick)
    table.add("labelled rows: 10x vs 1x", ten["rows"], "rows", one["rows"])
    table.add(f"fit, nthread={threads}: 10x vs 1x", ten["seconds"], "s", one["seconds"])
    for stage in ten["stages"]:
        table.add(f"  {stage}: 10x vs 1x", ten["stages"][stage], "s", one["stages"][stage])
    table.add(
        "fit throughput: 10x vs 1x",
        ten["rows"] / ten["seconds"],
        "rows/s",
        one["rows"] / one["seconds"],
    )
    table.add("fit on 1x: nthread=1 vs nthread=2", single["seconds"], "s", one["seconds"])
    table.add("threads used (params.yaml train.nthread)", threads)
    table.add("os.cpu_count()", os.cpu_count())
    table.add("boosting rounds (params.yaml)", int(params["num_boost_round"]))
    table.add("curated frame built: 10x vs 1x (setup)", build_10x.seconds, "s", build_1x.seconds)
    table.add("peak RSS of this process", peak_rss_mb(), "MiB")
    table.note(
        "ratio of 'fit 10x vs 1x' near 10 = linear; 'nthread=1 vs 2' is the speed-up of "
        "the second core (2.0 = perfect), on a machine shared with other work."
    )
    table.finish(args)


if __name__ == "__main__":
    main()
