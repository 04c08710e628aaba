"""The `driftline` Airflow plugin: extra links on tasks, the drift history and the champion in
the UI.

- Extra links (computed on the worker when the task ends, kept by Airflow as XCom):
  *Data Docs* on the validation task, *MLflow run* and *MLflow model version* on the
  registration task, *Drift report* and *Quality report* on the monitoring report task.
- `/driftline/...`: the pages behind those links (Evidently reports, Data Docs, the drift
  history) and the champion at a glance with its rollback, served by the api-server behind
  Airflow's login and its auth manager (a use-case's pages need read access to its DAGs, the
  rollback edit access to its training DAG); *Drift history* and *Champion* in the nav.

Wiring only: the URLs come from `driftline.operator.links`, the pages from
`driftline.operator.views`.
FastAPI is imported on the first request, not when a worker loads this plugin.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

import attrs
from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from driftline.config import run_day
from driftline.operator import links


def _night(ti: Any, timezone: str) -> dt.date | None:
    """The day a nightly run covers: its data interval's start, in the use-case's zone (None
    for a run without one, e.g. triggered with no logical date)."""
    start = ti.get_template_context()["data_interval_start"]
    return None if start is None else run_day(start, timezone)


def _returned(ti: Any) -> dict:
    """What the task returned (an empty dict when it failed before returning)."""
    return ti.xcom_pull(task_ids=ti.task_id) or {}


@attrs.define()
class _NightLink(BaseOperatorLink):
    """A link to a page of the night (the day) the run covers."""

    usecase: str = ""
    timezone: str = "UTC"

    def get_link(self, operator, *, ti_key) -> str:
        night = _night(ti_key, self.timezone)
        return "" if night is None else self.url(night)

    def url(self, day: dt.date) -> str:
        raise NotImplementedError


class DataDocsLink(_NightLink):
    """The Great Expectations Data Docs page of the day's validation, passed or failed."""

    name: ClassVar[str] = "Data Docs"

    def url(self, day: dt.date) -> str:
        return links.data_docs_url(self.usecase, day)


class DriftReportLink(_NightLink):
    name: ClassVar[str] = "Drift report"

    def url(self, day: dt.date) -> str:
        return links.report_url(self.usecase, day, "drift")


class QualityReportLink(_NightLink):
    name: ClassVar[str] = "Quality report"

    def url(self, day: dt.date) -> str:
        return links.report_url(self.usecase, day, "quality")


@attrs.define()
class MlflowRunLink(BaseOperatorLink):
    """The MLflow run the registration task logged (from its return value)."""

    name: ClassVar[str] = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        registered = _returned(ti_key)
        if not registered.get("run_id"):
            return ""
        return links.mlflow_run_url(registered["experiment_id"], registered["run_id"])


@attrs.define()
class ModelVersionLink(BaseOperatorLink):
    name: ClassVar[str] = "MLflow model version"

    def get_link(self, operator, *, ti_key) -> str:
        registered = _returned(ti_key)
        if not registered.get("version"):
            return ""
        return links.model_version_url(registered["model"], registered["version"])


class _LazyApp:
    """An ASGI app that builds the FastAPI app on its first request."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            from driftline.operator.views import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class DriftlinePlugin(AirflowPlugin):
    name = "driftline"
    operator_extra_links = [  # noqa: RUF012 - Airflow's plugin interface
        DataDocsLink(),
        DriftReportLink(),
        QualityReportLink(),
        MlflowRunLink(),
        ModelVersionLink(),
    ]
    fastapi_apps = [  # noqa: RUF012
        {"app": _LazyApp(), "url_prefix": links.PLUGIN_PREFIX, "name": "driftline pages"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Drift history",
            "href": links.plugin_url("history"),
            "destination": "nav",
            "category": "browse",
            "url_route": "drift-history",
        },
        {
            "name": "Champion",
            "href": links.plugin_url("champion"),
            "destination": "nav",
            "category": "browse",
            "url_route": "champion",
        },
    ]
