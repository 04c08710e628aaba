"""The generated drift use-case, "orders": a web shop's orders, predicting whether an order
arrives late. Its source is generated here (seeded, a few hundred rows a day, a known drift
from a known day), and its config and suite are plain files: no transform, no seed hook, no
Python of its own, as a platform team would onboard it. The tests run it end to end
(tests/integration/test_synthetic_usecase.py); scripts/measure_adaptation.py replays a longer
stretch of it to measure how fast retraining adapts to the shift.

From DRIFT_ONSET on the shop ships from a new western warehouse: the customer mix moves west,
to the app and to invoices, baskets grow and travel further, and what makes an order late
changes (distance matters less, paying by card more). Each day's rows are drawn from a
generator seeded by the day alone, so moving the onset (or removing it) changes only the
days from the onset on.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import yaml

# The use-case, as its owner would write it: usecases/orders.yaml.
USECASE_YAML = """\
# A web shop's orders: does an order arrive late (more than 4 days), from what is
# known when it is placed. A config file and a suite only: no Python of its own.
name: orders
description: Synthetic orders (driftline.experiments.synthetic_orders).
timezone: UTC
start_date: "2024-03-01"
# No end_date: `airflow dags test` of the last day would run no task (its logical date,
# the midnight after the day, is past the DAG's end).

source:
  url_env: DRIFTLINE_ORDERS_SOURCE_URL
  batch_table: orders
  time_column: ordered_at
  queries:
    orders: SELECT * FROM orders WHERE ordered_at >= :start AND ordered_at < :end

key: order_id
event_time: ordered_at

label:
  name: is_late
  rule: delivery_days > 4
  missing_when_null: delivery_days  # a cancelled order is never delivered

features:
  categorical: [channel, region, payment]
  numerical: [basket_value, items, distance_km, customer_age, account_days]

passthrough: [delivery_days]

validation:
  suite: orders_batch
  parameters:
    min_rows: 150
    max_rows: 1000
    min_label_present_ratio: 0.8

# An order is scored when it is loaded; its outcome comes with it (the shop's records are
# complete by the night).
scoring:
  ahead: loaded_day

# Sized on the test's figures: before the onset, two days of ~300 orders score below 0.11
# (numbers) and 0.05 (categories) against the 2,000-row reference, the prediction below 0.09,
# and ROC AUC stays within 0.02 of the holdout's; from the onset's night 6 of the 8 features
# and the prediction score 0.12 to 2.2, and ROC AUC falls by 0.15 to 0.27.
monitoring:
  current_days: 2
  reference:
    rows: 2000
    seed: 7
  tests:
    num_method: wasserstein
    num_threshold: 0.15
    cat_method: jensenshannon
    cat_threshold: 0.1
    dataset_drift_share: 0.5
  rule:
    drift_share: 0.5
    nights_drifted: 2
    nights_window: 3
    quality_drop: 0.1
    min_labelled_rows: 200
    cooldown_days: 0

training:
  experiment: orders_training
  registered_model: orders_late
  window_days: 7
  holdout_days: 2
  min_train_rows: 1000
  gate:
    primary_metric: roc_auc
    min_improvement: 0.002
    floor: 0.6
    slice_tolerance: 0.05
    min_slice_rows: 100
    min_compare_rows: 300
    slices:
      region: 0
"""

CONFIG = yaml.safe_load(USECASE_YAML)
NAME = CONFIG["name"]
FIRST_DAY = dt.date.fromisoformat(CONFIG["start_date"])
WINDOW_DAYS = CONFIG["training"]["window_days"]
WINDOW_END = FIRST_DAY + dt.timedelta(days=WINDOW_DAYS - 1)  # the first champion's window
DRIFT_ONSET = dt.date(2024, 3, 12)  # after 4 quiet nights (the 2 holdout days among them)
LAST_DAY = dt.date(2024, 3, 14)  # the onset + 2
SEED = 21
ROWS_PER_DAY = 300  # Poisson mean of a day's orders

CHANNELS = ["web", "app", "store"]
REGIONS = ["north", "south", "east", "west"]
PAYMENTS = ["card", "paypal", "invoice"]

# What a day's orders look like before the onset, and from it on.
BEFORE = {
    "channel": [0.5, 0.35, 0.15],
    "region": [0.3, 0.3, 0.2, 0.2],
    "payment": [0.6, 0.25, 0.15],
    "log_basket_mean": 4.0,
    "extra_items_mean": 2.0,
    "distance_scale": 60.0,
}
AFTER = {
    "channel": [0.2, 0.7, 0.1],
    "region": [0.1, 0.1, 0.2, 0.6],
    "payment": [0.3, 0.2, 0.5],
    "log_basket_mean": 4.5,
    "extra_items_mean": 4.0,
    "distance_scale": 150.0,
}


def day_orders(day: dt.date, onset: dt.date | None, seed: int = SEED) -> pd.DataFrame:
    """One day's orders as the shop's database holds them: `ordered_at` is naive UTC."""
    rng = np.random.default_rng([seed, day.toordinal()])
    drifted = onset is not None and day >= onset
    mix = AFTER if drifted else BEFORE
    rows = int(rng.poisson(ROWS_PER_DAY))
    seconds = np.sort(rng.integers(0, 86400, rows))
    frame = pd.DataFrame(
        {
            "order_id": [f"{day:%Y%m%d}-{n:04d}" for n in range(rows)],
            "ordered_at": pd.Timestamp(day) + pd.to_timedelta(seconds, unit="s"),
            "channel": rng.choice(CHANNELS, rows, p=mix["channel"]),
            "region": rng.choice(REGIONS, rows, p=mix["region"]),
            "payment": rng.choice(PAYMENTS, rows, p=mix["payment"]),
            "basket_value": rng.lognormal(mix["log_basket_mean"], 0.6, rows).round(2),
            "items": 1 + rng.poisson(mix["extra_items_mean"], rows),
            "distance_km": rng.gamma(2.0, mix["distance_scale"], rows).round(1),
            "customer_age": rng.normal(40, 12, rows).clip(18, 90).round().astype(int),
            "account_days": rng.exponential(400, rows).round().astype(int),
        }
    )
    noise = rng.normal(0, 0.9, rows)
    if drifted:
        delivery = (
            1.0
            + 0.004 * frame["distance_km"]
            + 0.1 * frame["items"]
            + 2.0 * (frame["payment"] == "card")
            + noise
        )
    else:
        delivery = (
            1.0
            + 0.012 * frame["distance_km"]
            + 0.25 * frame["items"]
            + 0.8 * (frame["payment"] == "invoice")
            + 0.6 * (frame["region"] == "north")
            + noise
        )
    cancelled = rng.random(rows) < 0.05  # never delivered: the label is unknown
    frame["delivery_days"] = delivery.clip(lower=0.5).round(1).where(~cancelled)
    return frame


def orders(
    first: dt.date, last: dt.date, onset: dt.date | None = DRIFT_ONSET, seed: int = SEED
) -> pd.DataFrame:
    """The orders of `first` .. `last` (inclusive), drifted from `onset` on (None: never)."""
    days = pd.date_range(first, last, freq="D").date
    return pd.concat([day_orders(day, onset, seed) for day in days], ignore_index=True)


def write_source(frame: pd.DataFrame, path: Path) -> str:
    """The shop's database: a SQLite file with one table, as pandas writes it; its URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    try:
        frame.to_sql("orders", engine, index=False, if_exists="replace")
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE INDEX orders_ordered_at ON orders (ordered_at)"))
    finally:
        engine.dispose()
    return url


def _not_null(column: str) -> dict:
    return {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column}}


def _type(column: str, type_: str) -> dict:
    return {"type": "expect_column_type_to_be", "kwargs": {"column": column, "type_": type_}}


def _between(column: str, low: float, high: float) -> dict:
    return {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": column, "min_value": low, "max_value": high},
    }


def _in_set(column: str, values: list[str]) -> dict:
    return {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": column,
                                                                    "value_set": values}}


NUMBERS = {  # column: (dtype as extracted, lowest, highest)
    "basket_value": ("float64", 0, 100_000),
    "items": ("int64", 1, 100),
    "distance_km": ("float64", 0, 5_000),
    "customer_age": ("int64", 18, 120),
    "account_days": ("int64", 0, 20_000),
}

# expectations/orders_batch.json: one day's curated orders.
SUITE = {
    "name": "orders_batch",
    "expectations": [
        {
            "type": "expect_table_columns_to_match_ordered_list",
            "kwargs": {"column_list": [
                "order_id", "ordered_at", "channel", "region", "payment", *NUMBERS, "is_late",
                "delivery_days",
            ]},
        },
        {
            "type": "expect_table_row_count_to_be_between",
            "kwargs": {"min_value": {"$PARAMETER": "min_rows"},
                       "max_value": {"$PARAMETER": "max_rows"}},
        },
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "order_id"}},
        *(_not_null(c) for c in ["order_id", "ordered_at", "channel", "region", "payment",
                                 *NUMBERS]),
        _type("order_id", "object"),
        _type("ordered_at", "datetime64[ns, UTC]"),
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "ordered_at", "min_value": {"$PARAMETER": "day_start"},
                       "max_value": {"$PARAMETER": "day_end"}, "strict_max": True},
        },
        _in_set("channel", CHANNELS),
        _in_set("region", REGIONS),
        _in_set("payment", PAYMENTS),
        *(_type(c, dtype) for c, (dtype, _, _) in NUMBERS.items()),
        *(_between(c, low, high) for c, (_, low, high) in NUMBERS.items()),
        _between("delivery_days", 0, 60),
        {
            "type": "expect_column_proportion_of_non_null_values_to_be_between",
            "kwargs": {"column": "is_late",
                       "min_value": {"$PARAMETER": "min_label_present_ratio"}, "max_value": 1},
        },
    ],
}


def write_config(
    usecases_dir: Path, expectations_dir: Path, overrides: dict[str, Any] | None = None
) -> None:
    """The use-case's two files, where DRIFTLINE_USECASES_DIR and DRIFTLINE_EXPECTATIONS_DIR
    point; `overrides` (nested sections) over USECASE_YAML's values."""
    usecases_dir.mkdir(parents=True, exist_ok=True)
    expectations_dir.mkdir(parents=True, exist_ok=True)
    text = USECASE_YAML
    if overrides:
        text = yaml.safe_dump(_merged(CONFIG, overrides), sort_keys=False)
    (usecases_dir / f"{NAME}.yaml").write_text(text)
    (expectations_dir / "orders_batch.json").write_text(json.dumps(SUITE, indent=1) + "\n")


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merged(base[key], value)
        else:
            merged[key] = value
    return merged
