"""Where an operator finds a task's output: the URLs behind the Airflow UI's extra links.

Pages that driftline writes to disk (Great Expectations Data Docs, Evidently reports, the
drift history) are served inside Airflow by the `driftline` plugin under `/driftline/`,
behind Airflow's login. MLflow pages are on the MLflow UI, whose browser-facing address is
$DRIFTLINE_MLFLOW_UI_URL (or the tracking URI, when that is a server).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

PLUGIN_PREFIX = "/driftline"
MLFLOW_UI_ENV = "DRIFTLINE_MLFLOW_UI_URL"
SCORING_ENV = "DRIFTLINE_SCORING_URL"  # the scoring server, as the api-server reaches it
REPORT_KINDS = ("drift", "quality")


def airflow_base_url(env: Mapping[str, str] = os.environ) -> str:
    """Airflow's [api] base_url: where browsers reach the UI ('' when not configured)."""
    return env.get("AIRFLOW__API__BASE_URL", "").rstrip("/")


def airflow_prefix(env: Mapping[str, str] = os.environ) -> str:
    """The path Airflow is served under ('' at the root), from [api] base_url."""
    return urlsplit(env.get("AIRFLOW__API__BASE_URL", "")).path.rstrip("/")


def plugin_url(path: str, env: Mapping[str, str] = os.environ) -> str:
    """A root-relative URL of a plugin page: it opens on whatever host serves the UI."""
    return f"{airflow_prefix(env)}{PLUGIN_PREFIX}/{path.lstrip('/')}"


def data_docs_url(usecase: str, day: dt.date, env: Mapping[str, str] = os.environ) -> str:
    return plugin_url(f"data-docs/{quote(usecase)}/{day.isoformat()}", env)


def report_url(
    usecase: str, day: dt.date, kind: str = "drift", env: Mapping[str, str] = os.environ
) -> str:
    if kind not in REPORT_KINDS:
        raise ValueError(f"report kind must be one of {REPORT_KINDS}, not {kind!r}")
    return plugin_url(f"reports/{quote(usecase)}/{day.isoformat()}/{kind}", env)


def history_url(usecase: str, env: Mapping[str, str] = os.environ) -> str:
    return plugin_url(f"history/{quote(usecase)}", env)


def champion_url(usecase: str, env: Mapping[str, str] = os.environ) -> str:
    return plugin_url(f"champion/{quote(usecase)}", env)


def scoring_url(env: Mapping[str, str] = os.environ) -> str | None:
    """The scoring server (`driftline serve`) whose answering version the champion page shows."""
    url = env.get(SCORING_ENV, "")
    return url.rstrip("/") if url.startswith(("http://", "https://")) else None


def mlflow_ui(env: Mapping[str, str] = os.environ) -> str | None:
    """The MLflow UI's address for a browser, or None when there is none to link to."""
    url = env.get(MLFLOW_UI_ENV) or env.get("MLFLOW_TRACKING_URI", "")
    return url.rstrip("/") if url.startswith(("http://", "https://")) else None


def mlflow_run_url(experiment_id: str, run_id: str, env: Mapping[str, str] = os.environ) -> str:
    ui = mlflow_ui(env)
    return f"{ui}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}" if ui else ""


def model_version_url(model: str, version: str, env: Mapping[str, str] = os.environ) -> str:
    ui = mlflow_ui(env)
    return f"{ui}/#/models/{quote(model)}/versions/{quote(str(version))}" if ui else ""


def dag_run_url(dag_run: str, env: Mapping[str, str] = os.environ) -> str:
    """The Airflow UI page of "<dag_id>/<run_id>" (root-relative); '' for a run that was not
    an Airflow DAG run (`driftline train` / `monitor --retrain` record driftline-cli/...)."""
    dag_id, _, run_id = dag_run.partition("/")
    if not run_id or dag_id.startswith("driftline-"):
        return ""
    return f"{airflow_prefix(env)}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"
