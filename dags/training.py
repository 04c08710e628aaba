"""Training DAGs: one `<usecase>_training` per use-case config that has a `training` section.

Started by hand (the trigger form's Params, made of `driftline.training.request`'s schema) or
by the drift sensor; never on a timetable. Wiring only: each task calls one function of
`driftline.training.pipeline` (check_request: of `driftline.training.request`), imported inside
the task.
"""

from __future__ import annotations

import datetime as dt
import logging

import pendulum
from airflow.sdk import DAG, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

from driftline.config import Settings, UseCase, list_usecases
from driftline.training.request import request_schema
from driftline_defaults import default_args, with_links
from driftline_ui import MlflowRunLink, ModelVersionLink

DEFAULT_ARGS = default_args(execution_timeout=dt.timedelta(hours=1))
log = logging.getLogger(__name__)

DOC = """
### {name}: retrain, register, and promote only a better model

1. **check_request**: validates the trigger's conf (unknown fields are refused here; Airflow
   itself lets them through);
2. **snapshot_window**: copies the window ({days} days ending `window_end`) and the
   {holdout} holdout days after it from the curated store into the training workspace
   `{workspace}` (`dvc add`);
3. **run_dvc_pipeline**: `dvc repro` (prepare -> train -> evaluate), git commit (the version's
   DVC address), `dvc push` to `{remote}`;
4. **register_model**: one MLflow run per DAG run in experiment `{experiment}` (params,
   metrics, plots, model with signature, DVC hashes, code revision, this run, the reason), a
   new version of `{model}` with alias `challenger`;
5. **gate_challenger**: champion and challenger scored on the same DVC-pinned holdout; the
   `champion` alias moves only if the challenger beats it by {margin} {metric}, reaches
   {floor}, and loses at most {tolerance} on any slice (or `force_promote`). The old champion
   keeps the alias `previous`; the decision is written on the version. Its first log line
   and return value say `promoted` or `champion ... kept`, with both scores; with alerts on
   (README: Alerts) so does one alert.

**When it fails**
- *check_request*: the conf is wrong; the message names the field. Trigger again.
- *snapshot_window*: days of the window have no curated partition; run the ETL for them.
- *run_dvc_pipeline*: the DVC output is in the log. A remote that is down fails the push;
  nothing is registered. If another training run (e.g. `driftline train`) replaced the
  snapshot meanwhile, the task says so: trigger again.
- *register_model* / *gate_challenger*: MLflow is unreachable; retry once it is back. A
  retry reuses the run, the version and a decision already made; the `champion` alias only
  moves in the gate, under the promotion lock (one promotion at a time, whoever runs it).
  register_model reads the workspace only while it is still at this run's commit; the gate
  reads the holdout from the DVC cache, and compares with the champion only on holdout days
  outside the champion's training window.
- A bad champion in production: `driftline rollback --reason "..."`.
"""


def training_dag(usecase: UseCase, settings: Settings) -> DAG:
    training = usecase.training
    gate = training.gate

    @dag(
        dag_id=f"{usecase.name}_training",
        schedule=None,
        start_date=pendulum.instance(usecase.day_start(usecase.start_date)),
        catchup=False,
        max_active_runs=1,
        # never paused unseen: the drift sensor's and the trigger form's runs start at once
        is_paused_upon_creation=False,
        default_args=DEFAULT_ARGS,
        tags=["driftline", "training", usecase.name],
        params=trigger_form(usecase),
        doc_md=DOC.format(
            name=usecase.name,
            days=training.window_days,
            holdout=training.holdout_days,
            workspace=settings.workspace_dir(usecase.name),
            remote=settings.dvc_remote(usecase.name),
            experiment=training.experiment,
            model=training.registered_model,
            margin=gate.min_improvement,
            metric=gate.primary_metric,
            floor=gate.floor,
            tolerance=gate.slice_tolerance,
        ),
    )
    def pipeline() -> None:
        @task
        def check_request(params=None) -> dict:
            from driftline.training.request import TrainingRequest, TrainingRequestError

            try:
                return TrainingRequest.from_conf(dict(params), usecase).as_dict()
            except TrainingRequestError as exc:  # a wrong request does not heal on retry
                raise AirflowFailException(f"refused: {exc}") from exc

        @task
        def snapshot_window(request: dict) -> dict:
            from driftline.training import pipeline as training
            from driftline.training.request import TrainingRequestError

            try:
                return training.snapshot_window(usecase, settings, _request(request))
            except TrainingRequestError as exc:
                raise AirflowFailException(str(exc)) from exc

        @task
        def run_dvc_pipeline(request: dict, snapshot: dict, dag_run=None) -> dict:
            from driftline.training import pipeline as training

            return training.run_pipeline(
                usecase,
                settings,
                training.commit_message(_request(request), dag_run.dag_id, dag_run.run_id),
                snapshot["snapshot_md5"],
            )

        @task
        def register_model(request: dict, pipeline: dict, dag_run=None) -> dict:
            from driftline.training import pipeline as training

            return training.register(
                usecase,
                settings,
                _request(request),
                training.run_key_for(dag_run.dag_id, dag_run.run_id),
                {"airflow_dag_id": dag_run.dag_id, "airflow_run_id": dag_run.run_id},
                pipeline,
            )

        @task
        def gate_challenger(request: dict, registered: dict, dag_run=None) -> dict:
            from driftline.operator import alerts
            from driftline.training import pipeline as training

            asked = _request(request)
            decided = training.gate(usecase, settings, asked, registered["version"])
            alert = alerts.gate_decided(
                usecase.name,
                usecase.training.registered_model,
                dag_run.run_id,
                decided,
                gate.primary_metric,
                asked.reason,
            )
            # what the operator reads first: the task's XCom (its return value) and this log
            # line (a task cannot set its run's note through Airflow 3.3's Task SDK)
            decided["summary"] = alert.title.removeprefix("[driftline] ")
            log.warning("GATE: %s", decided["summary"])
            if not decided.get("already_decided"):  # else an earlier try decided and alerted
                alerts.send(alert)
            return decided

        def _request(raw: dict):
            from driftline.training.request import TrainingRequest

            return TrainingRequest.from_dict(raw)

        request = check_request()
        pipeline_result = run_dvc_pipeline(request, snapshot_window(request))
        registered = register_model(request, pipeline_result)
        with_links(registered, MlflowRunLink(), ModelVersionLink())
        gate_challenger(request, registered)

    return pipeline()


def trigger_form(usecase: UseCase) -> dict[str, Param]:
    """The trigger form: one Param per property of the training request's schema (its
    default and description; the rest is the Param's JSON Schema), the schema check_request
    validates the whole conf against."""
    form = {}
    for name, spec in request_schema(usecase)["properties"].items():
        rules = {k: v for k, v in spec.items() if k not in ("default", "description")}
        form[name] = Param(spec["default"], description=spec["description"], **rules)
    return form


_settings = Settings.from_env()
# A wrong config is left out here (its DAGs with it): usecase_configs.py shows its problems.
for _usecase in list_usecases(_settings, skip_broken=True):
    if _usecase.training is not None:
        globals()[f"{_usecase.name}_training"] = training_dag(_usecase, _settings)
