"""The drift history: one row per use-case and night, the ledger an operator reads.

Each night's summary (model version, reference hash, drift share, drifted columns, quality)
and the sensor's decision live in one SQL table. Writing a night replaces its row in one
transaction, so a rerun of the same night never duplicates it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

FIRED = "fired"  # the decision that started a retraining (the others: drift_rule.py)

METADATA = sa.MetaData()
DRIFT_HISTORY = sa.Table(
    "drift_history",
    METADATA,
    sa.Column("usecase", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("reference_md5", sa.String(64), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("dataset_drift", sa.Boolean, nullable=False),
    sa.Column("drift_share", sa.Float, nullable=False),
    sa.Column("drifted_columns", sa.Text, nullable=False),  # JSON list
    sa.Column("roc_auc", sa.Float),
    sa.Column("log_loss", sa.Float),
    sa.Column("champion_holdout_roc_auc", sa.Float),
    sa.Column("report_html", sa.Text),
    sa.Column("report_json", sa.Text),
    sa.Column("evidently_runs", sa.Text, nullable=False),  # JSON list of workspace snapshot ids
    sa.Column("decision", sa.String(64)),
    sa.Column("decision_reason", sa.Text),
)


@dataclass
class NightSummary:
    usecase: str
    day: dt.date
    model_version: str
    reference_md5: str
    rows: int
    dataset_drift: bool
    drift_share: float
    drifted_columns: list[str] = field(default_factory=list)
    roc_auc: float | None = None
    log_loss: float | None = None
    champion_holdout_roc_auc: float | None = None
    report_html: str | None = None
    report_json: str | None = None
    evidently_runs: list[str] = field(default_factory=list)
    decision: str | None = None
    decision_reason: str | None = None

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["drifted_columns"] = json.dumps(self.drifted_columns)
        row["evidently_runs"] = json.dumps(self.evidently_runs)
        return row

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the day as ISO text)."""
        return {**asdict(self), "day": self.day.isoformat()}

    @classmethod
    def from_row(cls, row: sa.Row | dict) -> NightSummary:
        data = dict(row._mapping) if isinstance(row, sa.Row) else dict(row)
        data["drifted_columns"] = json.loads(data["drifted_columns"])
        data["evidently_runs"] = json.loads(data["evidently_runs"])
        return cls(**data)


class DriftHistory:
    def __init__(self, url: str):
        self.engine = sa.create_engine(url)
        METADATA.create_all(self.engine)

    def record(self, night: NightSummary) -> None:
        """Replace the night's row (delete + insert in one transaction: portable, no dups)."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(DRIFT_HISTORY).where(
                    DRIFT_HISTORY.c.usecase == night.usecase, DRIFT_HISTORY.c.day == night.day
                )
            )
            conn.execute(sa.insert(DRIFT_HISTORY).values(**night.as_row()))

    def decide(self, usecase: str, day: dt.date, decision: str, reason: str) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(
                sa.update(DRIFT_HISTORY)
                .where(DRIFT_HISTORY.c.usecase == usecase, DRIFT_HISTORY.c.day == day)
                .values(decision=decision, decision_reason=reason)
            ).rowcount
        if updated != 1:
            raise LookupError(f"no drift history row for {usecase} {day} to record a decision on")

    def night(self, usecase: str, day: dt.date) -> NightSummary | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(DRIFT_HISTORY).where(
                    DRIFT_HISTORY.c.usecase == usecase, DRIFT_HISTORY.c.day == day
                )
            ).first()
        return NightSummary.from_row(row) if row is not None else None

    def nights(self, usecase: str, last: dt.date, count: int) -> list[NightSummary]:
        """The up to `count` most recent nights on or before `last`, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(DRIFT_HISTORY)
                .where(DRIFT_HISTORY.c.usecase == usecase, DRIFT_HISTORY.c.day <= last)
                .order_by(DRIFT_HISTORY.c.day.desc())
                .limit(count)
            ).all()
        return [NightSummary.from_row(r) for r in reversed(rows)]

    def last_fired(self, usecase: str, before: dt.date) -> dt.date | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.max(DRIFT_HISTORY.c.day)).where(
                    DRIFT_HISTORY.c.usecase == usecase,
                    DRIFT_HISTORY.c.day < before,
                    DRIFT_HISTORY.c.decision == FIRED,
                )
            ).scalar_one()

    def dispose(self) -> None:
        self.engine.dispose()


def exists(url: str) -> bool:
    """Whether the history database is there to read (a SQLite file not yet made is not):
    read-only commands say "nothing yet" on a fresh home instead of creating it."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return True
    return Path(parsed.database).exists()
