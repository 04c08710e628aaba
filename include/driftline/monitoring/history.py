"""The drift history: one row per use-case and night, the ledger an operator reads.

Each night's summary (model version, reference hash, drift share, drifted columns, quality,
and which days and rows each figure judged) and the sensor's decision live in one SQL table.
Writing a night replaces its row in one transaction, so a rerun of the same night never
duplicates it. Columns added after a table was created are added on open (nullable: the
rows recorded before them say "unknown").
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from driftline.monitoring.judged_rows import Days

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
    # added with the judged rows (nullable: older rows do not know them)
    sa.Column("drift_first_day", sa.Date),  # feature drift: drift_first_day..drift_last_day
    # the newest day scored (the day after the night when scoring ahead); None: the night
    sa.Column("drift_last_day", sa.Date),
    # the days after the model's window end (of the same trailing window): quality and the
    # prediction's drift judge their rows only
    sa.Column("quality_first_day", sa.Date),
    sa.Column("quality_last_day", sa.Date),
    sa.Column("quality_rows", sa.Integer),  # their labelled rows
    sa.Column("quality_judged", sa.Boolean),  # False: too few of them, no quality figure
    sa.Column("prediction_rows", sa.Integer),  # their scored rows: the prediction's drift
    sa.Column("prediction_reference", sa.String(32)),  # PREDICTION_REFERENCE_* below
    # added with the evidence links: what fired, the training it started, what its gate said
    sa.Column("fired_by", sa.Text),  # JSON list of drift_rule.*_RULE
    sa.Column("training_run", sa.Text),  # "<dag_id>/<run_id>" of the training it started
    sa.Column("training_mlflow_run", sa.String(64)),
    sa.Column("training_decision", sa.Text),  # "version N promoted|not promoted: reason"
    # added with predictions judged on delayed labels: how many of the judged predictions
    # (quality_first_day..quality_last_day) each version made, as a JSON object
    sa.Column("quality_versions", sa.Text),
)

TRAINING_LINKS = ("training_run", "training_mlflow_run", "training_decision")

# What the prediction's drift was judged against.
PREDICTION_REFERENCE_HOLDOUT = "holdout"  # the version's predictions on its holdout
PREDICTION_REFERENCE_TRAINING = "training"  # in-sample: a version trained before holdout ones


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
    drift_first_day: dt.date | None = None
    drift_last_day: dt.date | None = None
    quality_first_day: dt.date | None = None
    quality_last_day: dt.date | None = None
    quality_rows: int | None = None
    quality_judged: bool | None = None
    prediction_rows: int | None = None
    prediction_reference: str | None = None
    fired_by: list[str] = field(default_factory=list)
    training_run: str | None = None
    training_mlflow_run: str | None = None
    training_decision: str | None = None
    quality_versions: dict[str, int] = field(default_factory=dict)

    @property
    def drift_days(self) -> Days | None:
        if self.drift_first_day is None:
            return None
        return Days(self.drift_first_day, self.drift_last_day or self.day)

    @property
    def quality_days(self) -> Days | None:
        if self.quality_first_day is None or self.quality_last_day is None:
            return None
        return Days(self.quality_first_day, self.quality_last_day)

    def drift_basis(self) -> str:
        """Which days and rows the drift figures judged, and the prediction's reference."""
        if self.drift_days is None:
            return f"drift on {self.rows:,} rows (days not recorded)"
        features = f"drift on {self.drift_days} ({self.rows:,} rows)"
        if not self.prediction_rows:
            return (
                f"{features}; the prediction not judged: version {self.model_version} made "
                "none of them after its training window"
            )
        against = {
            PREDICTION_REFERENCE_HOLDOUT: "the holdout's predictions",
            PREDICTION_REFERENCE_TRAINING: "in-sample training predictions (older version)",
        }.get(self.prediction_reference or "", "an unrecorded reference")
        return (
            f"{features}; the prediction on the {self.prediction_rows:,} of them version "
            f"{self.model_version} made, vs {against}"
        )

    def quality_basis(self) -> str:
        """Which days and labelled rows the quality figures judged, or why there are none."""
        if self.quality_judged is None:
            return "quality rows not recorded"
        days = self.quality_days
        if days is None:
            return "quality not judged yet: no stored prediction of a day whose labels are in"
        made = ", ".join(f"v{v}: {n:,}" for v, n in sorted(self.quality_versions.items()))
        rows = f"{self.quality_rows or 0:,} labelled predictions of {days}"
        rows += f" (made ahead by {made})" if made else ""
        return f"quality on {rows}" if self.quality_judged else f"quality not judged yet: {rows}"

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["drifted_columns"] = json.dumps(self.drifted_columns)
        row["fired_by"] = json.dumps(self.fired_by)
        row["evidently_runs"] = json.dumps(self.evidently_runs)
        row["quality_versions"] = json.dumps(self.quality_versions)
        return row

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (days as ISO text)."""
        return {
            key: value.isoformat() if isinstance(value, dt.date) else value
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_row(cls, row: sa.Row | dict) -> NightSummary:
        data = dict(row._mapping) if isinstance(row, sa.Row) else dict(row)
        data["drifted_columns"] = json.loads(data["drifted_columns"])
        data["fired_by"] = json.loads(data.get("fired_by") or "[]")
        data["evidently_runs"] = json.loads(data["evidently_runs"])
        data["quality_versions"] = json.loads(data.get("quality_versions") or "{}")
        return cls(**data)


class DriftHistory:
    def __init__(self, url: str):
        self.engine = sa.create_engine(url)
        METADATA.create_all(self.engine)
        add_missing_columns(self.engine, DRIFT_HISTORY)

    def record(self, night: NightSummary) -> None:
        """Replace the night's row (delete + insert in one transaction: portable, no dups).

        The training a fired night started stays linked: a rerun of the night starts none.
        """
        kept = [DRIFT_HISTORY.c[name] for name in TRAINING_LINKS]
        with self.engine.begin() as conn:
            earlier = conn.execute(
                sa.select(*kept).where(
                    DRIFT_HISTORY.c.usecase == night.usecase, DRIFT_HISTORY.c.day == night.day
                )
            ).first()
            row = night.as_row()
            if earlier is not None:
                row.update({k: v for k, v in earlier._mapping.items() if row.get(k) is None})
            conn.execute(
                sa.delete(DRIFT_HISTORY).where(
                    DRIFT_HISTORY.c.usecase == night.usecase, DRIFT_HISTORY.c.day == night.day
                )
            )
            conn.execute(sa.insert(DRIFT_HISTORY).values(**row))

    def decide(
        self,
        usecase: str,
        day: dt.date,
        decision: str,
        reason: str,
        fired_by: list[str] | tuple[str, ...] = (),
    ) -> None:
        """The sensor's decision on the night, and the rules that held."""
        self._update(
            usecase,
            day,
            decision=decision,
            decision_reason=reason,
            fired_by=json.dumps(list(fired_by)),
        )

    def link_training(self, usecase: str, day: dt.date, run: str, mlflow_run: str) -> None:
        """The training the fired night started (its DAG run or CLI run, its MLflow run)."""
        self._update(usecase, day, training_run=run, training_mlflow_run=mlflow_run)

    def link_decision(self, usecase: str, day: dt.date, decision: str) -> None:
        """What the gate of that training decided."""
        self._update(usecase, day, training_decision=decision)

    def _update(self, usecase: str, day: dt.date, **values: Any) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(
                sa.update(DRIFT_HISTORY)
                .where(DRIFT_HISTORY.c.usecase == usecase, DRIFT_HISTORY.c.day == day)
                .values(**values)
            ).rowcount
        if updated != 1:
            raise LookupError(f"no drift history row for {usecase} {day} to set {sorted(values)}")

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


def add_missing_columns(engine: sa.Engine, table: sa.Table) -> list[str]:
    """Add the table's nullable columns that an older database lacks; returns their names.

    `create_all` creates missing tables only, never columns. A second process opening the
    same database at the same time may add a column first: that is not an error.
    """
    present = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
    added = []
    for column in table.columns:
        if column.name in present:
            continue
        if not column.nullable:
            raise RuntimeError(f"{table.name}.{column.name} is missing and cannot be added empty")
        spec = sa.schema.CreateColumn(column).compile(dialect=engine.dialect)
        try:
            with engine.begin() as conn:
                conn.execute(sa.DDL(f"ALTER TABLE %(table)s ADD COLUMN {spec}").against(table))
        except sa.exc.DBAPIError:
            inspector = sa.inspect(engine)
            if column.name not in {c["name"] for c in inspector.get_columns(table.name)}:
                raise
        added.append(column.name)
    return added
