"""The expectation suite: Great Expectations against the same rules as plain pandas checks.

Platform: driftline.ingest.validation.validate_batch (the process's one ephemeral GX context, the
suite expectations/flights_batch.json with usecases/flights.yaml's parameters; verdicts only,
then the detailed SUMMARY result for a failing batch), on one day's curated batch and on the
whole year as one batch judged as 2 January (the year fails the daily row-count bound and the
day's time bounds, as it should: both sides must say so; a failing batch pays for the
second, detailed validation).

Baseline, same run, same frames: every expectation of the suite written as a plain pandas
check with GX's semantics (map expectations ignore nulls; `mostly` honoured; a check that
cannot be evaluated fails). Both must agree on pass/fail for every expectation, on the day,
on the year and on a day with six planted faults; the bench stops if they do not.
The frames come from driftline.ingest.etl.transform (the ETL's builder) over the seed tables.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics

from bench.common import (
    YEAR,
    Table,
    curated_frame,
    flights,
    parse_args,
    settings_for,
    temp_dir,
    timed,
)

DAY = dt.date(2013, 1, 2)
QUICK_RANGE = (dt.date(2013, 1, 1), dt.date(2013, 1, 7))


def suite_expectations(usecase, settings) -> list[dict]:
    """The suite's expectations with each {"$PARAMETER": name} replaced by its value."""
    from driftline.ingest.validation import load_suite_json, suite_parameters

    parameters = suite_parameters(usecase, DAY)

    def fill(value):
        if isinstance(value, dict) and set(value) == {"$PARAMETER"}:
            return parameters[value["$PARAMETER"]]
        return value

    return [
        {"type": e["type"], "kwargs": {k: fill(v) for k, v in e["kwargs"].items()}}
        for e in load_suite_json(usecase, settings)["expectations"]
    ]


# --- the suite in plain pandas --------------------------------------------------------------


def _between(value, low, high) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _map(frame, kwargs, condition) -> bool:
    """A GX column map expectation: the condition on the non-null values, with `mostly`."""
    column = frame[kwargs["column"]]
    values = column[column.notna()]
    if values.empty:
        return True
    good = condition(values)
    return bool(good.mean() >= kwargs.get("mostly", 1.0))


def _dtype_is(actual, expected: str) -> bool:
    from pandas.api.types import pandas_dtype

    return bool(actual == pandas_dtype(expected) or str(actual) == expected)


def _in_range(values, kwargs):
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    good = values == values  # all True, same index
    if low is not None:
        good &= values >= low
    if high is not None:
        good &= (values < high) if kwargs.get("strict_max") else (values <= high)
    return good.astype(bool)


PANDAS_CHECKS = {
    "expect_table_columns_to_match_ordered_list": lambda f, kw: (
        list(f.columns) == list(kw["column_list"])
    ),
    "expect_table_row_count_to_be_between": lambda f, kw: _between(
        len(f), kw.get("min_value"), kw.get("max_value")
    ),
    "expect_column_values_to_not_be_null": lambda f, kw: bool(
        f[kw["column"]].notna().mean() >= kw.get("mostly", 1.0)
    ),
    "expect_column_values_to_be_unique": lambda f, kw: _map(
        f, kw, lambda v: ~v.duplicated(keep=False)
    ),
    "expect_column_values_to_be_in_set": lambda f, kw: _map(
        f, kw, lambda v: v.isin(kw["value_set"])
    ),
    "expect_column_values_to_match_regex": lambda f, kw: _map(
        f, kw, lambda v: v.astype(str).str.contains(kw["regex"])
    ),
    "expect_column_type_to_be": lambda f, kw: _dtype_is(f[kw["column"]].dtype, kw["type_"]),
    "expect_column_values_to_be_between": lambda f, kw: _map(f, kw, lambda v: _in_range(v, kw)),
    "expect_column_proportion_of_non_null_values_to_be_between": lambda f, kw: _between(
        f[kw["column"]].notna().mean(), kw.get("min_value"), kw.get("max_value")
    ),
}


def pandas_validate(frame, expectations: list[dict]) -> list[bool]:
    verdicts = []
    for expectation in expectations:
        check = PANDAS_CHECKS.get(expectation["type"])
        if check is None:
            raise SystemExit(
                f"bench_validation has no pandas version of {expectation['type']}: add one"
            )
        try:
            verdicts.append(bool(check(frame, expectation["kwargs"])))
        except (KeyError, TypeError, ValueError):
            verdicts.append(False)  # GX: an expectation that raises fails
    return verdicts


def gx_verdicts(outcome, expectations: list[dict]) -> list[bool]:
    """GX's per-expectation success, matched to the suite by type and column (unique in the
    suite: checked here, so a second expectation of a kind on a column stops the bench)."""

    def key(kind: str, kwargs: dict) -> tuple[str, str | None]:
        return kind, kwargs.get("column")

    found = {}
    for result in outcome.result["results"]:
        config = result["expectation_config"]
        found[key(config["type"], config["kwargs"])] = bool(result["success"])
    if len(found) != len(expectations) or len(outcome.result["results"]) != len(expectations):
        raise SystemExit("the suite has two expectations of one kind on one column: match by more")
    return [found[key(e["type"], e["kwargs"])] for e in expectations]


def planted_faults(day_frame):
    """A copy of the day with six faults, each for a different kind of expectation."""
    bad = day_frame.copy()
    bad.loc[0, "origin"] = "XXX"  # in_set
    bad.loc[1, "carrier"] = None  # not_null
    bad.loc[3, "flight_id"] = bad.loc[2, "flight_id"]  # unique
    bad.loc[4, "dest"] = "ab"  # regex
    bad.loc[5, "temp"] = 200.0  # between
    bad["weekday"] = bad["weekday"].astype("int64")  # type
    return bad


def compare(name: str, frame, usecase, settings, expectations, repeats: int) -> dict:
    from driftline.ingest.validation import validate_batch

    gx_times, pandas_times = [], []
    for _ in range(repeats):
        with timed() as gx_time:
            outcome = validate_batch(frame, usecase, settings, DAY)
        gx_times.append(gx_time.seconds)
        with timed() as pandas_time:
            verdicts = pandas_validate(frame, expectations)
        pandas_times.append(pandas_time.seconds)
    gx = gx_verdicts(outcome, expectations)
    disagree = [
        f"{e['type']} {e['kwargs'].get('column', '')}: GX {g}, pandas {p}"
        for e, g, p in zip(expectations, gx, verdicts, strict=True)
        if g != p
    ]
    if disagree:
        raise SystemExit(f"GX and pandas disagree on the {name}:\n  " + "\n  ".join(disagree))
    return {
        "rows": len(frame),
        "gx": statistics.median(gx_times),
        "pandas": statistics.median(pandas_times),
        "failed": len(gx) - sum(gx),
        "evaluated": len(gx),
        "outcome": outcome,
    }


def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.ERROR)
    first, last = QUICK_RANGE if args.quick else YEAR
    with temp_dir("validation", args.keep) as root:
        settings = settings_for(root / "home")
        usecase = flights(settings)
        expectations = suite_expectations(usecase, settings)
        year = curated_frame(usecase, first, last)
        day_rows = year[year["flight_id"].str.startswith(DAY.isoformat())]
        day_frame = day_rows.reset_index(drop=True)

        from driftline.ingest.validation import _import_gx, data_docs_page

        with timed() as gx_import:
            gx = _import_gx()
        with timed() as context:
            for _ in range(3):
                gx.get_context(mode="ephemeral")
        repeats = 2 if args.quick else 5
        day = compare("day", day_frame, usecase, settings, expectations, repeats)
        bad = compare("faulty day", planted_faults(day_frame), usecase, settings, expectations, 1)
        whole = compare("year", year, usecase, settings, expectations, 1)
        with timed() as docs:
            data_docs_page(day["outcome"].result)

    if day["failed"] or bad["failed"] != 6 or whole["failed"] != 2:
        raise SystemExit(
            f"unexpected verdicts: day {day['failed']}, faulty day {bad['failed']} (6 planted), "
            f"year {whole['failed']} (only the row count and the day's bounds should fail)"
        )
    span = f"{first}..{last}"
    table = Table(f"bench_validation: suite flights_batch on {DAY} and {span}", args.quick)
    table.add("expectations in the suite", len(expectations))
    table.add(f"one day ({day['rows']:,} rows): GX vs pandas", day["gx"], "s", day["pandas"])
    table.add(
        f"{span} as one batch ({whole['rows']:,} rows): GX vs pandas",
        whole["gx"],
        "s",
        whole["pandas"],
    )
    table.add(
        "throughput over the range: GX vs pandas",
        whole["rows"] / whole["gx"],
        "rows/s",
        whole["rows"] / whole["pandas"],
    )
    table.add("faulty day: GX vs pandas", bad["gx"], "s", bad["pandas"])
    table.add("GX import (once per process)", gx_import.seconds, "s")
    table.add("GX ephemeral context (made once per process)", context.seconds / 3, "s")
    table.add("Data Docs page of one day's result (failing day, or opened)", docs.seconds, "s")
    table.add(
        "pass/fail agreement (day, faulty day, range)",
        f"{day['evaluated']}/{day['evaluated']} each",
    )
    table.note(
        f"verdicts: day passes all; faulty day fails {bad['failed']} (6 planted); range fails "
        "only the daily row-count bound. Times: median of "
        f"{repeats} run(s) for the day, 1 for the range."
    )
    table.note(
        f"baseline = the suite's {len(expectations)} expectations as plain pandas checks "
        "(PANDAS_CHECKS in this file)."
    )
    table.finish(args)


if __name__ == "__main__":
    main()
