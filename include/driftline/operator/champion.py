"""The champion at a glance: what each alias of a use-case's model points at, since when and
why, the last gate decisions, and the version the scoring server answers with now.

Read from the MLflow registry only (the tags `record_decision` and `rollback` write), so the
page, `driftline status` and the registry cannot disagree. MLflow keeps no history of alias
moves: "since" is the latest event that explains the alias (the version's own gate at its
registration, or a rollback's stamp), which is exact because a version can only be promoted
by its own gate, and only rollbacks move aliases afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from driftline.config import Settings, UseCase
from driftline.operator import links

ALIASES = ("champion", "previous", "challenger")
DECISIONS_SHOWN = 6
SCORING_TIMEOUT_S = 2.0
REASON_MAX = 500


@dataclass(frozen=True)
class Version:
    """One registered version as an operator judges it."""

    version: str
    registered: dt.datetime
    window: str | None
    holdout: str | None
    trigger_reason: str | None
    airflow_run: str | None  # "<dag_id>/<run_id>"
    gate_decision: str | None  # "promoted", "not promoted", None before its gate
    gate_reason: str | None
    holdout_score: float | None  # the gate's primary metric on the version's holdout
    champion_score: float | None  # the champion's on the same holdout, at the gate
    gate_champion: str | None  # the version it was compared with
    url: str  # its MLflow page ('' without a browsable MLflow)


@dataclass(frozen=True)
class Aliased:
    """A version holding an alias, with when and why it got it."""

    alias: str
    version: Version
    since: dt.datetime | None
    why: str


@dataclass(frozen=True)
class Served:
    """What the scoring server says it answers with (`GET /version`)."""

    url: str
    version: str | None
    error: str | None = None


@dataclass(frozen=True)
class ChampionView:
    usecase: str
    model: str
    metric: str
    aliased: dict[str, Aliased | None]
    decisions: list[Version]  # newest first
    served: Served | None  # None: no scoring server configured
    warnings: list[str] = field(default_factory=list)

    @property
    def can_roll_back(self) -> bool:
        """A rollback needs a champion and a previous version (registry.rollback)."""
        return self.aliased.get("champion") is not None and self.aliased.get("previous") is not None


def gather(
    settings: Settings,
    usecase: UseCase,
    *,
    decisions: int = DECISIONS_SHOWN,
    scoring_url: str | None = None,
) -> ChampionView:
    """Everything the champion page shows, read from the registry (and the scoring server)."""
    from driftline.training import registry

    if usecase.training is None:
        raise ValueError(f"use-case {usecase.name!r} trains no model: it has no champion")
    name = usecase.training.registered_model
    metric = usecase.training.gate.primary_metric
    client = registry.client(settings)
    found = registry._versions(client, name)
    versions = sorted(
        (_version(v, metric) for v in found), key=lambda v: int(v.version), reverse=True
    )
    tags = {str(v.version): dict(v.tags) for v in found}
    by_number = {v.version: v for v in versions}
    aliased: dict[str, Aliased | None] = {}
    for alias in ALIASES:  # a version search does not say its aliases: ask for each
        number = registry.alias_version(settings, name, alias)
        if number is None or number not in by_number:
            aliased[alias] = None
            continue
        scored = _with_run_score(settings, usecase, by_number[number], metric)
        since, why = _why(alias, scored, tags[number], versions)
        aliased[alias] = Aliased(alias, scored, since, why)
    gated = [v for v in versions if v.gate_decision][:decisions]
    return ChampionView(
        usecase=usecase.name,
        model=name,
        metric=metric,
        aliased=aliased,
        decisions=gated,
        served=served(scoring_url, name) if scoring_url else None,
    )


def roll_back(
    settings: Settings, usecase: UseCase, reason: str, by: str | None = None
) -> tuple[str, str]:
    """The UI's rollback: the very call `driftline rollback` makes (tags, alert), so both
    record it alike; `by` names the Airflow user. Returns (demoted, restored)."""
    from driftline.training import registry

    reason = " ".join(reason.split())
    if not reason:
        raise ValueError("a rollback needs a reason")
    if len(reason) > REASON_MAX:
        raise ValueError(f"the reason is longer than {REASON_MAX} characters")
    return registry.rollback(settings, usecase, reason, by=by)


def served(url: str, model: str) -> Served:
    """The version the scoring server answers with now; an error instead of raising, since
    the page is about the registry and must show even when the server is down."""
    import httpx

    try:
        answer = httpx.get(f"{url.rstrip('/')}/version", timeout=SCORING_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Served(url, None, f"not reachable ({type(exc).__name__})")
    if answer.status_code != 200:
        detail = _detail(answer)
        return Served(url, None, f"answers {answer.status_code}: {detail}")
    body = answer.json()
    if body.get("model") != model:
        return Served(url, None, f"serves {body.get('model')!r}, not {model!r}")
    return Served(url, str(body.get("version")))


def paused_with_queued_runs(dag_ids: list[str]) -> dict[str, int]:
    """Paused DAGs among `dag_ids` with queued runs, and how many: nothing waits unseen.

    Reads Airflow's metadata DB, so only inside an Airflow process (the api-server)."""
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import func, select

    with create_session() as session:
        rows = session.execute(
            select(DagRun.dag_id, func.count())
            .join(DagModel, DagModel.dag_id == DagRun.dag_id)
            .where(
                DagRun.dag_id.in_(dag_ids),
                DagModel.is_paused.is_(True),
                DagRun.state == DagRunState.QUEUED,
            )
            .group_by(DagRun.dag_id)
        ).all()
    return {dag_id: int(count) for dag_id, count in rows}


def _version(found: Any, metric: str) -> Version:
    tags = dict(found.tags)
    scores = _json(tags.get("gate.scores"))
    run = tags.get("airflow_run_id")
    return Version(
        version=str(found.version),
        registered=_ms(found.creation_timestamp),
        window=tags.get("window"),
        holdout=tags.get("holdout"),
        trigger_reason=tags.get("trigger_reason"),
        airflow_run=f"{tags.get('airflow_dag_id')}/{run}" if run else None,
        gate_decision=tags.get("gate.decision"),
        gate_reason=tags.get("gate.reason"),
        holdout_score=_score(scores.get("challenger"), metric),
        champion_score=_score(scores.get("champion"), metric),
        gate_champion=tags.get("gate.champion_version"),
        url=links.model_version_url(found.name, str(found.version)),
    )


def _with_run_score(settings: Settings, usecase: UseCase, version: Version, metric: str) -> Version:
    """The holdout score from the version's run when its gate has not scored it yet."""
    if version.holdout_score is not None:
        return version
    from dataclasses import replace

    from driftline.training import registry

    logged = registry.version_info(settings, usecase, version.version)["metrics"].get(metric)
    return replace(version, holdout_score=logged)


def _why(
    alias: str, version: Version, tags: dict[str, str], versions: list[Version]
) -> tuple[dt.datetime | None, str]:
    """When and why `version` holds `alias` (see the module's docstring)."""
    restored = _stamped(tags.get("rollback.restored"))
    demoted = _stamped(tags.get("rollback.demoted"))
    from driftline.training.registry import UNKNOWN_USER

    who = tags.get("rollback.by", UNKNOWN_USER)
    by = "" if who == UNKNOWN_USER else f" (by {who})"
    if alias == "champion":
        if restored and (demoted is None or restored[0] >= demoted[0]):
            return restored[0], f"restored by a rollback: {restored[1]}{by}"
        return version.registered, f"promoted by its gate: {version.gate_reason or '-'}"
    if alias == "previous":
        replaced = [
            v
            for v in versions
            if v.gate_champion == version.version and v.gate_decision == "promoted"
        ]
        events: list[tuple[dt.datetime, str]] = []
        if replaced:
            newest = max(replaced, key=lambda v: v.registered)
            events.append((newest.registered, f"replaced by version {newest.version}'s promotion"))
        if demoted:
            events.append((demoted[0], f"demoted by a rollback: {demoted[1]}{by}"))
        if not events:
            return None, "-"
        return max(events, key=lambda e: e[0])
    gate = version.gate_decision or "gate not decided yet"
    return version.registered, f"registered ({version.trigger_reason or '-'}); {gate}"


def _stamped(value: str | None) -> tuple[dt.datetime, str] | None:
    """`<ISO time>: <reason>` as registry.rollback writes it."""
    if not value:
        return None
    stamp, _, reason = value.partition(": ")
    try:
        return dt.datetime.fromisoformat(stamp), reason
    except ValueError:
        return None


def _json(value: str | None) -> dict[str, Any]:
    try:
        loaded = json.loads(value) if value else {}
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _score(scores: Any, metric: str) -> float | None:
    if not isinstance(scores, dict):
        return None
    value = (scores.get("overall") or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def _ms(millis: int | None) -> dt.datetime:
    return dt.datetime.fromtimestamp((millis or 0) / 1000, tz=dt.UTC)


def _detail(answer: Any) -> str:
    try:
        return str(answer.json().get("detail"))[:200]
    except ValueError:
        return answer.text[:200]
