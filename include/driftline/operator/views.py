"""The pages the `driftline` Airflow plugin serves inside the Airflow UI, under /driftline.

- `/history/<usecase>`: the drift history, a night a row, with links to its reports;
- `/reports/<usecase>/<day>/<drift|quality>`: a night's Evidently report (HTML);
- `/data-docs/<usecase>/<day>`: a day's Great Expectations Data Docs page;
- `/champion/<usecase>`: the champion at a glance, and its rollback (POST .../rollback).

Every page needs an Airflow login (the UI's session cookie or a bearer token), resolved by
Airflow's own `get_user`; a browser without one is sent to the login page. A use-case's pages
are served only to a user whom Airflow's auth manager lets read (GET) its DAGs, and its
rollback only to one who may edit (PUT) its training DAG: the reports show real data, and the
rollback changes what production serves. Only files under $DRIFTLINE_HOME that a known
use-case and a real date name can be served, so a URL cannot reach any other file.

(No `from __future__ import annotations` here: FastAPI reads the routes' annotations.)
"""

import datetime as dt
import hashlib
import hmac
import html
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from driftline.config import Settings, UseCase, list_usecases
from driftline.monitoring.drift_rule import DRIFT_SHARE_RULE, QUALITY_DROP_RULE
from driftline.monitoring.history import NightSummary
from driftline.operator import links

log = logging.getLogger(__name__)

HISTORY_NIGHTS = 120
SESSION_COOKIE = "_token"  # Airflow's COOKIE_NAME_JWT_TOKEN: the UI's session
READ, EDIT = "GET", "PUT"


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
    from driftline.ingest import validation

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
            _link(links.report_url(usecase, day), str(day)),
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
            f"{_link(links.report_url(usecase, day), 'drift')} · "
            f"{_link(links.report_url(usecase, day, 'quality'), 'quality')} · "
            f"{_link(links.data_docs_url(usecase, day), 'Data Docs')}",
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
        _link(links.report_url(usecase, night.day, shown[rule]), rule)
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
    started = _link(url, night.training_run) if url else html.escape(night.training_run)
    decided = html.escape(night.training_decision or "gate not decided yet")
    return f"{started}<br>{decided}"


def _link(url: str, text: str) -> str:
    """A link to a report or Data Docs page: a new tab (the page is a whole report, too big
    for the frame Airflow shows the history in)."""
    return f'<a href="{html.escape(url)}" target="_blank" rel="noopener">{html.escape(text)}</a>'


def index_page(
    usecases: list[str],
    title: str = "driftline: drift history",
    url: Callable[[str], str] = links.history_url,
) -> str:
    items = "".join(f'<li><a href="{url(name)}">{html.escape(name)}</a></li>' for name in usecases)
    body = f"<ul>{items}</ul>" if usecases else "<p>no use-case whose DAGs you may read</p>"
    return _page(title, body)


CHAMPION_TEMPLATE = """\
<p>Registered model <code>{{ view.model }}</code>; holdout scores are
<code>{{ view.metric }}</code> on each version's own holdout.
<a href="{{ history_url }}">Drift history</a></p>
{% for warning in view.warnings %}<p class="warn">{{ warning }}</p>{% endfor %}
{% if notice %}<p class="notice">{{ notice }}</p>{% endif %}
<h3>Aliases</h3>
<table><thead><tr><th>alias</th><th>version</th><th>window</th><th>holdout</th>
<th>holdout {{ view.metric }}</th><th>since</th><th>why</th><th>trained by</th></tr></thead>
<tbody>
{% for alias, held in view.aliased.items() %}
{% if held %}<tr class="{{ alias }}"><td>@{{ alias }}</td>
<td>{% if held.version.url %}<a href="{{ held.version.url }}" target="_blank" rel="noopener">
version {{ held.version.version }}</a>{% else %}version {{ held.version.version }}{% endif %}</td>
<td>{{ held.version.window or "-" }}</td><td>{{ held.version.holdout or "-" }}</td>
<td>{{ figure(held.version.holdout_score) }}</td><td>{{ when(held.since) }}</td>
<td>{{ held.why }}</td><td>{{ held.version.airflow_run or "-" }}</td></tr>
{% else %}<tr><td>@{{ alias }}</td><td colspan="7">no version holds it</td></tr>{% endif %}
{% endfor %}
</tbody></table>
<h3>Answering on the scoring server</h3>
{% if view.served is none %}<p>No scoring server configured for the Airflow UI
(<code>DRIFTLINE_SCORING_URL</code>).</p>
{% elif view.served.error %}<p class="warn">{{ view.served.url }}: {{ view.served.error }}</p>
{% else %}{% set champion = view.aliased.champion %}
<p class="served">{{ view.served.url }} answers with <b>version {{ view.served.version }}</b>
{% if champion and champion.version.version == view.served.version %}(the champion){% else %}
<span class="warn">(not the champion{% if champion %}, version {{ champion.version.version }}{%
endif %})</span>{% endif %}</p>{% endif %}
<h3>Last gate decisions</h3>
<table><thead><tr><th>version</th><th>registered</th><th>window</th><th>trigger</th>
<th>decision</th><th>why</th><th>{{ view.metric }}</th><th>champion's then</th></tr></thead>
<tbody>
{% for v in view.decisions %}<tr><td>{{ v.version }}</td><td>{{ when(v.registered) }}</td>
<td>{{ v.window or "-" }}</td><td>{{ v.trigger_reason or "-" }}</td>
<td>{{ v.gate_decision }}</td><td>{{ v.gate_reason or "-" }}</td>
<td>{{ figure(v.holdout_score) }}</td><td>{{ figure(v.champion_score) }}{%
if v.gate_champion and v.gate_champion != "none" %} (version {{ v.gate_champion }}){%
endif %}</td></tr>
{% else %}<tr><td colspan="8">no version gated yet</td></tr>{% endfor %}
</tbody></table>
<h3>Rollback</h3>
{% if not may_roll_back %}<p class="rollback-refused">Rolling back needs edit access to
<code>{{ training_dag }}</code>.</p>
{% elif not view.can_roll_back %}<p>Nothing to roll back to: a rollback needs a champion and a
previous version.</p>
{% else %}<form class="rollback" method="post" action="{{ rollback_url }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
<p>Moves <code>champion</code> from version {{ view.aliased.champion.version.version }} back
to version {{ view.aliased.previous.version.version }} (<code>previous</code>), as
<code>driftline rollback</code> does; recorded on both versions with the reason.</p>
<label>Reason <input name="reason" required maxlength="{{ reason_max }}" size="60"></label>
<button type="submit">Roll back</button>
</form>{% endif %}
"""


@dataclass(frozen=True)
class Access:
    """Who is asking and what Airflow's auth manager lets them do: Airflow's own in the
    api-server (airflow_access), a stand-in in the tests."""

    user: Callable[[Any], Awaitable[Any]]  # the request's user; raises NotLoggedIn
    may: Callable[[Any, str, list[str]], bool]  # (user, method, dag ids)
    login_url: Callable[[str], str]  # the login page, back to `next` afterwards
    queued_while_paused: Callable[[list[str]], dict[str, int]] = lambda dag_ids: {}


class NotLoggedIn(PermissionError):
    """No valid Airflow session or token."""


def airflow_access() -> Access:
    """Airflow's auth manager, as its own REST API uses it (get_user, is_authorized_dag)."""
    from fastapi.security import HTTPBearer

    bearer = HTTPBearer(auto_error=False)

    async def user(request: Any) -> Any:
        from airflow.api_fastapi.core_api.security import get_user
        from fastapi import HTTPException

        try:
            return await get_user(request, None, await bearer(request))
        except HTTPException as exc:  # 401 (none, expired) or 403 (a forged token)
            raise NotLoggedIn(str(exc.detail)) from exc

    def may(user: Any, method: str, dag_ids: list[str]) -> bool:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
        from airflow.models.dag import DagModel

        teams = DagModel.get_dag_id_to_team_name_mapping(dag_ids)
        return get_auth_manager().batch_is_authorized_dag(
            [
                {"method": method, "details": DagDetails(id=d, team_name=teams.get(d))}
                for d in dag_ids
            ],
            user=user,
        )

    def login_url(next_url: str) -> str:
        from airflow.api_fastapi.app import get_auth_manager

        url = get_auth_manager().get_url_login(next_url=next_url)
        prefix = links.airflow_prefix()
        return f"{prefix}{url}" if url.startswith("/") and not url.startswith(prefix + "/") else url

    from driftline.operator.champion import paused_with_queued_runs

    return Access(user, may, login_url, paused_with_queued_runs)


def usecase_dags(usecase: str, settings: Settings) -> list[str]:
    """The DAGs whose read access lets a user read a use-case's pages: every DAG it has
    (all three names for a name no config knows, so that the answer does not say which
    use-cases exist)."""
    found = _usecases(settings).get(usecase)
    if found is not None and found.training is None:
        return [f"{usecase}_etl"]
    return [f"{usecase}_etl", f"{usecase}_training", f"{usecase}_monitoring"]


def csrf_token(session: str, usecase: str) -> str:
    """The rollback form's token: only a page that can read the session cookie (our own,
    same origin) can know it; nothing to store, and the same in every api-server worker."""
    return hmac.new(session.encode(), f"rollback:{usecase}".encode(), hashlib.sha256).hexdigest()


def same_origin(headers: Any, own: list[str]) -> bool:
    """The form was posted by a page of this server (Origin, else Referer)."""
    sent = headers.get("origin") or headers.get("referer") or ""
    parts = urlsplit(sent)
    return bool(parts.scheme and parts.netloc) and f"{parts.scheme}://{parts.netloc}" in own


def champion_page(view: Any, *, may_roll_back: bool, csrf: str, notice: str = "") -> str:
    """The champion at a glance (Jinja2, autoescaped)."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    body = env.from_string(CHAMPION_TEMPLATE).render(
        view=view,
        notice=notice,
        may_roll_back=may_roll_back,
        csrf=csrf,
        training_dag=f"{view.usecase}_training",
        rollback_url=links.plugin_url(f"champion/{view.usecase}/rollback"),
        history_url=links.history_url(view.usecase),
        reason_max=_reason_max(),
        figure=_figure,
        when=_when,
    )
    return _page(f"{view.usecase}: champion", body)


def create_app(
    settings_factory: Callable[[], Settings] = Settings.from_env,
    access_factory: Callable[[], Access] = airflow_access,
) -> Any:
    """The FastAPI app the plugin mounts at /driftline (FastAPI is imported only here)."""
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
    from starlette.concurrency import run_in_threadpool

    from driftline.monitoring.history import DriftHistory
    from driftline.operator import champion

    access = access_factory()

    async def logged_in(request: Request) -> Any:
        """The Airflow UI's session cookie, or a bearer token, must name a valid user."""
        try:
            return await access.user(request)
        except NotLoggedIn as exc:
            raise HTTPException(401, f"log in to Airflow first ({exc})") from exc

    app = FastAPI(
        title="driftline",
        dependencies=[Depends(logged_in)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> Any:
        """A browser gets the login page (no session) or a page saying why; programs JSON."""
        browser = "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and browser and request.method == "GET":
            return RedirectResponse(access.login_url(str(request.url)), status_code=303)
        if browser:
            page = _page(f"{exc.status_code}: not served", f"<p>{html.escape(str(exc.detail))}</p>")
            return HTMLResponse(page, status_code=exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    def reader(method: str = READ) -> Callable[..., Awaitable[Any]]:
        def allowed(usecase: str, user: Annotated[Any, Depends(logged_in)]) -> Any:
            # (sync: FastAPI runs it in its thread pool, the auth manager may read the DB)
            dags = usecase_dags(usecase, settings_factory())
            if method == EDIT:
                dags = [f"{usecase}_training"]
            if not access.may(user, method, dags):
                verb = "edit" if method == EDIT else "read"
                raise HTTPException(403, f"you may not {verb} {', '.join(dags)}")
            return user

        return allowed

    User = Annotated[Any, Depends(logged_in)]
    Reader = Annotated[Any, Depends(reader())]
    Editor = Annotated[Any, Depends(reader(EDIT))]

    def readable(user: Any, settings: Settings) -> list[str]:
        return [
            u.name
            for u in list_usecases(settings, skip_broken=True)  # as the DAG files do
            if u.training and access.may(user, READ, usecase_dags(u.name, settings))
        ]

    def serve(find: Callable[[], Path]) -> FileResponse:
        try:
            # the pages hold source values (GX renders them unescaped) and CDN scripts: a
            # sandbox gives them an opaque origin, so no script reaches Airflow's API as the
            # operator
            return FileResponse(find(), media_type="text/html", headers=SANDBOXED)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc

    def known(settings: Settings, usecase: str) -> UseCase:
        try:
            return _usecases(settings)[_known(settings, usecase)]
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(links.plugin_url("history"))

    @app.get("/history", response_class=HTMLResponse)
    def history_index(user: User) -> Any:
        names = readable(user, settings_factory())
        if len(names) == 1:  # the nav entry opens on the one use-case directly
            return RedirectResponse(links.history_url(names[0]), status_code=303)
        return index_page(names)

    @app.get("/history/{usecase}", response_class=HTMLResponse)
    def history(usecase: str, _: Reader) -> str:
        settings = settings_factory()
        name = known(settings, usecase).name
        ledger = DriftHistory(settings.history_url)
        try:
            nights = ledger.nights(name, dt.date.max, HISTORY_NIGHTS)
        finally:
            ledger.dispose()
        return history_page(name, nights)

    @app.get("/reports/{usecase}/{day}/{kind}")
    def report(usecase: str, day: str, kind: str, _: Reader) -> FileResponse:
        return serve(lambda: report_file(settings_factory(), usecase, day, kind))

    @app.get("/data-docs/{usecase}/{day}")
    def data_docs(usecase: str, day: str, _: Reader) -> FileResponse:
        return serve(lambda: data_docs_file(settings_factory(), usecase, day))

    @app.get("/champion", response_class=HTMLResponse)
    def champion_index(user: User) -> Any:
        names = readable(user, settings_factory())
        if len(names) == 1:
            return RedirectResponse(links.champion_url(names[0]), status_code=303)
        return index_page(names, "driftline: champions", links.champion_url)

    @app.get("/champion/{usecase}", response_class=HTMLResponse)
    def champion_view(request: Request, usecase: str, user: Reader, notice: str = "") -> str:
        settings = settings_factory()
        found = known(settings, usecase)
        if found.training is None:
            raise HTTPException(404, f"use-case {usecase!r} trains no model: no champion")
        view = champion.gather(settings, found, scoring_url=links.scoring_url())
        view.warnings.extend(_waiting(access, found))
        return champion_page(
            view,
            may_roll_back=access.may(user, EDIT, [f"{usecase}_training"]),
            csrf=csrf_token(request.cookies.get(SESSION_COOKIE, ""), usecase),
            notice=notice[:300],
        )

    @app.post("/champion/{usecase}/rollback")
    async def rollback(request: Request, usecase: str, user: Editor) -> Any:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        if "authorization" not in request.headers:  # the cookie rides along: a CSRF check
            own = [f"{request.url.scheme}://{request.headers.get('host', '')}"]
            base = urlsplit(links.airflow_base_url())
            own += [f"{base.scheme}://{base.netloc}"] if base.netloc else []
            session = request.cookies.get(SESSION_COOKIE, "")
            if not same_origin(request.headers, own) or not hmac.compare_digest(
                form.get("csrf", ""), csrf_token(session, usecase)
            ):
                raise HTTPException(403, "refused: the form did not come from this page")
        settings = settings_factory()
        found = known(settings, usecase)
        if found.training is None:
            raise HTTPException(404, f"use-case {usecase!r} trains no model: no champion")
        who = getattr(user, "get_name", lambda: "?")()
        try:
            demoted, restored = await run_in_threadpool(
                champion.roll_back, settings, found, form.get("reason", ""), f"{who} (Airflow UI)"
            )
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        except RuntimeError as exc:  # no previous version
            raise HTTPException(409, str(exc)) from exc
        log.warning("%s rolled back %s from version %s to %s", who, usecase, demoted, restored)
        done = (
            f"Rolled back: the champion is version {restored} again "
            f"(version {demoted} is now previous)."
        )
        if "text/html" not in request.headers.get("accept", ""):
            return {"demoted": demoted, "restored": restored}
        return RedirectResponse(
            f"{links.champion_url(usecase)}?{urlencode({'notice': done})}", status_code=303
        )

    return app


def _waiting(access: Access, usecase: UseCase) -> list[str]:
    """A warning per paused DAG of the use-case with queued runs (nothing waits unseen)."""
    dags = [f"{usecase.name}_{kind}" for kind in ("etl", "training", "monitoring")]
    try:
        queued = access.queued_while_paused(dags)
    except Exception:  # noqa: BLE001 - the page is about the registry: show it anyway
        log.warning("could not read the paused DAGs' queued runs", exc_info=True)
        return []
    return [
        f"{dag_id} is paused with {count} queued run(s): they wait until it is unpaused"
        for dag_id, count in sorted(queued.items())
    ]


def _usecases(settings: Settings) -> dict[str, UseCase]:
    """The use-cases whose configs load: a wrong one is left out, as the DAG files do."""
    return {u.name: u for u in list_usecases(settings, skip_broken=True)}


def _reason_max() -> int:
    from driftline.operator.champion import REASON_MAX

    return REASON_MAX


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _known(settings: Settings, usecase: str) -> str:
    names = {u.name for u in list_usecases(settings, skip_broken=True)}
    if usecase not in names and usecase in {p.stem for p in settings.usecases_dir.glob("*.yaml")}:
        raise NotFound(f"the config of use-case {usecase!r} has problems: `driftline check`")
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


# Airflow shows the plugin's pages in an iframe sandboxed without allow-popups, where a
# target=_blank link does nothing; a link the top (same-origin) document follows opens the tab.
NEW_TAB_SCRIPT = """
document.addEventListener("click", (event) => {
  const a = event.target.closest('a[target="_blank"]');
  if (!a || window.top === window) return;
  try {
    const top = window.top.document;
    const opener = top.createElement("a");
    opener.href = a.href; opener.target = "_blank"; opener.rel = "noopener";
    top.body.appendChild(opener); opener.click(); opener.remove();
    event.preventDefault();
  } catch (err) { /* another origin's frame: the browser's own handling */ }
});
"""


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1a202c; }}
 table {{ border-collapse: collapse; font-size: 0.9rem; }}
 th, td {{ border-bottom: 1px solid #e2e8f0; padding: 0.35rem 0.6rem; text-align: left; }}
 th {{ background: #f7fafc; }}
 tr.fired td {{ background: #fff5f5; font-weight: 600; }}
 tr.champion td {{ background: #f0fff4; font-weight: 600; }}
 .warn {{ color: #c53030; font-weight: 600; }}
 .notice {{ background: #ebf8ff; padding: 0.5rem; }}
 form.rollback {{ border: 1px solid #e2e8f0; padding: 0.6rem; max-width: 52rem; }}
</style></head>
<body><h2>{html.escape(title)}</h2>
{body}
<script>{NEW_TAB_SCRIPT}</script>
</body></html>"""
