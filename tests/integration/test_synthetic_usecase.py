"""A second use-case end to end, with no Python hook: the seeded "orders" of
driftline.experiments.synthetic_orders, a config file and a suite, through ETL -> training ->
monitoring.

The bulk in-process (`driftline etl` over the days, `driftline monitor` over the nights), the
one training and a night of the ETL and of the monitoring through real Airflow (`airflow dags
test`): the rule must stay quiet on every night before the drift's onset and fire within
FIRE_WITHIN_NIGHTS nights of it. The tests of this module share one state and run in order.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from driftline.config import Settings, UseCase, load_usecase
from driftline.experiments import synthetic_orders as orders
from driftline.monitoring.drift_rule import QUIET
from driftline.monitoring.history import FIRED, DriftHistory
from driftline.training import registry
from tests.integration.conftest import airflow_env, run

pytestmark = pytest.mark.integration

# The in-process nights are those after the champion's window up to the one before the last
# day; the last day is the night of the ETL and monitoring DAGs.
FIRST_NIGHT = orders.WINDOW_END + dt.timedelta(days=1)
AIRFLOW_NIGHT = orders.LAST_DAY
# The rule fires on the onset's night (a quality drop: the night's two days are half drifted)
# or on the next (the drift share on 2 of 3 nights), never later for a shift this clear.
FIRE_WITHIN_NIGHTS = 1


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def run_date(usecase: UseCase, day: dt.date) -> str:
    """The logical date `airflow dags test` takes to run the night of `day`."""
    return usecase.day_start(day + dt.timedelta(days=1)).isoformat()


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """A migrated Airflow home and a state folder that know one use-case, orders: its config
    and suite in folders of their own, its source generated (drift from DRIFT_ONSET)."""
    root = tmp_path_factory.mktemp("orders")
    orders.write_config(root / "usecases", root / "expectations")
    url = orders.write_source(
        orders.orders(orders.FIRST_DAY, orders.LAST_DAY), root / "source" / "orders.db"
    )
    return {
        **airflow_env(root, url),
        "DRIFTLINE_USECASES_DIR": str(root / "usecases"),
        "DRIFTLINE_EXPECTATIONS_DIR": str(root / "expectations"),
        "DRIFTLINE_ORDERS_SOURCE_URL": url,
    }


@pytest.fixture(scope="module")
def state(env):
    settings = Settings(
        home=Path(env["DRIFTLINE_HOME"]),
        usecases_dir=Path(env["DRIFTLINE_USECASES_DIR"]),
        expectations_dir=Path(env["DRIFTLINE_EXPECTATIONS_DIR"]),
    )
    return settings, load_usecase(orders.NAME, settings)


def driftline(env: dict[str, str], *args: str):
    done = run(env, "driftline", "--usecase", orders.NAME, *args)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return done


def airflow_dags_test(env: dict[str, str], dag: str, *args: str):
    done = run(env, "airflow", "dags", "test", f"{orders.NAME}_{dag}", *args)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return done


def source_rows_per_day(env: dict[str, str]) -> dict[dt.date, int]:
    with sqlite3.connect(env["DRIFTLINE_ORDERS_SOURCE_URL"].removeprefix("sqlite:///")) as db:
        counted = db.execute(
            "SELECT substr(ordered_at, 1, 10), count(*) FROM orders GROUP BY 1").fetchall()
    return {dt.date.fromisoformat(day): rows for day, rows in counted}


def test_every_day_loads_from_the_config_alone(env, state):
    settings, usecase = state
    assert usecase.transform is None and usecase.source.seed is None  # no Python hook
    checked = driftline(env, "check")  # the config and its suite, as a platform team checks them
    assert checked.stdout.startswith(f"OK {orders.NAME} "), checked.stdout
    loaded = days(orders.FIRST_DAY, AIRFLOW_NIGHT - dt.timedelta(days=1))
    driftline(env, "etl", "--start", str(loaded[0]), "--end", str(loaded[-1]), "--workers", "2")

    expected = source_rows_per_day(env)
    for day in loaded:
        batch = pd.read_parquet(settings.partition_dir(orders.NAME, day) / "part-0.parquet")
        assert list(batch.columns) == usecase.curated_columns
        assert len(batch) == expected[day], day
        assert batch["ordered_at"].dt.date.eq(day).all()
        # the label rule over the extracted outcome; unknown where the order was cancelled
        assert batch["is_late"].isna().equals(batch["delivery_days"].isna())
        known = batch[batch["delivery_days"].notna()]
        assert known["is_late"].astype(bool).equals(known["delivery_days"] > 4)
    assert not settings.partition_dir(orders.NAME, AIRFLOW_NIGHT).exists()


def test_the_training_dag_trains_the_first_champion(env, state):
    settings, usecase = state
    conf = {"window_end": str(orders.WINDOW_END), "reason": "first model"}
    airflow_dags_test(env, "training", "-c", json.dumps(conf))
    model = usecase.training.registered_model
    assert registry.alias_version(settings, model, registry.CHAMPION) == "1"
    holdout = registry.version_info(settings, usecase, "1")["metrics"]
    print(f"\norders version 1: holdout ROC AUC {holdout['roc_auc']:.4f} on "
          f"{holdout['rows']:.0f} rows")
    assert holdout["roc_auc"] > 0.8  # the generator's label is learnable (measured: 0.88)


def test_the_rule_is_quiet_before_the_onset_and_fires_soon_after(env, state):
    settings, usecase = state
    nights = days(FIRST_NIGHT, AIRFLOW_NIGHT - dt.timedelta(days=1))
    driftline(env, "monitor", "--start", str(nights[0]), "--end", str(nights[-1]))

    history = DriftHistory(settings.history_url)
    try:
        judged = {n.day: n for n in history.nights(orders.NAME, nights[-1], len(nights))}
    finally:
        history.dispose()
    assert list(judged) == nights
    for day, night in judged.items():
        auc = "n/a" if night.roc_auc is None else f"{night.roc_auc:.3f}"
        print(f"{day}  drift share {night.drift_share:.2f}  ROC AUC {auc}  {night.decision}  "
              f"{night.drifted_columns}")
    before = [night for day, night in judged.items() if day < orders.DRIFT_ONSET]
    loud = [(n.day, n.decision, n.decision_reason) for n in before if n.decision != QUIET]
    assert before and not loud, loud
    fired = [day for day, night in judged.items() if night.decision == FIRED]
    assert fired, "the rule never fired"
    print(f"first fired on {fired[0]}: {(fired[0] - orders.DRIFT_ONSET).days} night(s) after "
          f"the onset {orders.DRIFT_ONSET}")
    assert orders.DRIFT_ONSET <= fired[0] <= orders.DRIFT_ONSET + dt.timedelta(
        days=FIRE_WITHIN_NIGHTS)


def test_a_night_of_the_etl_and_monitoring_dags_fires_the_drift_sensor(env, state):
    settings, usecase = state
    night = AIRFLOW_NIGHT
    airflow_dags_test(env, "etl", run_date(usecase, night))
    batch = pd.read_parquet(settings.partition_dir(orders.NAME, night) / "part-0.parquet")
    assert len(batch) == source_rows_per_day(env)[night]

    airflow_dags_test(env, "monitoring", run_date(usecase, night))
    history = DriftHistory(settings.history_url)
    try:
        recorded = history.night(orders.NAME, night)
    finally:
        history.dispose()
    assert recorded.decision == FIRED, recorded.decision_reason
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        runs = dict(db.execute(
            "SELECT run_id, conf FROM dag_run WHERE dag_id = ?", (f"{orders.NAME}_training",)))
    conf = json.loads(runs[f"drift__{night}"])
    assert conf["reason"] == "drift"
    assert conf["window_end"] == str(night - dt.timedelta(days=usecase.training.holdout_days))
    assert conf["evidence"]["day"] == str(night)
    assert set(conf["evidence"]["drifted_columns"]) >= {"region", "distance_km"}
