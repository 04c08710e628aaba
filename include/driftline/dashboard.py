"""The Evidently workspace: one project per use-case, whose dashboard shows the nights over time.

`evidently ui --workspace $DRIFTLINE_HOME/evidently` serves it. Every night adds its snapshots
and removes the ones an earlier run of the same night added, so a rerun does not duplicate a
point; the dashboard is written whole each time (adding panels one by one would append
duplicates on every run).
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


# (title, legend, Evidently metric, metric labels): one line-plot panel each
PANELS = [
    ("Share of drifted columns", "drift share", "DriftedColumnsCount", {"value_type": "share"}),
    ("Drifted columns", "count", "DriftedColumnsCount", {"value_type": "count"}),
    # quality: labelled flights of days after the champion's window only; a night with too
    # few of them has no quality snapshot, so no point (not a zero)
    ("ROC AUC on labelled flights after the champion's window", "ROC AUC", "RocAuc", {}),
    ("Log loss on the same flights", "log loss", "LogLoss", {}),
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
        str(workspace.add_run(project.id, snapshot, name=f"{day.isoformat()} {kind}").id)
        for snapshot, kind in zip(snapshots, ("drift", "quality"), strict=False)
    ]
    existing = {str(s) for s in workspace.list_runs(project.id)}
    for old in replace:
        if old in existing:
            workspace.delete_run(project.id, old)
    workspace.save_dashboard(project.id, dashboard_model())
    return added
