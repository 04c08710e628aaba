"""Nightly batch scoring: the champion (by alias, from the registry) scores a curated day.

Predictions are stored as a date partition that names the model version that made them;
a rerun of the night replaces it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from driftline import etl, registry, storage
from driftline.config import PREDICTION, Settings, UseCase

log = logging.getLogger(__name__)

MODEL_VERSION = "model_version"


class NoChampionError(RuntimeError):
    """The registered model has no `champion` yet: nothing can score."""


class MissingPartitionError(RuntimeError):
    """The night's curated partition does not exist (its ETL did not load it)."""


class ScoringError(RuntimeError):
    """The champion could not be loaded or could not score; the alias is left untouched."""


@dataclass(frozen=True)
class ScoredDay:
    day: dt.date
    model_version: str
    path: Path
    rows: int

    def as_dict(self) -> dict:
        return {
            "day": self.day.isoformat(),
            "model_version": self.model_version,
            "path": str(self.path),
            "rows": self.rows,
        }


def champion_version(usecase: UseCase, settings: Settings) -> str:
    name = usecase.training.registered_model
    version = registry.alias_version(settings, name, registry.CHAMPION)
    if version is None:
        raise NoChampionError(
            f"{name} has no champion yet: trigger {usecase.name}_training (or `driftline "
            "train`) first"
        )
    return version


def require_partition(usecase: UseCase, settings: Settings, day: dt.date) -> Path:
    """The night's curated partition, or a MissingPartitionError saying which ETL run to do."""
    partition = settings.partition_dir(usecase.name, day) / etl.PARTITION_FILE
    if not partition.exists():
        raise MissingPartitionError(
            f"no curated partition for {day} ({partition}): run {usecase.name}_etl for it"
        )
    return partition


def score_day(
    usecase: UseCase, settings: Settings, day: dt.date, loaded: tuple[str, object] | None = None
) -> ScoredDay:
    """Score the day's curated rows with the champion; write the predictions partition.

    `loaded`: (version, model) already in memory, used if that version is still the champion.
    """
    version = champion_version(usecase, settings)
    rows = pd.read_parquet(require_partition(usecase, settings, day))
    name = usecase.training.registered_model
    try:
        if loaded is not None and loaded[0] == version:
            model = loaded[1]
        else:
            model = registry.load_version(settings, name, version)
        scores = model.predict(rows[usecase.features.all]) if len(rows) else []
    except Exception as exc:
        raise ScoringError(
            f"{name} version {version} (champion) could not score {day}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    predictions = rows[[usecase.key, usecase.event_time, usecase.label.name]].assign(
        **{PREDICTION: pd.Series(scores, index=rows.index, dtype="float64"), MODEL_VERSION: version}
    )
    path = storage.write_parquet(
        predictions,
        settings.predictions_path(usecase.name, day),
        metadata={"day": day.isoformat(), "model_version": version, "rows": len(predictions)},
    )
    log.info(
        "%s %s: %d rows scored by %s version %s", usecase.name, day, len(predictions), name, version
    )
    return ScoredDay(day, version, path, len(predictions))
