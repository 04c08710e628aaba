"""The Evidently workspace: one project per use-case, whose dashboard shows the nights over time.

`evidently ui --workspace $DRIFTLINE_HOME/evidently` serves it. Every night adds its snapshots
and removes the ones an earlier run of the same night added, so a rerun does not duplicate a
point; the dashboard is written whole each time (adding panels one by one would append
duplicates on every run).
"""

from __future__ import annotations

import datetime as dt

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


def dashboard_model():
    """Drift share, drifted columns and quality over the nights, in one tab."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import line_plot_panel

    panels = [
        line_plot_panel(
            title="Share of drifted columns",
            values=[
                PanelMetric(
                    legend="drift share",
                    metric="DriftedColumnsCount",
                    metric_labels={"value_type": "share"},
                )
            ],
            size="half",
        ),
        line_plot_panel(
            title="Drifted columns",
            values=[
                PanelMetric(
                    legend="count",
                    metric="DriftedColumnsCount",
                    metric_labels={"value_type": "count"},
                )
            ],
            size="half",
        ),
        line_plot_panel(
            title="ROC AUC on the night's labelled flights",
            values=[PanelMetric(legend="ROC AUC", metric="RocAuc")],
            size="half",
        ),
        line_plot_panel(
            title="Log loss",
            values=[PanelMetric(legend="log loss", metric="LogLoss")],
            size="half",
        ),
    ]
    return DashboardModel(
        tabs=[DashboardTabModel(title="Nightly", panels=[p.id for p in panels])], panels=panels
    )


def record(
    settings: Settings,
    usecase: UseCase,
    day: dt.date,
    snapshots: list,
    replace: list[str],
) -> list[str]:
    """Add the night's snapshots; delete `replace` (the same night's earlier ones). Returns ids."""
    from evidently.ui.workspace import Workspace

    settings.evidently_workspace.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(str(settings.evidently_workspace))
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
