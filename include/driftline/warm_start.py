"""Run an Airflow component with the tasks' libraries already imported.

LocalExecutor's workers are forked from the scheduler, Celery's prefork pool from its worker,
and each task process is forked again from those. A component started through this module
imports pandas, pyarrow, Great Expectations (and its context), MLflow, XGBoost and Evidently
once, so every task process inherits them instead of importing them itself (about 15 s of a
nightly chain's tasks). DAG files still import nothing heavy: their parse stays cheap.

    python -m driftline.warm_start scheduler        # = airflow scheduler, warm
    python -m driftline.warm_start celery worker    # = airflow celery worker, warm
"""

from __future__ import annotations

import importlib
import sys
import time

# What the tasks of the driftline DAGs import (driftline.ingest.etl, validation, scoring,
# monitoring, training and drift_report, with the libraries each pulls in).
TASK_MODULES = (
    "driftline.ingest.etl",
    "driftline.ingest.validation",
    "driftline.monitoring.scoring",
    "driftline.monitoring.nightly",
    "driftline.training.pipeline",
    "xgboost",
    "evidently",
    "evidently.metrics",
    "evidently.ui.workspace",
)


def preload(modules: tuple[str, ...] = TASK_MODULES) -> float:
    """Import `modules` and build the process's GX context; returns the seconds it took."""
    began = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    from driftline.ingest import validation

    validation.warm()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    seconds = preload()
    sys.stderr.write(f"driftline.warm_start: task libraries imported in {seconds:.1f} s\n")
    from airflow.__main__ import main as airflow

    sys.argv = ["airflow", *args]
    airflow()


if __name__ == "__main__":
    main()
