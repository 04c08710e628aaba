"""Alerts: what each event an operator must hear about says, and the one way it is sent.

Sent through Airflow's apprise notifier provider (the hook reads the Airflow connection
`driftline_alerts`, conn type apprise, whose `config` holds one or more apprise URLs: a
webhook, mail, Slack, ...). Defined once: as `AIRFLOW_CONN_DRIFTLINE_ALERTS` in the
environment of every Airflow component and of the CLI, or in Airflow's metadata DB. Not
defined: no alert, no error. An alert that cannot be sent logs a warning and never fails
the task (or the command) that sends it.

The message builders are pure functions of plain data; the body's first line names the
event (`event: quarantine`), so a receiver can route on it. Airflow and apprise are imported
only when something is sent: DAG files import this module at parse time.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CONN_ID = "driftline_alerts"
CONN_ENV = "AIRFLOW_CONN_DRIFTLINE_ALERTS"
EXAMPLE_CONN = '{"conn_type": "apprise", "extra": {"config": {"path": "json://host:port/path"}}}'

# The events (the body's first line): one alert per event
TASK_FAILED = "task_failed"
QUARANTINE = "quarantine"
DRIFT_FIRED = "drift_fired"
PROMOTED = "gate_promoted"
KEPT = "gate_kept_champion"
ROLLBACK = "rollback"
DEADLINE_MISSED = "deadline_missed"

MAX_ERROR_CHARS = 2000  # of an exception's message in an alert (a traceback is in the log)


@dataclass(frozen=True)
class Alert:
    """One message: title, plain-text body, and apprise's notify type (info, success,
    warning, failure) so that receivers can colour it."""

    event: str
    title: str
    body: str
    level: str = "info"


def _alert(event: str, title: str, level: str, facts: Iterable[tuple[str, Any]]) -> Alert:
    """Body: `event: ...` then one `name: value` line per fact that has a value."""
    lines = [f"event: {event}"]
    for name, value in facts:
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, (list, tuple)):
            lines.append(f"{name}:")
            lines.extend(f"  - {item}" for item in value)
        else:
            lines.append(f"{name}: {value}")
    return Alert(event=event, title=f"[driftline] {title}", body="\n".join(lines), level=level)


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


# --- the events --------------------------------------------------------------------------


def task_failed(
    dag_id: str,
    task_id: str,
    run_id: str,
    try_number: int | None,
    max_tries: int | None,
    error: str,
    log_url: str | None = None,
) -> Alert:
    """A task failed for good: its last try (retries are not alerted)."""
    first_line = error.strip().splitlines()[0] if error.strip() else "no message"
    tries = f"{try_number} of {max_tries + 1}" if try_number and max_tries is not None else None
    return _alert(
        TASK_FAILED,
        f"{dag_id}.{task_id} failed: {first_line[:150]}",
        "failure",
        [
            ("dag", dag_id),
            ("task", task_id),
            ("run", run_id),
            ("try", tries),
            ("error", error.strip()[:MAX_ERROR_CHARS]),
            ("log", log_url),
        ],
    )


def quarantined(
    dag_id: str,
    task_id: str,
    run_id: str,
    message: str,
    failed_expectations: list[str],
    quarantine: str | None,
    log_url: str | None = None,
) -> Alert:
    """A batch refused by its checks and set aside: the expectations it failed, where it is."""
    headline = message.strip().splitlines()[0] if message.strip() else "batch refused"
    return _alert(
        QUARANTINE,
        f"{dag_id}: batch quarantined: {headline[:150]}",
        "failure",
        [
            ("dag", dag_id),
            ("task", task_id),
            ("run", run_id),
            ("refused", headline),
            ("failed expectations", failed_expectations),
            ("quarantine", quarantine),
            ("log", log_url),
        ],
    )


def drift_fired(usecase: str, run_id: str, retraining: Mapping[str, Any]) -> Alert:
    """The drift rule held: the evidence, and the retraining it starts (the sensor's conf)."""
    evidence = retraining.get("evidence") or {}
    day = evidence.get("day", "?")
    share = evidence.get("drift_share")
    return _alert(
        DRIFT_FIRED,
        f"{usecase}: drift on {day}, retraining {retraining.get('window_end')} "
        f"({evidence.get('rule', 'rule held')})"[:200],
        "warning",
        [
            ("use-case", usecase),
            ("night", day),
            ("run", run_id),
            ("rule", evidence.get("rule")),
            ("fired by", evidence.get("fired_by")),
            ("drift share", _score(share) if share is not None else None),
            ("drifted columns", evidence.get("drifted_columns")),
            ("roc_auc", evidence.get("roc_auc")),
            ("champion holdout roc_auc", evidence.get("champion_holdout_roc_auc")),
            ("log_loss", evidence.get("log_loss")),
            ("judged model version", evidence.get("model_version")),
            ("drift basis", evidence.get("drift_basis")),
            ("quality basis", evidence.get("quality_basis")),
            ("report", evidence.get("report")),
            ("reports", evidence.get("reports")),
            (
                "retraining window",
                f"{retraining.get('window_days')} days ending {retraining.get('window_end')}",
            ),
        ],
    )


def gate_decided(
    usecase: str,
    model: str,
    run_id: str,
    decided: Mapping[str, Any],
    metric: str,
    trigger_reason: str | None = None,
) -> Alert:
    """The gate's decision (training.gate's result): promoted, or the champion kept; both
    scores on the primary metric."""
    version = decided["version"]
    before = decided.get("champion_before")
    challenger = _score(decided.get(f"challenger_{metric}"))
    champion = _score(decided.get(f"champion_{metric}"))
    if decided["promoted"]:
        event, level = PROMOTED, "success"
        headline = f"{model} version {version} promoted to champion" + (
            f" (was version {before})" if before else ""
        )
    else:
        event, level = KEPT, "warning"
        headline = f"{model}: champion version {before} kept; challenger version {version} " \
                   "not promoted"
    return _alert(
        event,
        f"{usecase}: {headline}",
        level,
        [
            ("use-case", usecase),
            ("model", model),
            ("run", run_id),
            ("decision", "promoted" if decided["promoted"] else "kept the champion"),
            ("challenger", f"version {version}: {metric} {challenger}"),
            (
                "champion",
                f"version {before}: {metric} {champion}" if before else "none before this one",
            ),
            ("champion now", decided.get("champion_after")),
            ("reason", decided.get("reason")),
            ("trigger reason", trigger_reason),
        ],
    )


def rolled_back(
    usecase: str, model: str, demoted: str, restored: str, reason: str, by: str | None
) -> Alert:
    """The champion was moved back by hand (CLI or UI)."""
    return _alert(
        ROLLBACK,
        f"{usecase}: {model} rolled back from version {demoted} to version {restored}",
        "warning",
        [
            ("use-case", usecase),
            ("model", model),
            ("from version", demoted),
            ("to version", restored),
            ("reason", reason),
            ("by", by),
        ],
    )


def deadline_missed(
    dag_id: str,
    run_id: str,
    hours: float,
    deadline_time: str | None,
    state: str | None,
    queued_at: str | None = None,
    url: str | None = None,
) -> Alert:
    """A night's run was not finished (successfully) within its deadline."""
    return _alert(
        DEADLINE_MISSED,
        f"{dag_id}: night {run_id} not finished {hours:g} h after it was queued",
        "failure",
        [
            ("dag", dag_id),
            ("run", run_id),
            ("state", state),
            ("queued at", queued_at),
            ("deadline", deadline_time),
            ("allowed", f"{hours:g} h (the use-case's night_deadline_hours)"),
            ("run page", url),
        ],
    )


# --- from an Airflow task's failure ------------------------------------------------------


def rejection_of(error: BaseException | None) -> BaseException | None:
    """The BatchRejectedError behind a task's failure, if it was one (a quarantine). Without
    driftline.ingest.validation imported, the task cannot have raised one: it is not imported
    here."""
    validation = sys.modules.get("driftline.ingest.validation")
    seen: set[int] = set()
    while validation is not None and error is not None and id(error) not in seen:
        if isinstance(error, validation.BatchRejectedError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def failed_expectations(rejection: BaseException) -> list[str]:
    """What a refused batch failed: each failed expectation with its observed value."""
    outcome = getattr(rejection, "outcome", None)
    if outcome is not None:
        return [failure.describe() for failure in outcome.failures]
    # refused at the source or not buildable: the message lists them as "  - ..." lines
    listed = [line.strip()[2:] for line in str(rejection).splitlines() if line.startswith("  - ")]
    return listed or [str(rejection).strip().splitlines()[0]]


def alert_for_failure(context: Mapping[str, Any]) -> Alert:
    """The one alert of a task's final failure: the quarantine (with its failed
    expectations) when the task refused a batch, else the failure itself."""
    ti = context["ti"]
    error = context.get("exception")
    log_url = getattr(ti, "log_url", None)
    rejection = rejection_of(error) if isinstance(error, BaseException) else None
    if rejection is not None:
        quarantine = getattr(rejection, "quarantine", None)
        return quarantined(
            ti.dag_id,
            ti.task_id,
            ti.run_id,
            str(rejection),
            failed_expectations(rejection),
            str(quarantine) if quarantine else None,
            log_url,
        )
    return task_failed(
        ti.dag_id,
        ti.task_id,
        ti.run_id,
        getattr(ti, "try_number", None),
        getattr(ti, "max_tries", None),
        f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error),
        log_url,
    )


def on_task_failure(context: Mapping[str, Any]) -> None:
    """Every driftline task's `on_failure_callback` (Airflow calls it after the last try
    only; a retry calls on_retry_callback, which alerts nobody)."""
    try:
        alert = alert_for_failure(context)
    except Exception:  # a broken alert must not hide the task's own failure
        log.warning("could not build the failure alert", exc_info=True)
        return
    send(alert)


def on_retraining_started(usecase: str) -> Callable[[Mapping[str, Any]], None]:
    """The `on_success_callback` of a monitoring DAG's trigger task: the drift alert, with
    the sensor's evidence, once the retraining run exists. Sent from the task that started
    it, not from the sensor: a sensor retried after deciding would alert twice, while a
    rerun of the night (or a retry after the run was made) skips the trigger task and so
    sends nothing."""

    def callback(context: Mapping[str, Any]) -> None:
        try:
            conf = context["ti"].xcom_pull(task_ids="drift_sensor") or {}
            alert = drift_fired(usecase, context["run_id"], conf)
        except Exception:
            log.warning("could not build the drift alert", exc_info=True)
            return
        send(alert)

    return callback


# --- from the triggerer, when a night misses its deadline --------------------------------


async def on_night_deadline_missed(
    hours: float, context: Mapping[str, Any] | None = None
) -> bool:
    """The DeadlineAlert callback of the nightly DAGs (run by Airflow's triggerer, with a
    context holding the DAG run and the deadline)."""
    try:
        run = (context or {}).get("dag_run") or {}
        deadline = (context or {}).get("deadline") or {}
        dag_id, run_id = run.get("dag_id", "?"), run.get("dag_run_id") or run.get("run_id", "?")
        alert = deadline_missed(
            dag_id,
            run_id,
            hours,
            _text(deadline.get("deadline_time")),
            run.get("state"),
            _text(run.get("queued_at")),
            _run_url(dag_id, run_id),
        )
    except Exception:
        log.warning("could not build the deadline alert", exc_info=True)
        return False
    return await send_async(alert)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _run_url(dag_id: str, run_id: str) -> str | None:
    try:
        from urllib.parse import quote

        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
        return f"{base}/dags/{dag_id}/runs/{quote(run_id)}"
    except Exception:
        return None


# --- sending -----------------------------------------------------------------------------


class NotConfigured(LookupError):
    """No Airflow connection `driftline_alerts`: alerts are off."""


def _connection(conn_id: str):
    """The Airflow connection, wherever it is defined (environment, secrets backend,
    metadata DB), from a task, the CLI or any process with Airflow's configuration."""
    from airflow.providers.common.compat.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:
        if type(exc).__name__ == "AirflowNotFoundException":
            raise NotConfigured(conn_id) from exc
        raise


async def _connection_async(conn_id: str):
    """As `_connection`, from the triggerer's event loop."""
    from airflow.providers.common.compat.connection import get_async_connection

    try:
        return await get_async_connection(conn_id)
    except Exception as exc:
        if type(exc).__name__ == "AirflowNotFoundException":
            raise NotConfigured(conn_id) from exc
        raise


def _targets(connection, conn_id: str):
    """An apprise object holding the connection's URLs, as Airflow's AppriseHook reads them."""
    import apprise
    from airflow.providers.apprise.hooks.apprise import AppriseHook

    targets = apprise.Apprise()
    AppriseHook(apprise_conn_id=conn_id).set_config_from_conn(connection, targets)
    if len(targets) == 0:
        raise ValueError(f"connection {conn_id}: no apprise URL in its config is usable")
    return targets


def send(alert: Alert, conn_id: str = CONN_ID) -> bool:
    """Send one alert; True when every target took it. False, with a warning (or, when
    alerts are off, a debug line), otherwise: never raises."""
    try:
        targets = _targets(_connection(conn_id), conn_id)
        sent = bool(targets.notify(body=alert.body, title=alert.title, notify_type=alert.level))
    except Exception as exc:
        return _not_sent(alert, conn_id, exc)
    return _sent(alert, sent)


async def send_async(alert: Alert, conn_id: str = CONN_ID) -> bool:
    """`send`, from an event loop (the triggerer)."""
    try:
        targets = _targets(await _connection_async(conn_id), conn_id)
        sent = bool(
            await targets.async_notify(body=alert.body, title=alert.title, notify_type=alert.level)
        )
    except Exception as exc:
        return _not_sent(alert, conn_id, exc)
    return _sent(alert, sent)


def _not_sent(alert: Alert, conn_id: str, exc: Exception) -> bool:
    if isinstance(exc, NotConfigured):
        log.debug("alerts are off (no connection %s): %s", conn_id, alert.title)
    else:
        log.warning("alert not sent (%s): %s: %s", alert.title, type(exc).__name__, exc)
    return False


def _sent(alert: Alert, sent: bool) -> bool:
    if sent:
        log.info("alert sent: %s", alert.title)
    else:
        log.warning("alert not sent: %s (a target refused it or is unreachable)", alert.title)
    return sent


def alerts_status(conn_id: str = CONN_ID) -> str:
    """One line for `make up` (after "Alerts: "): on and where they go (secrets masked), off,
    or not working and why."""
    try:
        targets = _targets(_connection(conn_id), conn_id)
    except NotConfigured:
        return f"off (no Airflow connection {conn_id}: set {CONN_ENV}, README: Alerts)"
    except Exception as exc:
        return f"NOT WORKING (Airflow connection {conn_id}: {type(exc).__name__}: {exc})"
    where = ", ".join(target.url(privacy=True).split("?")[0] for target in targets)
    return f"on -> {where} (Airflow connection {conn_id})"
