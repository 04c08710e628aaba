"""The batch of a day: the batch table as extracted (no code), or a use-case's hook."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from driftline.config import ConfigError, UseCase
from driftline.ingest import etl
from driftline.ingest.validation import BatchRejectedError

DAY = dt.date(2024, 3, 1)


def _usecase(**changes) -> UseCase:
    """A small use-case whose source query already joins what the batch needs."""
    raw = {
        "name": "orders",
        "timezone": "UTC",
        "start_date": "2024-01-01",
        "source": {
            "url_env": "ORDERS_URL",
            "batch_table": "orders",
            "time_column": "ordered_at",
            "queries": {
                "orders": "SELECT * FROM orders WHERE ordered_at >= :start AND ordered_at < :end"
            },
        },
        "key": "order_id",
        "event_time": "ordered_at",
        "label": {"name": "returned", "rule": "days_to_return < 30",
                  "missing_when_null": "days_to_return"},
        "features": {"categorical": ["country"], "numerical": ["amount"]},
        "passthrough": ["channel"],
        "validation": {"suite": "orders_batch"},
        **changes,
    }
    return UseCase.model_validate(raw)


def _orders() -> pd.DataFrame:
    return pd.DataFrame({
        "order_id": ["a", "b", "c"],
        "ordered_at": pd.to_datetime(["2024-03-01 08:00", "2024-03-01 09:00",
                                      "2024-03-01 10:00"], utc=True),
        "amount": [10.0, 25.5, 3.0],
        "internal_note": ["x", "y", "z"],  # extracted, but not the use-case's
        "country": ["FR", "DE", "FR"],
        "days_to_return": [3.0, None, 45.0],
        "channel": ["web", "shop", "web"],
    })


def test_without_a_transform_the_batch_is_the_batch_table_in_curated_order():
    usecase = _usecase()
    batch = etl.transform(usecase, {"orders": _orders(), "other": pd.DataFrame({"q": [1]})})
    assert list(batch.columns) == usecase.curated_columns == [
        "order_id", "ordered_at", "country", "amount", "returned", "channel"]
    assert batch["order_id"].tolist() == ["a", "b", "c"]
    # the label rule reads a column the curated store does not keep; unknown where it is null
    assert batch["returned"].tolist() == [True, pd.NA, False]


def test_without_a_transform_a_missing_column_is_named_and_the_day_quarantined(settings):
    usecase = _usecase()
    extracted = _orders().drop(columns=["amount", "days_to_return"])
    with pytest.raises(etl.TransformError,
                       match=r"orders has no column.*'amount'.*'days_to_return'"):
        etl.transform(usecase, {"orders": extracted})
    with pytest.raises(BatchRejectedError, match="amount") as raised:
        etl.build_batch(usecase, settings, DAY, {"orders": extracted})
    assert pd.read_parquet(raised.value.quarantine / "batch.parquet").equals(extracted)


def test_a_hook_builds_the_batch_and_must_return_a_frame():
    usecase = _usecase(transform="tests.unit.ingest.test_transform:_with_amount_doubled")
    batch = etl.transform(usecase, {"orders": _orders()})
    assert batch["amount"].tolist() == [20.0, 51.0, 6.0]
    usecase = _usecase(transform="tests.unit.ingest.test_transform:_no_frame")
    with pytest.raises(etl.TransformError, match="returned a dict, not a pandas DataFrame"):
        etl.transform(usecase, {"orders": _orders()})


def test_a_hook_that_cannot_be_imported_is_a_config_error_not_bad_data(settings):
    """Every day would fail the same way: the task fails on the config, nothing is
    quarantined as if the data were wrong."""
    usecase = _usecase(transform="tests.unit.ingest.test_transform:no_such_builder")
    with pytest.raises(ConfigError, match="transform: cannot import"):
        etl.build_batch(usecase, settings, DAY, {"orders": _orders()})
    assert not settings.quarantine_dir(usecase.name, DAY).exists()


def _with_amount_doubled(tables: dict[str, pd.DataFrame], usecase: UseCase) -> pd.DataFrame:
    orders = tables[usecase.source.batch_table]
    return orders.assign(amount=orders["amount"] * 2)


def _no_frame(tables: dict[str, pd.DataFrame], usecase: UseCase) -> dict:
    return {"orders": tables["orders"]}
