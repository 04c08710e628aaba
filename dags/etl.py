"""Nightly ETL DAGs: one `<usecase>_etl` per file in usecases/.

Wiring only: each task calls one function of `driftline.ingest.etl`, imported inside the task so
that parsing this file costs no pandas, pyarrow or Great Expectations import.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from airflow.sdk import DAG, Asset, dag, task
from airflow.sdk.exceptions import AirflowFailException

from driftline.config import ConfigError, Settings, UseCase, list_usecases
from driftline_defaults import default_args, night_deadline, nightly, with_links
from driftline_ui import DataDocsLink

DEFAULT_ARGS = default_args(execution_timeout=dt.timedelta(minutes=30))

DOC = """
### {name}: nightly ETL

Each run covers one **{tz}** day: the run's data interval. It

1. **extract_{table}**: asks the source how many `{table}` rows the day has (each placed by
   its time read as an instant) and how many rows have a time that places them in no day,
   then reads the day's rows (and the tables joined to them) with bound parameters;
2. **build_batch**: {builds}, then the label (`{label}`);
3. **validate_batch**: runs the Great Expectations suite `{suite}` (expectations/{suite}.json)
   and reconciles: the batch must hold exactly the rows the source counted in the day;
4. **load_partition**: writes the day's Parquet partition atomically into
   `{curated}` and emits the asset `{asset}`.

A rerun of a day replaces its partition; it never adds rows.

**When it fails** (with alerts on, README: Alerts, a refused batch sends one quarantine alert
naming the failed expectations; any other task failing for good, one failure alert)
- *build_batch* failed: the extracted rows could not be built into a batch (the message says
  why, e.g. a text value where the label rule needs a number). They are quarantined in
  `{quarantine}/<day>/` and nothing was loaded. Failed at once without quarantine: the
  config is wrong (e.g. a transform that cannot be imported); `driftline check` names it.
- *validate_batch* failed: the log names every failed expectation and its observed value.
  The batch and its full validation result are in `{quarantine}/<day>/`; nothing was loaded
  and the previous partition (if any) is untouched. Fix the source (or the suite, if the data
  is right and the rule is wrong), then clear the **whole run** (*Clear Run*, not only the
  failed task): clearing validate_batch alone validates the same extracted rows again.
- *extract_{table}* failed at once (no retry): the day was refused at the source and
  quarantined in `{quarantine}/<day>/` (more rows than `max_rows`, rows whose time places them
  in no day, or a time that cannot be read: the rows are kept as they arrived), or the source
  is broken (a missing table or column, a corrupt file, refused credentials). The message says
  what to fix; then clear the whole run.
- *extract_{table}* failed after retries: the source database was down, timed out or locked
  (the message names it); the task retried with back-off. Clear the run once it is back.
"""


@contextmanager
def fail_without_retry_when_rejected() -> Iterator[None]:
    """A quarantined batch, a source that is broken (not just unreachable) or a wrong config
    fails its task at once: retrying cannot help. An unreachable or locked source is retried
    with back-off."""
    from driftline.ingest.etl import SourceBrokenError
    from driftline.ingest.validation import BatchRejectedError

    try:
        yield
    except (BatchRejectedError, SourceBrokenError, ConfigError) as exc:
        raise AirflowFailException(str(exc)) from exc


def curated_asset(usecase: UseCase, settings: Settings) -> Asset:
    """The asset downstream DAGs schedule on: the use-case's curated store."""
    return Asset(name=f"{usecase.name}_curated", uri=f"file://{settings.curated_dir(usecase.name)}")


def etl_dag(usecase: UseCase, settings: Settings) -> DAG:
    curated = curated_asset(usecase, settings)
    schedule, start, end = nightly(usecase)

    @dag(
        dag_id=f"{usecase.name}_etl",
        schedule=schedule,
        start_date=start,
        end_date=end,
        catchup=True,
        max_active_runs=2,
        default_args=DEFAULT_ARGS,
        deadline=night_deadline(usecase),
        tags=["driftline", "etl", usecase.name],
        doc_md=DOC.format(
            name=usecase.name,
            tz=usecase.timezone,
            table=usecase.source.batch_table,
            builds=(
                f"`{usecase.transform}` builds the batch from the extracted tables"
                if usecase.transform
                else f"the `{usecase.source.batch_table}` rows as extracted, cut to the "
                "configured columns"
            ),
            label=usecase.label.rule,
            suite=usecase.validation.suite,
            curated=settings.curated_dir(usecase.name),
            asset=curated.name,
            quarantine=settings.quarantine_dir(usecase.name, dt.date(1, 1, 1)).parent,
        ),
    )
    def pipeline() -> None:
        @task(task_id=f"extract_{usecase.source.batch_table}")
        def extract_batch(data_interval_start=None, data_interval_end=None, run_id=None) -> dict:
            from driftline.ingest import etl

            window = etl.BatchWindow.from_interval(data_interval_start, data_interval_end, usecase)
            with fail_without_retry_when_rejected():
                return etl.extract_to_staging(usecase, settings, window, run_id)

        @task
        def build_batch(extracted: dict) -> dict:
            from driftline.ingest import etl

            with fail_without_retry_when_rejected():
                return etl.transform_staged(usecase, settings, extracted)

        @task
        def validate_batch(built: dict) -> dict:
            from driftline.ingest import etl

            with fail_without_retry_when_rejected():
                return etl.validate_staged(usecase, settings, built)

        @task(outlets=[curated])
        def load_partition(validated: dict, outlet_events=None) -> dict:
            from driftline.ingest import etl

            loaded = etl.load_staged(usecase, settings, validated)
            outlet_events[curated].extra = loaded
            return loaded

        validated = validate_batch(build_batch(extract_batch()))
        with_links(validated, DataDocsLink(usecase=usecase.name, timezone=usecase.timezone))
        load_partition(validated)

    return pipeline()


_settings = Settings.from_env()
# A wrong config is left out here (its DAGs with it): usecase_configs.py shows its problems.
for _usecase in list_usecases(_settings, skip_broken=True):
    globals()[f"{_usecase.name}_etl"] = etl_dag(_usecase, _settings)
