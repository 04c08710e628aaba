"""Scale: the year against a 10x year, end to end: time and peak memory of each phase.

A 10x year resamples the flights with jitter: each flight 10 times, with new flight numbers
(so new unique flight ids) and its scheduled minute and delays moved by a few minutes
(bench/common.py scale_flights); weather, planes and airports stay as they are. The 10x
use-case differs from usecases/flights.yaml only in the suite's daily row-count bounds
(min_rows, max_rows times 10); everything else is the shipped config and code.

For each size, each phase runs in a fresh process that reports its own time and peak RSS:
  seed   driftline.ingest.source.seed of the source tables into SQLite;
  etl    driftline.ingest.etl.run_day for every day (the `driftline etl` path);
  train  driftline.ingest.etl.read_curated of the whole range (what a training snapshot reads; a
         year window at most) + driftline.training.model.fit with params.yaml's `train` section;
  drift  one night's driftline.monitoring.drift_report.drift_report with the shipped monitoring
  config
         (reference: 20,000 sampled labelled rows of January with the model's predictions;
         current: the trailing 7 days of the last day).
Baseline: the 1x year, same run. Time should grow about 10x (linearly); the ETL's memory
should stay flat (one day at a time) while the training read grows with the year.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path

from bench.common import (
    YEAR,
    Table,
    bench_env,
    days,
    emit,
    feature_schema,
    flights,
    isolate,
    parse_args,
    peak_rss_mb,
    run_child,
    scaled_usecases_dir,
    seed_source,
    settings_for,
    sqlite_url,
    temp_dir,
    timed,
    train_params,
)

QUICK = (dt.date(2013, 1, 1), dt.date(2013, 1, 3))
FACTORS = (1, 10)
PHASES = ("seed", "etl", "train", "drift")
MODEL_DIR = "bench-model"


def extra_arguments(parser) -> None:
    parser.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--factor", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=dt.date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--last", type=dt.date.fromisoformat, help=argparse.SUPPRESS)


# --- one phase of one size, in its own process -----------------------------------------------


def child(phase: str, factor: int, root: Path, first: dt.date, last: dt.date) -> None:
    home, url = root / "home", sqlite_url(root / "source" / "flights.db")
    isolate(home, url)
    usecases = scaled_usecases_dir(root / "usecases", factor) if factor > 1 else None
    settings = settings_for(home, usecases)
    usecase = flights(settings)
    result = {}
    if phase == "seed":
        counts, seconds = seed_source(usecase, url, factor, first, last)
        result = {"seconds": seconds, "rows": counts[usecase.source.batch_table]}
    elif phase == "etl":
        from driftline.ingest import etl
        from driftline.ingest.validation import _import_gx

        _import_gx()  # once per process: not a cost of the size
        rows = 0
        with timed() as run:
            for day in days(first, last):
                rows += etl.run_day(usecase, settings, day, url).rows
        store = sum(p.stat().st_size for p in settings.curated_dir(usecase.name).rglob("*"))
        result = {"seconds": run.seconds, "rows": rows, "store_mib": store / 2**20}
    elif phase == "train":
        result = train_phase(usecase, settings, home, first, last)
    elif phase == "drift":
        result = drift_phase(usecase, settings, home, first, last)
    emit({**result, "peak_rss_mib": peak_rss_mb()})


def train_phase(usecase, settings, home: Path, first: dt.date, last: dt.date) -> dict:
    from driftline.ingest import etl
    from driftline.training.model import fit

    try:
        with timed() as read:
            rows = etl.read_curated(usecase, settings, first, last)
    except MemoryError:
        return {"error": "MemoryError in the curated read of the whole range"}
    read_rss = peak_rss_mb()
    schema, params = feature_schema(usecase), train_params()
    fit(rows.head(500), schema, {**params, "num_boost_round": 2})  # load xgboost: untimed
    with timed() as training:
        model = fit(rows, schema, params)
    model.save(home / MODEL_DIR)
    return {
        "read_seconds": read.seconds,
        "seconds": training.seconds,
        "rows": int(rows[usecase.label.name].notna().sum()),
        "read_rss_mib": read_rss,
    }


def drift_phase(usecase, settings, home: Path, first: dt.date, last: dt.date) -> dict:
    from driftline.config import PREDICTION
    from driftline.ingest import etl
    from driftline.monitoring import drift_report
    from driftline.training.model import TrainedModel

    model = TrainedModel.load(home / MODEL_DIR)
    label = usecase.label.name
    # the reference a January champion carries (driftline.training.stages.reference_rows)
    window = etl.read_curated(usecase, settings, first, min(last, dt.date(2013, 1, 31)))
    train = window[window[label].notna()].sort_values(usecase.key, kind="stable")
    train = train.reset_index(drop=True)
    wanted = usecase.monitoring.reference
    sample = train.sample(n=min(wanted.rows, len(train)), random_state=wanted.seed).sort_index()
    sample = sample[[usecase.key, usecase.event_time, *usecase.features.all, label]]
    reference = sample.assign(**{PREDICTION: model.predict_proba(sample)})
    del window, train
    import evidently.presets  # noqa: F401  (once per process: not a cost of the size)

    with timed() as report:
        start = last - dt.timedelta(days=usecase.monitoring.current_days - 1)
        current = etl.read_curated(usecase, settings, start, last)
        current = current.assign(**{PREDICTION: model.predict_proba(current)})
        stamp = dt.datetime.combine(last, dt.time(23, 59), tzinfo=usecase.tz)
        snapshot = drift_report.drift_report(
            reference, current, usecase, usecase.monitoring.tests, stamp
        )
        figures = drift_report.summarize(snapshot.dict(), None)
    return {
        "seconds": report.seconds,
        "rows": len(current),
        "reference_rows": len(reference),
        "drift_share": figures.drift_share,
    }


# --- the parent ---------------------------------------------------------------------------


def run_size(factor: int, root: Path, first: dt.date, last: dt.date) -> dict:
    env = bench_env(root / "home", sqlite_url(root / "source" / "flights.db"))
    results = {}
    for phase in PHASES:
        if phase == "drift" and "error" in results.get("train", {"error": ""}):
            results[phase] = {"error": "skipped: no model (training failed)"}
            continue
        argv = ["-m", "bench.bench_scale", "--child", phase, "--factor", str(factor)]
        argv += ["--root", str(root), "--first", first.isoformat(), "--last", last.isoformat()]
        run = run_child(argv, env)
        problem = run.failed()
        if problem:
            results[phase] = {"error": problem, "wall": run.seconds}
            if phase in ("seed", "etl"):
                raise SystemExit(f"{factor}x {phase} failed: {problem}")
        else:
            results[phase] = {**run.result, "wall": run.seconds}
    return results


def main() -> None:
    args = parse_args(__doc__, extra_arguments)
    logging.basicConfig(level=logging.ERROR)
    if args.child:
        return child(args.child, args.factor, args.root, args.first, args.last)
    first, last = QUICK if args.quick else YEAR
    with temp_dir("scale", args.keep) as root:
        sizes = {f: run_size(f, root / f"x{f}", first, last) for f in FACTORS}

    one, ten = sizes[1], sizes[10]
    table = Table(f"bench_scale: {first}..{last} at 1x and 10x (ratio = 10x / 1x)", args.quick)

    def add(figure: str, phase: str, key: str, unit: str) -> None:
        big, small = ten[phase].get(key), one[phase].get(key)
        if big is None or small is None:
            error = ten[phase].get("error") or one[phase].get("error")
            table.add(f"{figure}: 10x vs 1x", f"FAILED ({error[:60]})")
            table.note(f"{phase}: {error}")
            return
        table.add(f"{figure}: 10x vs 1x", big, unit, small)

    add("flights seeded", "seed", "rows", "rows")
    add("seed time", "seed", "seconds", "s")
    add("ETL time (run_day per day)", "etl", "seconds", "s")
    add("ETL rows loaded", "etl", "rows", "rows")
    add("curated store on disk", "etl", "store_mib", "MiB")
    add("training: read_curated of the range", "train", "read_seconds", "s")
    add("training: model.fit", "train", "seconds", "s")
    add("drift report (read + score + report)", "drift", "seconds", "s")
    add("  current rows", "drift", "rows", "rows")
    add("peak RSS: seed process", "seed", "peak_rss_mib", "MiB")
    add("peak RSS: ETL process", "etl", "peak_rss_mib", "MiB")
    add("peak RSS: after the curated read", "train", "read_rss_mib", "MiB")
    add("peak RSS: training process", "train", "peak_rss_mib", "MiB")
    add("peak RSS: drift process", "drift", "peak_rss_mib", "MiB")
    if one["etl"].get("seconds") and ten["etl"].get("seconds"):
        table.add(
            "ETL throughput: 10x vs 1x",
            ten["etl"]["rows"] / ten["etl"]["seconds"],
            "rows/s",
            one["etl"]["rows"] / one["etl"]["seconds"],
        )
    table.note(
        "linear growth = 10x for times; the ETL's peak RSS should stay about flat (one day "
        "in memory); the training read holds the whole range in memory by design."
    )
    if "error" in ten["train"]:
        table.note(
            f"the curated read + fit of the whole 10x range did not finish: {ten['train']['error']}"
        )
    table.finish(args)
    return None


if __name__ == "__main__":
    main()
