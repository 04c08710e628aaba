"""`DriftSensor`: decides, from the drift history, whether a night's drift is worth a retraining.

It waits (deferred, in the triggerer: no worker slot held) until the night's report is in the
drift history (not at all when it is there already), then judges the use-case's drift rule
(k of the last n nights at or above a drift share, or a quality drop; never inside the
cool-down, never after a failed validation) and records the decision in the history. When
the rule holds it returns the conf of the retraining run, with the evidence (the DAG's
trigger task starts that run and sends the drift alert); otherwise it skips, so the trigger
downstream is skipped too and the run stays green.

Lives in plugins/ (on sys.path of every Airflow component) so that the triggerer can import
the trigger. The work is done by `driftline.monitoring.nightly`; this module only adapts it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSkipException
from airflow.triggers.base import BaseTrigger, TriggerEvent


class DriftReportTrigger(BaseTrigger):
    """Fires once the night's report is recorded in the drift history (polled off the loop).

    Its kwargs hold no secret: the history's URL is read from the triggerer's environment.
    """

    def __init__(self, usecase: str, day: str, poll_seconds: float = 30.0):
        super().__init__()
        self.usecase = usecase
        self.day = day
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"usecase": self.usecase, "day": self.day, "poll_seconds": self.poll_seconds},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            if await asyncio.to_thread(_recorded, self.usecase, self.day):
                yield TriggerEvent({"status": "recorded", "usecase": self.usecase, "day": self.day})
                return
            self.log.info("no drift report for %s %s yet", self.usecase, self.day)
            await asyncio.sleep(self.poll_seconds)


def _recorded(usecase_name: str, day: str) -> bool:
    from driftline.config import Settings
    from driftline.monitoring import nightly as monitoring

    return monitoring.night_recorded(Settings.from_env(), usecase_name, dt.date.fromisoformat(day))


class DriftSensor(BaseSensorOperator):
    """Judge the night's drift; return the retraining conf, or skip.

    :param usecase: use-case name (its config holds the rule: `monitoring.rule`)
    :param day: the night, YYYY-MM-DD (templated)
    :param deferrable: wait in the triggerer instead of poking from a worker
    """

    template_fields = ("day",)
    ui_color = "#f4d6a0"

    def __init__(
        self,
        *,
        usecase: str,
        day: str,
        deferrable: bool = True,
        trigger_poll_seconds: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.usecase = usecase
        self.day = day
        self.deferrable = deferrable
        self.trigger_poll_seconds = trigger_poll_seconds

    def execute(self, context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if _recorded(self.usecase, self.day):
            # the usual case (report_drift ran just before): decide now. A trigger that fires at
            # once races the scheduler on Airflow 3.3 (apache/airflow#72716: the resumed try is
            # failed by the stale success of the deferring one; seen in the scheduler month)
            self.log.info("the night's report is recorded: deciding without deferring")
            return self._decide(context)
        self.defer(
            trigger=DriftReportTrigger(self.usecase, self.day, self.trigger_poll_seconds),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout),
        )

    def poke(self, context):
        from airflow.sdk import PokeReturnValue

        if not _recorded(self.usecase, self.day):
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._decide(context))

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if not event or event.get("status") != "recorded":
            raise RuntimeError(f"the drift trigger ended without a report: {event}")
        return self._decide(context)

    def _decide(self, context) -> dict[str, Any]:
        from driftline.config import Settings, load_usecase
        from driftline.monitoring import nightly as monitoring

        settings = Settings.from_env()
        usecase = load_usecase(self.usecase, settings)
        verdict, night = monitoring.decide_night(usecase, settings, dt.date.fromisoformat(self.day))
        if not verdict.fires:
            raise AirflowSkipException(f"{verdict.decision}: {verdict.reason}")
        self.log.info("drift rule holds for %s %s: %s", self.usecase, self.day, verdict.reason)
        return monitoring.retraining_conf(usecase, night, verdict)
