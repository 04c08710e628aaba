"""Scoring ahead: each night the champion scores the rows whose outcome does not exist yet.

With `scoring.ahead: next_day` (the default) those are the next day's rows, read from the
source with their features, which are known before the day starts (a schedule); with
`scoring.ahead: loaded_day`, the rows of the day just loaded. The rows pass the features-only
suite first (refused rows are quarantined as the ETL does), then their predictions are
published (driftline.serving.predictions) with the version that made them and when; a rerun
of the night replaces them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from driftline.config import PREDICTION, Settings, UseCase
from driftline.ingest import etl, validation
from driftline.serving import predictions
from driftline.serving.predictions import MODEL_VERSION, SCORED_AT
from driftline.training import registry

log = logging.getLogger(__name__)


class NoChampionError(RuntimeError):
    """The registered model has no `champion` yet: nothing can score."""


class MissingPartitionError(RuntimeError):
    """The night's curated partition does not exist (its ETL did not load it)."""


class ScoringError(RuntimeError):
    """The champion could not be loaded or could not score; the alias is left untouched."""


@dataclass(frozen=True)
class ScoredDay:
    """What a night scored ahead: `day`'s rows, by `model_version` (no path: nothing to score
    because the use-case ends before `day`)."""

    night: dt.date
    day: dt.date
    model_version: str
    path: Path | None
    rows: int

    def as_dict(self) -> dict:
        return {
            "night": self.night.isoformat(),
            "day": self.day.isoformat(),
            "model_version": self.model_version,
            "path": str(self.path) if self.path else None,
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


@dataclass(frozen=True)
class LoadedVersion:
    """A registered version in memory and its number: what scores rows, and what each of its
    predictions records as the version that made it."""

    version: str
    model: Any  # an MLflow PyFuncModel


def load_version(
    usecase: UseCase, settings: Settings, version: str, loaded: LoadedVersion | None = None
) -> LoadedVersion:
    """`version` of the use-case's registered model, in memory: `loaded` itself when it is
    that version (a loop over nights loads each champion once)."""
    if loaded is not None and loaded.version == version:
        return loaded
    name = usecase.training.registered_model
    return LoadedVersion(version, registry.load_version(settings, name, version))


def score_rows(usecase: UseCase, loaded: LoadedVersion, rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with the version's prediction of each, its number and when: the layout the
    predictions store publishes."""
    scores = loaded.model.predict(rows[usecase.features.all]) if len(rows) else []
    return rows.assign(
        **{
            PREDICTION: pd.Series(scores, index=rows.index, dtype="float64"),
            MODEL_VERSION: loaded.version,
            SCORED_AT: pd.Timestamp.now(tz="UTC"),
        }
    )


def require_partition(usecase: UseCase, settings: Settings, day: dt.date) -> Path:
    """The night's curated partition, or a MissingPartitionError saying which ETL run to do."""
    partition = settings.partition_dir(usecase.name, day) / etl.PARTITION_FILE
    if not partition.exists():
        raise MissingPartitionError(
            f"no curated partition for {day} ({partition}): run {usecase.name}_etl for it"
        )
    return partition


def features_ahead(usecase: UseCase, settings: Settings, day: dt.date) -> pd.DataFrame:
    """`day`'s rows as they can be known before their outcome: key, time and features, having
    passed the features-only suite (a refusal is quarantined under scoring-checks/ and raised
    as validation.BatchRejectedError)."""
    records = validation.Records.of_scoring(usecase, settings, day)
    source_counts = None
    if usecase.scoring.ahead == "loaded_day":
        rows = pd.read_parquet(require_partition(usecase, settings, day))
    else:
        window = etl.BatchWindow.for_day(day, usecase)
        tables, counts = etl.extract_day(
            usecase, settings, settings.source_url(usecase), window, records
        )
        rows = etl.build_batch(usecase, settings, day, tables, records)
        source_counts = counts.as_dict()
    features = rows[usecase.scoring_columns]
    validation.gate_batch(
        features,
        usecase,
        settings,
        day,
        source_counts,
        records=records,
        suite_json=validation.features_suite_json(usecase, settings),
    )
    return features


def score_ahead(
    usecase: UseCase,
    settings: Settings,
    night: dt.date,
    loaded: LoadedVersion | None = None,
) -> ScoredDay:
    """The night's scoring: the champion scores `usecase.scored_day(night)` and the
    predictions are published (replacing an earlier run's of the same day).

    `loaded`: a version already in memory, used if it is still the champion.
    """
    version = champion_version(usecase, settings)
    day = usecase.scored_day(night)
    if usecase.end_date is not None and day > usecase.end_date:
        log.info("%s %s: nothing to score ahead: %s is after end_date", usecase.name, night, day)
        return ScoredDay(night, day, version, None, 0)
    features = features_ahead(usecase, settings, day)
    name = usecase.training.registered_model
    try:
        scored = score_rows(usecase, load_version(usecase, settings, version, loaded), features)
    except Exception as exc:
        raise ScoringError(
            f"{name} version {version} (champion) could not score {day}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    path = predictions.publish(usecase, settings, day, scored)
    log.info(
        "%s night %s: %d rows of %s scored ahead by %s version %s; published to %s and %s",
        usecase.name,
        night,
        len(scored),
        day,
        name,
        version,
        path,
        etl.masked_url(settings.predictions_url),
    )
    return ScoredDay(night, day, version, path, len(scored))
