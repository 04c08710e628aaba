"""The Evidently workspace: one project per use-case, whose dashboard shows the nights over time.

`evidently ui --workspace $DRIFTLINE_HOME/evidently` serves it. Every night adds its snapshots
and removes the ones an earlier run of the same night added, so a rerun does not duplicate a
point; the dashboard is written whole each time (adding panels one by one would append
duplicates on every run).

What the dashboard plots is made to read as the operator reads the nights:
- a night's point is stamped at noon of the use-case's day, naive: Evidently shows a
  timestamp in UTC, so the report's own stamp (23:59 in New York) read "04:59" the next day;
- the drifted-columns metric's `columns` label is left out of the plotted points: a night
  judges only the columns with values on both sides, so the label changed with the nights,
  and Evidently split the line into one series (one lone point) per set of columns.
"""

from __future__ import annotations

import datetime as dt
import functools

from driftline.config import Settings, UseCase


def project_name(usecase: UseCase) -> str:
    return f"{usecase.name} drift"


def _project(workspace, usecase: UseCase):
    found = workspace.search_project(project_name(usecase))
    if found:
        return found[0]
    return workspace.create_project(
        project_name(usecase),
        description=f"Nightly drift and quality of the {usecase.name} champion (driftline).",
    )


PLOTTED_AT = dt.time(12, 0)  # noon: the same date in any zone a browser shows it in
UNSTABLE_LABELS = {"DriftedColumnsCount": ("columns",)}

# (title, legend, Evidently metric, metric labels): one line-plot panel each
PANELS = [
    ("Share of drifted columns", "drift share", "DriftedColumnsCount", {"value_type": "share"}),
    ("Drifted columns", "count", "DriftedColumnsCount", {"value_type": "count"}),
    # quality: labelled rows of days after the champion's window only; a night with too
    # few of them has no quality snapshot, so no point (not a zero)
    ("ROC AUC on labelled rows after the champion's window", "ROC AUC", "RocAuc", {}),
    ("Log loss on the same rows", "log loss", "LogLoss", {}),
]


def dashboard_model():
    """Drift share, drifted columns and quality over the nights, in one tab."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import line_plot_panel

    panels = [
        line_plot_panel(
            title=title,
            values=[PanelMetric(legend=legend, metric=metric, metric_labels=labels)],
            size="half",
        )
        for title, legend, metric, labels in PANELS
    ]
    return DashboardModel(
        tabs=[DashboardTabModel(title="Nightly", panels=[p.id for p in panels])], panels=panels
    )


@functools.cache
def _open(path: str):
    """One Workspace per folder and process: opening one reads every stored snapshot (~25 ms
    each), so `driftline monitor` over a year would otherwise slow down night by night."""
    from evidently.ui.workspace import Workspace

    return Workspace(path)


def record(
    settings: Settings,
    usecase: UseCase,
    day: dt.date,
    snapshots: list,
    replace: list[str],
) -> list[str]:
    """Add the night's snapshots; delete `replace` (the same night's earlier ones). Returns ids."""
    settings.evidently_workspace.mkdir(parents=True, exist_ok=True)
    workspace = _open(str(settings.evidently_workspace))
    project = _project(workspace, usecase)
    added = [
        str(
            workspace.add_run(
                project.id, plotted(snapshot, day), name=f"{day.isoformat()} {kind}"
            ).id
        )
        for snapshot, kind in zip(snapshots, ("drift", "quality"), strict=False)
    ]
    existing = {str(s) for s in workspace.list_runs(project.id)}
    for old in replace:
        if old in existing:
            workspace.delete_run(project.id, old)
    workspace.save_dashboard(project.id, dashboard_model())
    return added


def plotted(snapshot, day: dt.date):
    """The snapshot as the dashboard should plot it: stamped at noon of the use-case's `day`
    and without the labels that change from night to night (see the module's docstring)."""
    from evidently.core.report import Snapshot

    model = snapshot.to_snapshot_model().copy(deep=True)  # the caller's snapshot stays as is
    model.timestamp = dt.datetime.combine(day, PLOTTED_AT)
    for result in model.metric_results.values():
        # a count metric's values (count, share) each carry their own copy of the labels
        for value in (result, *(getattr(result, part, None) for part in ("count", "share"))):
            location = getattr(value, "metric_value_location", None)
            params = location.metric.params if location is not None else {}
            kind = str(params.get("type", "")).rsplit(":", 1)[-1]
            for label in UNSTABLE_LABELS.get(kind, ()):
                params.pop(label, None)
    return Snapshot.load_model(model)
