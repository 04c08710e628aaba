"""ETL of the year: driftline.ingest.etl.run_day per day against plain pandas doing the same work.

Platform: `driftline.ingest.etl.run_day` for every New York day of 2013 (extract with bound queries,
the use-case's build_batch, the Great Expectations gate (a Data Docs page only on a failure),
the atomic Parquet load), exactly what `driftline etl --workers 1` runs, into a temporary
DRIFTLINE_HOME, with the source database (SQLite, seeded by driftline.ingest.source.seed) by URL.

Baseline, measured in the same run on the same source: plain pandas, **per day** like the
platform: read_sql of the same four queries (same bound parameters, one connection for the
whole run), the same joins as driftline.usecases.flights.build_batch written as merges
(planes on tailnum, destination airport on faa, origin weather on origin + hour), the same
derived columns and label, then to_parquet. No validation, no atomic write, no metadata.
Also reported: the same baseline in one batch for the whole range (one read, one write).
The baseline's output is checked equal to the platform's curated partitions.

Parallel, same run: `driftline.ingest.etl.run_days` of the same days on one process per core (what
`driftline etl` does by default) into a second home, against the sequential run above; every
partition must be byte-identical to the sequential one. It runs second, so its workers are
forked with GX already imported (the sequential run paid that once, on its first day).
"""

from __future__ import annotations

import datetime as dt
import logging
import os

from bench.common import (
    YEAR,
    Table,
    days,
    flights,
    isolate,
    parse_args,
    seed_source,
    settings_for,
    sqlite_url,
    stage_timers,
    temp_dir,
    timed,
)

QUICK = (dt.date(2013, 1, 1), dt.date(2013, 1, 3))
WEATHER = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip")
WEATHER += ("pressure", "visib")


def read_tables(conn, usecase, start: dt.datetime, end: dt.datetime) -> dict:
    """pd.read_sql of the use-case's queries, with the same typed bound parameters."""
    import pandas as pd
    import sqlalchemy as sa

    bounds = {"start": start, "end": end}
    tables = {}
    for name, query in usecase.source.queries.items():
        statement = sa.text(query)
        binds = {k: v for k, v in bounds.items() if f":{k}" in query}
        if binds:
            statement = statement.bindparams(*(sa.bindparam(k, type_=sa.DateTime()) for k in binds))
        tables[name] = pd.read_sql(statement, conn, params=binds)
    return tables


def plain_batch(tables: dict, usecase):
    """build_batch + label rule as plain merges; columns in curated order."""
    import numpy as np
    import pandas as pd

    hour = pd.to_datetime(tables["flights"]["time_hour"], utc=True)
    rows = tables["flights"].assign(time_hour=hour)
    planes = (
        tables["planes"]
        .drop_duplicates("tailnum")[["tailnum", "year", "type", "seats", "engines"]]
        .rename(columns={"year": "built", "type": "plane_type", "seats": "plane_seats"})
        .rename(columns={"engines": "plane_engines"})
    )
    airports = (
        tables["airports"]
        .drop_duplicates("faa")[["faa", "lat", "lon"]]
        .rename(columns={"faa": "dest", "lat": "dest_lat", "lon": "dest_lon"})
    )
    weather = tables["weather"]
    weather = weather.assign(time_hour=pd.to_datetime(weather["time_hour"], utc=True))
    weather = weather.drop_duplicates(["origin", "time_hour"])[["origin", "time_hour", *WEATHER]]
    merged = (
        rows.merge(planes, on="tailnum", how="left")
        .merge(airports, on="dest", how="left")
        .merge(weather, on=["origin", "time_hour"], how="left")
    )
    sched = merged["time_hour"] + pd.to_timedelta(merged["minute"], unit="m")
    local = sched.dt.tz_convert(usecase.tz)
    batch = pd.DataFrame(
        {
            "flight_id": local.dt.strftime("%Y-%m-%d")
            + "/"
            + merged["carrier"]
            + merged["flight"].astype(str)
            + "/"
            + merged["origin"],
            "sched_time": sched,
            "carrier": merged["carrier"],
            "origin": merged["origin"],
            "dest": merged["dest"],
            "plane_type": merged["plane_type"],
            "distance": merged["distance"],
            "sched_hour": merged["hour"],
            "weekday": local.dt.weekday.astype("float64"),
            "month": local.dt.month.astype("float64"),
            "plane_age": (local.dt.year - merged["built"]).astype("float64"),
            "plane_seats": merged["plane_seats"].astype("float64"),
            "plane_engines": merged["plane_engines"].astype("float64"),
            "dest_lat": merged["dest_lat"],
            "dest_lon": merged["dest_lon"],
            **{c: merged[c].astype("float64") for c in WEATHER},
            "is_delayed": (merged["arr_delay"] > 15)
            .astype("boolean")
            .mask(merged["arr_delay"].isna()),
            "arr_delay": merged["arr_delay"],
            "dep_delay": merged["dep_delay"],
            "cancelled": merged["dep_time"].isna(),
        }
    )
    batch.loc[batch["wind_speed"] > 200, "wind_speed"] = np.nan  # build_batch's glitch rule
    return batch[usecase.curated_columns]


def platform_run(usecase, settings, url: str, range_days: list[dt.date]) -> dict:
    from driftline.ingest import etl, validation

    targets = {
        "count at the source": (etl, "count_source"),
        "extract": (etl, "extract"),
        "build_batch": (etl, "build_batch"),
        "gate: GX validate": (validation, "validate_batch"),
        "gate: Data Docs page": (validation, "data_docs_page"),
        "gate: total": (etl, "gate_batch"),
        "load_partition": (etl, "load_partition"),
    }
    rows, per_day = 0, []
    with stage_timers(targets) as stages, timed() as total:
        for day in range_days:
            with timed() as one:
                rows += etl.run_day(usecase, settings, day, url).rows
            per_day.append(one.seconds)
    return {"rows": rows, "seconds": total.seconds, "per_day": per_day, "stages": stages}


def parallel_run(usecase, settings, url: str, range_days: list[dt.date], workers: int) -> dict:
    from driftline.ingest import etl

    with timed() as total:
        outcomes = list(etl.run_days(usecase, settings, range_days, url, workers=workers))
    failed = [o for o in outcomes if o.error]
    assert not failed, failed[:3]
    return {"rows": sum(o.loaded.rows for o in outcomes), "seconds": total.seconds}


def check_same_bytes(usecase, sequential, parallel, checked: list[dt.date]) -> None:
    from driftline.ingest.etl import PARTITION_FILE

    for day in checked:
        one, other = (s.partition_dir(usecase.name, day) / PARTITION_FILE
                      for s in (sequential, parallel))
        assert one.read_bytes() == other.read_bytes(), f"{day}: parallel != sequential"


def baseline_per_day(usecase, url: str, range_days: list[dt.date], folder) -> dict:
    import sqlalchemy as sa

    from driftline.ingest.etl import BatchWindow

    engine = sa.create_engine(url)
    rows = 0
    with timed() as total, engine.connect() as conn:
        for day in range_days:
            bounds = BatchWindow.for_day(day, usecase).query_params
            batch = plain_batch(read_tables(conn, usecase, bounds["start"], bounds["end"]), usecase)
            target = folder / f"date={day.isoformat()}" / "part-0.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            batch.to_parquet(target, index=False)
            rows += len(batch)
    engine.dispose()
    return {"rows": rows, "seconds": total.seconds}


def baseline_one_batch(usecase, url: str, first: dt.date, last: dt.date, folder) -> dict:
    import sqlalchemy as sa

    from driftline.ingest.etl import BatchWindow

    engine = sa.create_engine(url)
    start = BatchWindow.for_day(first, usecase).query_params["start"]
    end = BatchWindow.for_day(last, usecase).query_params["end"]
    with timed() as total, engine.connect() as conn:
        batch = plain_batch(read_tables(conn, usecase, start, end), usecase)
        batch.to_parquet(folder / "range.parquet", index=False)
    engine.dispose()
    return {"rows": len(batch), "seconds": total.seconds}


def check_same_output(usecase, settings, folder, checked: list[dt.date]) -> None:
    """The baseline's day files hold the platform's curated rows (order aside)."""
    import pandas as pd

    for day in checked:
        name = f"date={day.isoformat()}/part-0.parquet"
        platform = pd.read_parquet(settings.curated_dir(usecase.name) / name)
        baseline = pd.read_parquet(folder / name)
        pd.testing.assert_frame_equal(
            platform.sort_values(usecase.key).reset_index(drop=True),
            baseline.sort_values(usecase.key).reset_index(drop=True),
            check_dtype=False,
        )


def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.ERROR)
    first, last = QUICK if args.quick else YEAR
    range_days = days(first, last)
    with temp_dir("etl", args.keep) as root:
        home = root / "home"
        url = sqlite_url(root / "source" / "flights.db")
        isolate(home, url)
        settings = settings_for(home)
        usecase = flights(settings)
        counts, seed_seconds = seed_source(usecase, url, first=first, last=last)

        platform = platform_run(usecase, settings, url, range_days)
        workers = os.cpu_count() or 1
        parallel_settings = settings_for(root / "parallel")
        parallel = parallel_run(usecase, parallel_settings, url, range_days, workers)
        check_same_bytes(usecase, settings, parallel_settings, range_days)
        per_day = baseline_per_day(usecase, url, range_days, root / "baseline")
        one_batch = baseline_one_batch(usecase, url, first, last, root)
        check_same_output(usecase, settings, root / "baseline", range_days[::30])

    assert platform["rows"] == per_day["rows"] == one_batch["rows"], (platform, per_day, one_batch)
    table = Table(f"bench_etl: ETL of {first}..{last} ({len(range_days)} days)", args.quick)
    rows = platform["rows"]
    table.add("rows loaded", rows)
    table.add(
        "throughput: run_day vs pandas per day",
        rows / platform["seconds"],
        "rows/s",
        rows / per_day["seconds"],
    )
    table.add(
        "throughput: run_day vs pandas one batch",
        rows / platform["seconds"],
        "rows/s",
        rows / one_batch["seconds"],
    )
    table.add("total time: run_day vs pandas per day", platform["seconds"], "s", per_day["seconds"])
    table.add(
        f"throughput: run_days on {workers} processes vs run_day sequential",
        parallel["rows"] / parallel["seconds"],
        "rows/s",
        rows / platform["seconds"],
    )
    table.add(
        f"seconds per day: run_days on {workers} processes vs pandas per day",
        parallel["seconds"] / len(range_days),
        "s",
        per_day["seconds"] / len(range_days),
    )
    table.add(
        "seconds per day: run_day vs pandas per day",
        platform["seconds"] / len(range_days),
        "s",
        per_day["seconds"] / len(range_days),
    )
    table.add("first day (imports GX)", platform["per_day"][0], "s")
    if len(range_days) > 1:
        later = platform["per_day"][1:]
        table.add("later days, mean (GX imported)", sum(later) / len(later), "s")
    for stage, seconds in platform["stages"].items():
        table.add(f"  {stage} (share of run_day)", seconds / platform["seconds"] * 100, "%")
    table.add("seed of the source DB (not in the figures)", seed_seconds, "s")
    table.note(f"source rows seeded: {counts}")
    table.note(
        "baseline = plain pandas per day (read_sql of the same 4 queries, the build_batch "
        "joins as merges, to_parquet), one connection; 'one batch' = the same for the whole "
        "range at once. Output checked equal to the curated partitions on "
        f"{len(range_days[::30])} day(s)."
    )
    table.note("the gate stages are inside 'gate: total'; the shares overlap accordingly.")
    table.finish(args)


if __name__ == "__main__":
    main()
