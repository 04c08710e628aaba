"""The published predictions: what downstream applications read, one partition per day.

Each day scored ahead is published twice, with the same rows: a Parquet partition
(predictions/<usecase>/date=<day>/part-0.parquet: the key, the event time, the features as
scored, the probability, the model version and when it was scored) and the SQL table
`predictions` (the key, the day, the event time, the probability, the model version, when it
was scored) in the database of Settings.predictions_url (SQLite by default, PostgreSQL in
production). Publishing a day replaces that day's rows in both, so a rerun of a night never
duplicates them. The Parquet partition is also what the night's reports read back: a
prediction is judged as it was made, by the version that made it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from driftline import storage
from driftline.config import PREDICTION, Settings, UseCase
from driftline.monitoring.history import add_missing_columns
from driftline.monitoring.judged_rows import Days

MODEL_VERSION = "model_version"
SCORED_AT = "scored_at"
TABLE_NAME = "predictions"

METADATA = sa.MetaData()
PREDICTIONS = sa.Table(
    TABLE_NAME,
    METADATA,
    sa.Column("usecase", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),  # the use-case's local day of event_time
    sa.Column("key", sa.String(128), primary_key=True),  # the use-case's key, as text
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
)


def publish(
    usecase: UseCase, settings: Settings, day: dt.date, scored: pd.DataFrame
) -> Path:
    """Publish the day's scored rows (scoring columns + prediction, model_version, scored_at):
    the SQL rows first (delete + insert in one transaction), then the Parquet partition
    (atomic rename), so a failure between the two leaves the old partition, never half."""
    repeated = scored[usecase.key][scored[usecase.key].duplicated()]
    if len(repeated):
        raise ValueError(
            f"{usecase.name} {day}: {len(repeated)} scored rows repeat a {usecase.key} (e.g. "
            f"{repeated.iloc[0]!r}): a prediction is published once per key; nothing was "
            "published"
        )
    rows = pd.DataFrame(
        {
            "usecase": usecase.name,
            "day": day,
            "key": scored[usecase.key].astype(str),
            "event_time": scored[usecase.event_time],
            "probability": scored[PREDICTION].astype(float),
            "model_version": scored[MODEL_VERSION].astype(str),
            "scored_at": scored[SCORED_AT],
        }
    )
    engine = _engine(settings.predictions_url)
    try:
        METADATA.create_all(engine)
        add_missing_columns(engine, PREDICTIONS)
        with engine.begin() as conn:
            conn.execute(
                sa.delete(PREDICTIONS).where(
                    PREDICTIONS.c.usecase == usecase.name, PREDICTIONS.c.day == day
                )
            )
            if len(rows):
                conn.execute(sa.insert(PREDICTIONS), rows.to_dict("records"))
    finally:
        engine.dispose()
    versions = sorted(scored[MODEL_VERSION].astype(str).unique())
    return storage.write_parquet(
        scored,
        settings.predictions_path(usecase.name, day),
        metadata={"day": day.isoformat(), "model_versions": versions, "rows": len(scored)},
    )


def _engine(url: str) -> sa.Engine:
    """An engine for the predictions' database; an embedded SQLite file gets its folder."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url)


def published_rows(settings: Settings, usecase: str, day: dt.date) -> pd.DataFrame:
    """The day's rows in the SQL table (what a downstream application reads)."""
    engine = sa.create_engine(settings.predictions_url)
    try:
        if not sa.inspect(engine).has_table(TABLE_NAME):
            return pd.DataFrame(columns=[c.name for c in PREDICTIONS.columns])
        query = sa.select(PREDICTIONS).where(
            PREDICTIONS.c.usecase == usecase, PREDICTIONS.c.day == day
        )
        with engine.connect() as conn:
            rows = pd.DataFrame(conn.execute(query).mappings().all())
    finally:
        engine.dispose()
    if rows.empty:
        return rows
    # SQLite keeps the UTC instants without their zone: read back as UTC on either database
    return rows.assign(
        event_time=pd.to_datetime(rows["event_time"], utc=True),
        scored_at=pd.to_datetime(rows["scored_at"], utc=True),
    )


def stored(usecase: UseCase, settings: Settings, days: Days) -> pd.DataFrame:
    """The scored rows stored for `days` (the days that have a partition), with their day."""
    frames = []
    day = days.first
    while day <= days.last:
        path = settings.predictions_path(usecase.name, day)
        if path.exists():
            frames.append(pd.read_parquet(path).assign(day=day))
        day += dt.timedelta(days=1)
    if not frames:
        columns = [*usecase.scoring_columns, PREDICTION, MODEL_VERSION, SCORED_AT, "day"]
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)
