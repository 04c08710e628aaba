"""The pages the `driftline` Airflow plugin serves inside the Airflow UI, under /driftline.

- `/history/<usecase>`: the drift history, a night a row, with links to its reports;
- `/reports/<usecase>/<day>/<drift|quality>`: a night's Evidently report (HTML);
- `/data-docs/<usecase>/<day>`: a day's Great Expectations Data Docs page.

Every page needs an Airflow login (the UI's session cookie or a bearer token): the reports
show real data. Only files under $DRIFTLINE_HOME that a known use-case and a real date name
can be served, so a URL cannot reach any other file.

(No `from __future__ import annotations` here: FastAPI reads the routes' annotations.)
"""

import datetime as dt
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftline import links
from driftline.config import ConfigError, Settings, list_usecases
from driftline.drift_rule import DRIFT_SHARE_RULE, QUALITY_DROP_RULE
from driftline.history import NightSummary

HISTORY_NIGHTS = 120


class NotFound(LookupError):
    """A page that does not exist (yet); the message says what an operator can do."""


SANDBOXED = {
    "Content-Security-Policy": "sandbox allow-scripts allow-popups",
    "X-Content-Type-Options": "nosniff",
}


def report_file(settings: Settings, usecase: str, day: str, kind: str) -> Path:
    if kind not in links.REPORT_KINDS:
        raise NotFound(f"no report kind {kind!r}: one of {', '.join(links.REPORT_KINDS)}")
    path = settings.reports_dir(_known(settings, usecase), _day(day)) / f"{kind}.html"
    if not path.is_file():
        raise NotFound(f"no {kind} report for {usecase} {day} yet: has {usecase}_monitoring run?")
    return path


def data_docs_file(settings: Settings, usecase: str, day: str) -> Path:
    from driftline import validation

    result = settings.validation_result_path(_known(settings, usecase), _day(day))
    if not result.is_file():
        raise NotFound(f"no validation of {usecase} {day} yet: has {usecase}_etl run for it?")
    return validation.data_docs_file(result)


def history_page(usecase: str, nights: list[NightSummary]) -> str:
    """The drift history as one HTML table, newest night first."""
    rows = []
    for night in reversed(nights):
        day = night.day
        cells = [
            f'<a href="{links.report_url(usecase, day)}">{day}</a>',
            html.escape(night.model_version),
            f"{night.rows:,}",
            f"{night.drift_share:.2f}",
            html.escape(", ".join(night.drifted_columns)) or "-",
            "not judged yet" if night.quality_judged is False else _figure(night.roc_auc),
            html.escape(night.quality_basis()),
            _figure(night.champion_holdout_roc_auc),
            html.escape(night.decision or "not judged"),
            html.escape(night.decision_reason or ""),
            _fired_by(usecase, night),
            _training(night),
            f'<a href="{links.report_url(usecase, day)}">drift</a> · '
            f'<a href="{links.report_url(usecase, day, "quality")}">quality</a> · '
            f'<a href="{links.data_docs_url(usecase, day)}">Data Docs</a>',
        ]
        css = ' class="fired"' if night.decision == "fired" else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = [
        "night",
        "model version",
        "rows",
        "drift share",
        "drifted columns",
        "ROC AUC",
        "judged for quality",
        "champion holdout ROC AUC",
        "decision",
        "why",
        "fired by (rule held)",
        "retraining it started",
        "pages",
    ]
    body = "\n".join(rows) or f'<tr><td colspan="{len(head)}">no night monitored yet</td></tr>'
    return _page(
        f"{usecase}: drift history",
        f"<p>{len(nights)} most recent nights of <code>{html.escape(usecase)}_monitoring</code>;"
        " a fired night started a retraining.</p>"
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"
        f"<tbody>\n{body}\n</tbody></table>",
    )


def _fired_by(usecase: str, night: NightSummary) -> str:
    """Each rule that held, linked to the report that shows it ("held" when a cool-down or
    a failed validation kept it from firing)."""
    shown = {DRIFT_SHARE_RULE: "drift", QUALITY_DROP_RULE: "quality"}
    rules = " · ".join(
        f'<a href="{links.report_url(usecase, night.day, shown[rule])}">{html.escape(rule)}</a>'
        for rule in night.fired_by
        if rule in shown
    )
    if not rules:
        return "-"
    return rules if night.decision == "fired" else f"held, not fired: {rules}"


def _training(night: NightSummary) -> str:
    """The retraining a fired night started, and what its gate decided once it has."""
    if not night.training_run:
        return "-"
    url = links.dag_run_url(night.training_run)
    run = html.escape(night.training_run)
    started = f'<a href="{url}">{run}</a>' if url else run
    decided = html.escape(night.training_decision or "gate not decided yet")
    return f"{started}<br>{decided}"


def index_page(usecases: list[str]) -> str:
    items = "".join(
        f'<li><a href="{links.history_url(name)}">{html.escape(name)}</a></li>' for name in usecases
    )
    return _page("driftline: drift history", f"<ul>{items}</ul>")


def create_app(settings_factory: Callable[[], Settings] = Settings.from_env) -> Any:
    """The FastAPI app the plugin mounts at /driftline (FastAPI is imported only here)."""
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

    from driftline.history import DriftHistory

    async def logged_in(request: Request) -> None:
        """The Airflow UI's session cookie, or a bearer token, must name a valid user."""
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
        token = token or request.cookies.get(COOKIE_NAME_JWT_TOKEN)
        if not token:
            raise HTTPException(401, "log in to Airflow first")
        try:
            await get_auth_manager().get_user_from_token(token)
        except Exception as exc:  # expired or forged: jwt's errors, whatever the version
            raise HTTPException(401, "your Airflow session has expired: log in again") from exc

    app = FastAPI(
        title="driftline",
        dependencies=[Depends(logged_in)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def serve(find: Callable[[], Path]) -> FileResponse:
        try:
            # the pages hold source values (GX renders them unescaped) and CDN scripts: a
            # sandbox gives them an opaque origin, so no script reaches Airflow's API as the
            # operator
            return FileResponse(find(), media_type="text/html", headers=SANDBOXED)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(links.plugin_url("history"))

    @app.get("/history", response_class=HTMLResponse)
    def history_index() -> str:
        return index_page([u.name for u in list_usecases(settings_factory()) if u.training])

    @app.get("/history/{usecase}", response_class=HTMLResponse)
    def history(usecase: str) -> str:
        settings = settings_factory()
        try:
            name = _known(settings, usecase)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        ledger = DriftHistory(settings.history_url)
        try:
            nights = ledger.nights(name, dt.date.max, HISTORY_NIGHTS)
        finally:
            ledger.dispose()
        return history_page(name, nights)

    @app.get("/reports/{usecase}/{day}/{kind}")
    def report(usecase: str, day: str, kind: str) -> FileResponse:
        return serve(lambda: report_file(settings_factory(), usecase, day, kind))

    @app.get("/data-docs/{usecase}/{day}")
    def data_docs(usecase: str, day: str) -> FileResponse:
        return serve(lambda: data_docs_file(settings_factory(), usecase, day))

    return app


def _known(settings: Settings, usecase: str) -> str:
    try:
        names = {u.name for u in list_usecases(settings)}
    except ConfigError as exc:
        raise NotFound(f"the use-case configs do not load: {exc}") from exc
    if usecase not in names:
        raise NotFound(f"no use-case {usecase!r}; known: {', '.join(sorted(names))}")
    return usecase


def _day(day: str) -> dt.date:
    try:
        return dt.date.fromisoformat(day)
    except ValueError as exc:
        raise NotFound(f"{day!r} is not a date (YYYY-MM-DD)") from exc


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1a202c; }}
 table {{ border-collapse: collapse; font-size: 0.9rem; }}
 th, td {{ border-bottom: 1px solid #e2e8f0; padding: 0.35rem 0.6rem; text-align: left; }}
 th {{ background: #f7fafc; }}
 tr.fired td {{ background: #fff5f5; font-weight: 600; }}
</style></head>
<body><h2>{html.escape(title)}</h2>
{body}
</body></html>"""
