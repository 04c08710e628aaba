"""`driftline`: the platform's core steps without Airflow (seeding, backfills, checks)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from functools import cached_property
from pathlib import Path

import click

from driftline.config import (
    USECASE_ENV,
    ConfigError,
    Settings,
    UseCase,
    load_usecase,
    resolve_usecase_name,
)
from driftline.monitoring.history import FIRED


class _Context:
    """The settings, and the use-case resolved when a command first asks for it: commands
    that need none (`stack`) work whatever the use-cases folder holds."""

    def __init__(self, usecase_name: str | None):
        self.settings = Settings.from_env()
        self._explicit = usecase_name

    @cached_property
    def usecase_name(self) -> str:
        try:
            return resolve_usecase_name(self._explicit, self.settings)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc

    @property
    def usecase(self) -> UseCase:
        return load_usecase(self.usecase_name, self.settings)


pass_context = click.make_pass_decorator(_Context)


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise click.BadParameter(f"--end {end} is before --start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


DATE = click.DateTime(formats=["%Y-%m-%d"])


@click.group()
@click.option(
    "--usecase",
    help=f"Use-case config name (default: ${USECASE_ENV}, else the only config in the "
    "use-cases folder).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every step (INFO).")
@click.pass_context
def main(ctx: click.Context, usecase: str | None, verbose: bool) -> None:
    """driftline: batch MLOps on Airflow. State lives in $DRIFTLINE_HOME (default ./data)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = _Context(usecase)


@main.command()
@click.option("--db", "url", help="SQLAlchemy URL (default: the use-case's source URL).")
@click.option("--start", type=DATE, help="Only the batch table's rows from this day on.")
@click.option("--end", type=DATE, help="... up to this day, inclusive (default: --start).")
@pass_context
def seed(
    ctx: _Context, url: str | None, start: dt.datetime | None, end: dt.datetime | None
) -> None:
    """Load the use-case's source tables into a SQL database (idempotent)."""
    from driftline.ingest.etl import masked_url
    from driftline.ingest.source import seed as seed_tables

    if end is not None and start is None:
        raise click.UsageError("--end needs --start")
    usecase = ctx.usecase
    url = url or ctx.settings.source_url(usecase)
    counts = seed_tables(
        usecase, url, start.date() if start else None, end.date() if end else None
    )
    click.echo(f"seeded {masked_url(url)}")
    for table, rows in counts.items():
        click.echo(f"  {table:<10} {rows:>8,} rows")


@main.command()
@click.option("--start", type=DATE, required=True, help="First day (YYYY-MM-DD).")
@click.option("--end", type=DATE, required=True, help="Last day, inclusive.")
@click.option("--db", "url", help="Source SQLAlchemy URL (default: the use-case's source URL).")
@click.option("--fail-fast", is_flag=True, help="Stop at the first day that fails.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=lambda: os.cpu_count() or 1,
    show_default="the number of cores",
    help="Days loaded at once, one process each.",
)
@pass_context
def etl(
    ctx: _Context,
    start: dt.datetime,
    end: dt.datetime,
    url: str | None,
    fail_fast: bool,
    workers: int,
) -> None:
    """Run the nightly ETL for each day in a range (same steps as the DAG), on all cores."""
    from driftline.ingest.etl import run_days

    usecase = ctx.usecase
    days = _days(start.date(), end.date())
    loaded = label_missing = days_loaded = 0
    failed: list[tuple[dt.date, str]] = []
    began = time.perf_counter()
    for outcome in run_days(usecase, ctx.settings, days, url, workers, fail_fast):
        if outcome.error is not None:
            failed.append((outcome.day, outcome.error))
            click.echo(f"{outcome.day}  FAILED  {outcome.error}", err=True)
            continue
        result = outcome.loaded
        days_loaded += 1
        loaded += result.rows
        label_missing += result.label_missing
        click.echo(
            f"{outcome.day}  {result.rows:>6} rows  {result.label_missing:>4} without label  "
            f"-> {result.path}"
        )
    seconds = time.perf_counter() - began
    click.echo(
        f"{days_loaded} of {len(days)} days loaded: {loaded:,} rows "
        f"({label_missing:,} without label) in {seconds:.1f} s; "
        f"curated store {ctx.settings.curated_dir(usecase.name)}"
    )
    if failed:
        click.echo(f"{len(failed)} days failed: {', '.join(str(d) for d, _ in failed)}", err=True)
        sys.exit(1)


@main.command()
@click.option(
    "--day",
    type=DATE,
    help="Extract and build this day from the source, then validate (with --file: the day the "
    "file holds; by default read from its folder's name).",
)
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Validate a batch Parquet file instead (e.g. a quarantined batch).",
)
@click.option("--db", "url", help="Source SQLAlchemy URL (with --day).")
@pass_context
def validate(ctx: _Context, day: dt.datetime | None, path: Path | None, url: str | None) -> None:
    """Run the expectation suite on a batch without loading anything; exit 1 if it fails.

    With --day it judges what the ETL would: the source's counts, the day's rows placed by
    their instants, the built batch in its stored form, and the reconciliation.
    """
    import pandas as pd

    from driftline.ingest import etl
    from driftline.ingest.validation import RECONCILIATION, reconcile, validate_batch

    usecase = ctx.usecase
    if path is not None:
        the_day = day.date() if day is not None else _day_of(path)
        batch = pd.read_parquet(path)
        outcome = validate_batch(batch, usecase, ctx.settings, the_day)
    elif day is not None:
        the_day = day.date()
        window = etl.BatchWindow.for_day(the_day, usecase)
        source_url = url or ctx.settings.source_url(usecase)
        counts = etl.count_source(usecase, source_url, window)
        click.echo(
            f"source: {counts.day_rows} rows in the day, {counts.unplaced_rows} rows in no day"
        )
        try:
            batch = etl.transform(usecase, etl.extract(usecase, source_url, window))
        except (etl.UnplacedRowsError, etl.TransformError) as exc:
            click.echo(f"  FAILED {exc}")
            sys.exit(1)
        outcome = reconcile(
            validate_batch(batch, usecase, ctx.settings, the_day), len(batch), counts.as_dict()
        )
    else:
        raise click.UsageError("give --day, or --file (with --day if its folder is not a day)")
    failed = [f for f in outcome.failures if f.expectation != RECONCILIATION]
    click.echo(
        f"{len(batch)} rows, suite {outcome.suite!r}: "
        f"{outcome.evaluated - len(failed)} of {outcome.evaluated} passed"
    )
    for failure in outcome.failures:
        click.echo(f"  FAILED {failure.describe()}")
    sys.exit(0 if outcome.success else 1)


def _day_of(path: Path) -> dt.date:
    """The day a batch file holds, from its folders (quarantine/<usecase>/YYYY-MM-DD/...,
    curated/<usecase>/date=YYYY-MM-DD/...)."""
    for folder in path.resolve().parents:
        try:
            return dt.date.fromisoformat(folder.name.removeprefix("date="))
        except ValueError:
            continue
    raise click.UsageError(f"{path}: no day in its folders; give --day")


@main.command()
@click.option("--days", is_flag=True, help="Also list each loaded day's reconciliation.")
@pass_context
def status(ctx: _Context, days: bool) -> None:
    """Where every output of the use-case is, and what is in it."""

    from driftline.ingest.etl import list_partitions, masked_url

    usecase, settings = ctx.usecase, ctx.settings
    partitions = list_partitions(usecase, settings)
    click.echo(f"use-case {usecase.name} (state in {settings.home})")
    click.echo(f"  source database    {masked_url(settings.source_url(usecase))}")
    if partitions:
        rows = sum(r for _, _, r in partitions)
        click.echo(
            f"  curated store      {settings.curated_dir(usecase.name)}: {len(partitions)} "
            f"days ({partitions[0][0]} .. {partitions[-1][0]}), {rows:,} rows"
        )
        _reconciliation_status(partitions, days)
    else:
        click.echo(f"  curated store      {settings.curated_dir(usecase.name)}: empty")
    validations = settings.validation_result_path(usecase.name, dt.date.min).parent
    click.echo(f"  validation results {validations}: {len(list(validations.glob('*.json')))} days")
    quarantined = sorted(settings.quarantine_dir(usecase.name, dt.date.min).parent.glob("*/"))
    click.echo(f"  quarantine         {len(quarantined)} batches")
    loaded = {day: path for day, path, _ in partitions}
    for folder in quarantined:
        click.echo(f"    {folder}: {_quarantine_summary(folder, loaded)}")
    if usecase.training is not None:
        _training_status(usecase, settings)
        _monitoring_status(usecase, settings)
    airflow_home = os.environ.get("AIRFLOW_HOME")
    if airflow_home:
        click.echo(f"  airflow home       {airflow_home} (task logs in {airflow_home}/logs)")


@main.command()
@click.option("--window-end", type=DATE, required=True, help="Last day of the training window.")
@click.option("--window-days", type=int, help="Window length (default: the use-case's).")
@click.option("--reason", default="manual (cli)", show_default=True)
@click.option("--force-promote", is_flag=True, help="Promote even if the gate says no.")
@pass_context
def train(
    ctx: _Context,
    window_end: dt.datetime,
    window_days: int | None,
    reason: str,
    force_promote: bool,
) -> None:
    """Train, register and gate a model in-process (the same steps as the training DAG)."""
    import json

    from driftline.training import pipeline as training
    from driftline.training.request import TrainingRequest

    usecase = ctx.usecase
    conf = {
        "window_end": window_end.date().isoformat(),
        "reason": reason,
        "force_promote": force_promote,
    }
    if window_days is not None:
        conf["window_days"] = window_days
    request = TrainingRequest.from_conf(conf, usecase)
    result = training.train(usecase, ctx.settings, request)
    click.echo(
        json.dumps({k: v for k, v in result.items() if k != "hashes"}, indent=2, default=str)
    )


@main.command()
@click.option(
    "--start",
    type=DATE,
    help="First night (default: the night after the last one in the drift history, else the "
    "use-case's first full-window night: start_date + training.window_days + holdout_days).",
)
@click.option("--end", type=DATE, help="Last night, inclusive (default: the last day loaded).")
@click.option(
    "--retrain",
    is_flag=True,
    help="When the rule fires, train in-process with the conf the sensor would send.",
)
@pass_context
def monitor(
    ctx: _Context, start: dt.datetime | None, end: dt.datetime | None, retrain: bool
) -> None:
    """Score ahead, report and judge each night in a range, in-process (the monitoring DAG's
    steps). With no dates it catches up: from the night after the last one judged to the
    last day loaded.

    Without --retrain the champion stays as it is and a firing night only starts the cool-down.
    """
    from driftline.monitoring import nightly as monitoring
    from driftline.training import pipeline as training
    from driftline.training.request import TrainingRequest

    usecase, settings = ctx.usecase, ctx.settings
    start, end = _monitored_nights(usecase, settings, start, end)
    champion = None  # the previous night's, loaded once
    fired = []
    published = None
    click.echo(f"{'night':<10} {'version':>7} {'rows':>5} {'drift':>6} {'roc_auc':>7}  decision")
    for day in _days(start, end):
        result = monitoring.run_night(usecase, settings, day, champion)
        champion = result.champion
        if result.scored is not None and result.scored.path:
            published = result.scored
        if result.not_scored:
            click.echo(f"{day}  not scored ahead: {result.not_scored}")
        if result.not_judged:
            click.echo(f"{day}  not judged: {result.not_judged}")
            continue
        night, verdict = result.summary, result.verdict
        click.echo(
            f"{day} {champion.version:>7} {night.rows:>5} {night.drift_share:>6.2f} "
            f"{_roc_auc(night):>7}  {verdict.decision}"
        )
        if verdict.fires:
            fired.append(day)
            click.echo(f"           {verdict.reason}")
            if retrain:
                conf = monitoring.retraining_conf(usecase, night, verdict)
                result = training.train(
                    usecase, settings, TrainingRequest.from_conf(conf, usecase)
                )
                click.echo(
                    f"           retrained: version {result['version']}, "
                    f"{'promoted' if result['promoted'] else 'not promoted'} ({result['reason']})"
                )
    click.echo(f"reports in {settings.reports_dir(usecase.name, dt.date.min).parent}")
    if published is not None:
        click.echo(_published_where(settings, published))
    click.echo(f"the rule fired on {len(fired)} night(s): {', '.join(map(str, fired)) or 'none'}")


def _monitored_nights(
    usecase: UseCase, settings: Settings, start: dt.datetime | None, end: dt.datetime | None
) -> tuple[dt.date, dt.date]:
    """`monitor`'s nights: as given, else from the use-case's own state: the last day loaded,
    and the night after the last one in the drift history (else its first full-window night)."""
    from driftline.ingest.etl import list_partitions
    from driftline.monitoring import history as drift_history

    if end is not None:
        last = end.date()
    else:
        partitions = list_partitions(usecase, settings)
        if not partitions:
            raise click.UsageError(f"give --end: no day of {usecase.name} is loaded yet")
        last = partitions[-1][0]
    if start is not None:
        return start.date(), last
    judged: list = []
    if drift_history.exists(settings.history_url):
        ledger = drift_history.DriftHistory(settings.history_url)
        try:
            judged = ledger.nights(usecase.name, dt.date.max, 1)
        finally:
            ledger.dispose()
    if judged:
        first = judged[-1].day + dt.timedelta(days=1)
    else:
        first = usecase.first_full_night()
    if first > last:
        raise click.UsageError(
            f"nothing to monitor: every night of {usecase.name} up to {last} (the last day "
            "loaded) is judged; give --start to judge nights again"
        )
    return first, last


def _published_days(usecase: UseCase, settings: Settings) -> list[dt.date]:
    """The days with a published Parquet partition of predictions, in order."""
    folder = settings.predictions_path(usecase.name, dt.date.min).parent.parent
    found = folder.glob(f"date=*/{settings.predictions_path(usecase.name, dt.date.min).name}")
    return sorted(dt.date.fromisoformat(p.parent.name.removeprefix("date=")) for p in found)


def _published_where(settings, scored) -> str:  # noqa: ANN001 - Settings, scoring.ScoredDay
    from driftline.ingest.etl import masked_url

    return (
        f"predictions of {scored.day} ({scored.rows} rows, version {scored.model_version}) "
        f"published to {scored.path} and the table predictions of "
        f"{masked_url(settings.predictions_url)}"
    )


@main.command("predictions")
@click.option("--day", type=DATE, help="The day scored (default: the newest one published).")
@click.option("--rows", "shown", type=int, default=5, show_default=True, help="Rows to show.")
@pass_context
def show_predictions(ctx: _Context, day: dt.datetime | None, shown: int) -> None:
    """The predictions published for a day: where, by which version, when; a few rows."""
    from driftline.ingest.etl import masked_url
    from driftline.serving import predictions

    usecase, settings = ctx.usecase, ctx.settings
    days = _published_days(usecase, settings)
    if not days:
        raise click.ClickException(
            "no predictions published yet: the monitoring DAG's score_ahead (or `driftline "
            "monitor`) publishes them"
        )
    chosen = day.date() if day else days[-1]
    table = predictions.published_rows(settings, usecase.name, chosen)
    if table.empty:
        raise click.ClickException(
            f"no predictions of {chosen} in {masked_url(settings.predictions_url)} (published "
            f"days: {days[0]} .. {days[-1]})"
        )
    versions = ", ".join(
        f"v{v}: {n}" for v, n in table["model_version"].value_counts().sort_index().items()
    )
    click.echo(
        f"{usecase.name} {chosen}: {len(table)} predictions ({versions}), scored "
        f"{table['scored_at'].min()}"
    )
    click.echo(f"  SQL      table predictions of {masked_url(settings.predictions_url)}")
    click.echo(f"  Parquet  {settings.predictions_path(usecase.name, chosen)}")
    columns = ["key", "event_time", "probability", "model_version"]
    click.echo(table.sort_values("event_time")[columns].head(shown).to_string(index=False))


@main.command()
@click.option("--last", type=int, default=30, show_default=True, help="How many nights.")
@pass_context
def history(ctx: _Context, last: int) -> None:
    """The drift history: each night's figures and the drift sensor's decision."""
    from driftline.ingest.etl import masked_url
    from driftline.monitoring import history as drift_history

    usecase, settings = ctx.usecase, ctx.settings
    if not drift_history.exists(settings.history_url):
        click.echo(f"no night monitored yet ({masked_url(settings.history_url)} does not exist)")
        return
    ledger = drift_history.DriftHistory(settings.history_url)
    try:
        nights = ledger.nights(usecase.name, dt.date.max, last)
    finally:
        ledger.dispose()
    for night in nights:
        click.echo(
            f"{night.day} v{night.model_version} drift {night.drift_share:.2f} "
            f"roc_auc {_roc_auc(night)} {night.decision or 'undecided'}: "
            f"{night.decision_reason or ''}"
        )
        click.echo(f"           {night.drift_basis()}")
        click.echo(f"           {night.quality_basis()}")
        if night.drifted_columns:
            click.echo(f"           drifted: {', '.join(night.drifted_columns)}")
        if night.fired_by:
            label = "fired by" if night.decision == FIRED else "rule held (not fired)"
            click.echo(f"           {label}: {', '.join(night.fired_by)}")
        if night.training_run:
            click.echo(
                f"           retraining: {night.training_run} (MLflow run "
                f"{night.training_mlflow_run}); "
                f"{night.training_decision or 'gate not decided yet'}"
            )


def _roc_auc(night) -> str:
    """A night's ROC AUC as the history shows it: a number, "not-yet" (too few labelled rows
    after the model's training window) or "n/a" (undefined, e.g. one class only)."""
    if night.quality_judged is False:
        return "not-yet"
    return "n/a" if night.roc_auc is None else f"{night.roc_auc:.4f}"


@main.command()
@click.option(
    "--start",
    type=DATE,
    help="First night (default: the first whose first champion trains on a full window: the "
    "use-case's start_date + training.window_days + training.holdout_days).",
)
@click.option(
    "--end",
    type=DATE,
    help="Last night (default: the use-case's end_date, else the last day loaded).",
)
@click.option(
    "--policy",
    "policies",
    type=click.Choice(["never", "monthly", "nightly", "drift", "all"]),
    multiple=True,
    required=True,
    help="When to retrain (repeatable; `all`: the four in turn).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where each policy keeps its stores (default: $DRIFTLINE_HOME/replay).",
)
@click.option(
    "--docs",
    type=click.Path(path_type=Path),
    help="Where the CSV, plot and table go (default: the checkout's docs/replay).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="XGBoost threads per training (over params.yaml's nthread). Policies replay side by "
    "side: two 2-thread fits on 2 cores ran 2-3x slower than 1-thread ones; the models are "
    "the same.",
)
@click.option(
    "--split",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Also tabulate the nights before this day and from it on, apart (e.g. the months "
    "the rule's parameters were chosen on, and the months that test them).",
)
@pass_context
def replay(
    ctx: _Context,
    start: dt.datetime | None,
    end: dt.datetime | None,
    policies: tuple[str, ...],
    out: Path | None,
    docs: Path | None,
    threads: int,
    split: dt.datetime | None,
) -> None:
    """Replay the nights under retraining policies with the DAGs' functions, no scheduler.

    Each night: score with the champion, Evidently reports, the drift rule; then the policy
    decides whether to train (DVC + MLflow + gate). An interrupted replay resumes.
    """
    from driftline.config import project_root
    from driftline.experiments import replay as replaying
    from driftline.experiments import results as replay_results

    usecase, settings = ctx.usecase, ctx.settings
    if usecase.training is None:
        raise click.UsageError(f"use-case {usecase.name} has no training section: no replay")
    usecase = replaying.with_threads(usecase, threads)
    first = start.date() if start else usecase.first_full_night()
    last = end.date() if end else _last_night(usecase, settings)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for noisy in ("mlflow", "alembic"):  # a year of registrations: keep the nights readable
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = out or settings.home / "replay"
    docs = docs or project_root() / "docs" / "replay"
    chosen = replaying.POLICIES if "all" in policies else tuple(dict.fromkeys(policies))

    def progress(night: replaying.NightRecord) -> None:
        auc = "n/a" if night.roc_auc is None else f"{night.roc_auc:.4f}"
        trained = ""
        if night.retrained:
            verdict = "promoted" if night.promoted else "kept the champion"
            trained = f"  trained v{night.new_version} in {night.training_seconds:.0f} s, {verdict}"
        click.echo(
            f"{night.policy:<8} {night.night} v{night.champion_version:<4} roc_auc {auc} "
            f"drift {night.drift_share:.2f} {night.decision}{trained}"
        )

    for policy in chosen:
        began = time.perf_counter()
        try:
            records = replaying.replay(
                usecase, settings, policy, first, last, out, progress
            )
        except replaying.ReplayError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(
            f"{policy}: {len(records)} nights, {sum(r.retrained for r in records)} trainings, "
            f"{time.perf_counter() - began:.0f} s this run"
        )
    for summary in replay_results.write(out, docs, split.date() if split else None):
        click.echo(
            f"{summary.policy:<8} mean ROC AUC {summary.mean_roc_auc:.4f}  worst week "
            f"{summary.worst_week} {summary.worst_week_roc_auc:.4f}  trainings {summary.trainings}"
        )
    click.echo(
        f"wrote {docs / replay_results.COMBINED_CSV}, {replay_results.PLOT}, {replay_results.TABLE}"
    )


def _last_night(usecase: UseCase, settings: Settings) -> dt.date:
    """The use-case's end_date, else the last day in its curated store."""
    from driftline.ingest.etl import list_partitions

    if usecase.end_date is not None:
        return usecase.end_date
    partitions = list_partitions(usecase, settings)
    if not partitions:
        raise click.UsageError(
            f"give --end: use-case {usecase.name} has no end_date and no day loaded yet"
        )
    return partitions[-1][0]


@main.command()
@click.argument("version")
@pass_context
def reproduce(ctx: _Context, version: str) -> None:
    """Restore VERSION's data from the DVC remote, retrain it, compare the metrics."""
    from driftline.training import pipeline as training

    result = training.reproduce(ctx.usecase, ctx.settings, version)
    click.echo(
        f"version {version} at DVC commit {result['commit']} "
        f"(snapshot hash {'matches' if result['same_data'] else 'DIFFERS'}), "
        f"retrained in {result['seconds']} s"
    )
    for metric, logged in result["logged"].items():
        click.echo(
            f"  {metric:<14} logged {logged!r:<22} reproduced {result['reproduced'][metric]!r}"
        )
    click.echo("identical" if result["identical"] else "DIFFERENT")
    sys.exit(0 if result["identical"] and result["same_data"] else 1)


@main.command()
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print the lineage as JSON.")
@pass_context
def lineage(ctx: _Context, version: str, as_json: bool) -> None:
    """Where VERSION came from: code, data hashes, validated days, Airflow run, reason."""
    import json

    from driftline.ingest.etl import masked_url
    from driftline.training import pipeline as training

    info = training.lineage(ctx.usecase, ctx.settings, version)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    days = info["validation"]
    passed = [d for d, v in days.items() if v["success"] is True]
    failed = [d for d, v in days.items() if v["success"] is False]
    unknown = [d for d, v in days.items() if v["success"] is None]
    click.echo(f"{info['model']} version {version}  aliases: {', '.join(info['aliases']) or '-'}")
    click.echo(f"  code revision   {info['code_revision']}")
    click.echo(
        f"  DVC version     commit {info['dvc_commit']} in {info['dvc_workspace']} "
        f"(tag {info['model']}-v{version}), remote {info['dvc_remote']}"
    )
    for path, md5 in info["dvc_hashes"].items():
        click.echo(f"    {path:<22} md5 {md5}")
    click.echo(f"  window          {info['window']}   holdout {info['holdout']}")
    suites = sorted({v["suite"] for v in days.values() if v["suite"]})
    folder = ctx.settings.validation_result_path(ctx.usecase.name, dt.date.min).parent
    click.echo(
        f"  validation      {len(passed)} of {len(days)} days passed {suites} when snapshotted"
        f" (results in {folder})"
        + (f"; FAILED: {failed}" if failed else "")
        + (f"; no result: {unknown}" if unknown else "")
    )
    click.echo(f"  airflow run     {info['airflow_dag_id']} / {info['airflow_run_id']}")
    if info["airflow_run_url"]:
        click.echo(f"                  {info['airflow_run_url']}")
    click.echo(
        f"  mlflow run      {info['mlflow_run_id']} at {masked_url(info['mlflow_tracking_uri'])}"
    )
    click.echo(f"  trigger reason  {info['trigger_reason']}")
    click.echo(f"  gate            {info['gate']['decision']}: {info['gate']['reason']}")


@main.command()
@click.option("--reason", required=True, help="Why (recorded on both versions).")
@pass_context
def rollback(ctx: _Context, reason: str) -> None:
    """Move the `champion` alias back to the `previous` version in one call (and send the
    rollback alert, when alerts are on)."""
    import getpass
    import socket

    from driftline.training import registry

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in this container
        user = "unknown user"
    by = f"{user}@{socket.gethostname()} (driftline rollback)"
    demoted, restored = registry.rollback(ctx.settings, ctx.usecase, reason, by=by)
    click.echo(
        f"{ctx.usecase.training.registered_model}: champion is version {restored} again "
        f"(version {demoted} is now `previous`)"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@pass_context
def serve(ctx: _Context, host: str, port: int) -> None:
    """Serve the use-case's `champion` over REST (POST /invocations); every answer names the
    version that made it, and the request after a promotion or a rollback gets the new one."""
    from driftline.serving.server import serve as run_server

    run_server(ctx.usecase, ctx.settings, host, port)


@main.command("new-usecase")
@click.argument("name")
@click.option("--table", required=True, help="The source table: one row per event.")
@click.option("--time-column", required=True, help="Its event time.")
@click.option(
    "--label-rule", required=True, help="pandas eval expression over the table, e.g. 'delay > 15'."
)
@click.option("--label-name", default="label", show_default=True, help="The label's column.")
@click.option(
    "--label-missing-when-null",
    help="Where this column is null the label is unknown (default: the rule's first column).",
)
@click.option("--key", help="The row key (default: a column unique over the sample).")
@click.option("--timezone", default="UTC", show_default=True, help="Zone of the nightly day.")
@click.option(
    "--source-time-zone", default="UTC", show_default=True,
    help="Zone the source's naive times are written in.",
)
@click.option(
    "--source-url",
    help="SQLAlchemy URL to sample (default: $DRIFTLINE_<NAME>_SOURCE_URL, else the SQLite file "
    "$DRIFTLINE_HOME/source/<name>.db).",
)
@click.option(
    "--sample-days", type=click.IntRange(1, 366), default=14, show_default=True,
    help="Days sampled, ending on the newest row's day (or yesterday).",
)
@click.option(
    "--max-sample-rows", type=click.IntRange(min=1), default=200_000, show_default=True,
    help="At most this many rows are read: the newest days that fit.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing config and suite.")
@pass_context
def new_usecase(ctx: _Context, name: str, **options: object) -> None:
    """Draft usecases/NAME.yaml and expectations/NAME_batch.json from a sample of a table:
    columns, types, nulls, ranges, categories and rows a day as observed, every choice
    commented. A draft to review: a value the sample never showed quarantines its day."""
    from driftline.ingest import starter

    request = starter.StarterRequest(name=name, **options)
    try:
        draft = starter.new_usecase(request, ctx.settings)
    except starter.StarterError as exc:
        raise click.ClickException(str(exc)) from exc
    _describe_draft(draft, ctx.settings)


def _describe_draft(draft, settings: Settings) -> None:  # noqa: ANN001 - starter.Draft
    """What `new-usecase` wrote and decided, and the commands that take it from here."""
    from driftline.config import resolve_usecase_name

    plan, usecase = draft.plan, draft.usecase
    label = plan.label
    click.echo(f"wrote {draft.config_path}\n  and {draft.suite_path} (a draft: review both)")
    click.echo(
        f"  sampled      {plan.sample_rows:,} rows of {plan.request.table}: {plan.observed_days}"
        f" days {plan.first_day} .. {plan.last_day} ({usecase.timezone}), "
        f"{plan.fewest_rows:,}..{plan.most_rows:,} a day\n               from {plan.masked_url}"
    )
    click.echo(f"  key          {usecase.key}")
    click.echo(
        f"  label        {usecase.label.name} = {usecase.label.rule}: true for "
        f"{label.positive_share:.1%} of the labelled rows; unknown where "
        f"{label.missing_when_null} is null"
    )
    for kind in ("categorical", "numerical"):
        columns = getattr(usecase.features, kind)
        click.echo(f"  {kind:<12} {', '.join(columns) or '-'}")
    click.echo(f"  passthrough  {', '.join(usecase.passthrough)} (the label's inputs)")
    for profile, reason in plan.left_out:
        click.echo(f"  left out     {profile.name}: {reason}")
    for note in plan.notes:
        click.echo(f"note: {note}")
    sampled_url, url_env = plan.request.source_url, usecase.source.url_env
    if sampled_url and sampled_url != settings.source_url(usecase):
        click.echo(f"note: the platform reads the source from ${url_env}: set it to that URL")
    try:
        implied = resolve_usecase_name(None, settings) == usecase.name
    except ConfigError:
        implied = False
    cli = "driftline" if implied else f"driftline --usecase {usecase.name}"
    window_end = plan.first_day + dt.timedelta(days=plan.window_days - 1)
    click.echo("next:")
    click.echo(f"  {cli} check")
    click.echo(f"  {cli} etl --start {plan.first_day} --end {plan.last_day}")
    click.echo(f"  {cli} train --window-end {window_end}")
    first_night = window_end + dt.timedelta(days=1)
    if first_night <= plan.last_day:
        click.echo(f"  {cli} monitor --start {first_night} --end {plan.last_day}")


@main.command("check")
@click.option(
    "--usecase",
    "names",
    multiple=True,
    metavar="NAME",
    help="Check only this config (repeatable; also `driftline --usecase NAME check`). "
    "Default: every config in the use-cases folder.",
)
@pass_context
def check_configs(ctx: _Context, names: tuple[str, ...]) -> None:
    """Check use-case configs before anything runs: every problem of each, naming its file
    and field (schema, columns, label rule, slices, the suite and its parameters, the hooks
    imported and their signatures). Exit 1 if there is any."""
    from click.core import ParameterSource

    from driftline.config import check_usecase

    settings = ctx.settings
    group = click.get_current_context().parent
    if not names and group and group.get_parameter_source("usecase") is ParameterSource.COMMANDLINE:
        names = (group.params["usecase"],)
    known = sorted(settings.usecases_dir.glob("*.yaml"))
    paths = [settings.usecase_path(name) for name in names] or known
    if not paths:
        raise click.ClickException(f"no use-case config (*.yaml) in {settings.usecases_dir}")
    problems = 0
    broken = 0
    for path in paths:
        found = (
            check_usecase(path, settings)
            if path.is_file()
            else [f"{path}: no such use-case config (known: {[p.stem for p in known]})"]
        )
        for problem in found:
            click.echo(problem)
        if not found:
            click.echo(f"OK {path.stem} ({path})")
        problems += len(found)
        broken += bool(found)
    if problems:
        plural = "s" if problems > 1 else ""
        click.echo(f"{problems} problem{plural} in {broken} of {len(paths)} use-case configs")
        sys.exit(1)


@main.group()
def stack() -> None:
    """The operator's stack on this machine, run by a supervisord of its own: Airflow, the
    MLflow UI, the Evidently UI, the scoring server. A crashed service is restarted."""


@stack.command("up")
@click.option(
    "--production",
    is_flag=True,
    help="CeleryExecutor, metadata DB, broker and MLflow store from the environment.",
)
@click.option("--timeout", default=240, show_default=True, help="Seconds to wait for health.")
@pass_context
def stack_up(ctx: _Context, production: bool, timeout: int) -> None:
    """Start every service under supervisord, wait until healthy, print the URLs, the users and
    the file holding their passwords (never the passwords: this output ends up in logs)."""
    from driftline.operator import stack as operator_stack

    try:
        state = operator_stack.up(ctx.settings, production=production, timeout=timeout)
    except operator_stack.StackError as exc:
        raise click.ClickException(str(exc)) from exc
    from driftline.operator.alerts import alerts_status

    click.echo(operator_stack.describe(state, alerts=alerts_status()))


@stack.command("down")
@pass_context
def stack_down(ctx: _Context) -> None:
    """Shut supervisord down with every service, then stop whatever of the stack is left."""
    from driftline.operator import stack as operator_stack

    try:
        stopped = operator_stack.down(ctx.settings)
    except operator_stack.StackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "no stack was running")


@stack.command("status")
@pass_context
def stack_status(ctx: _Context) -> None:
    """Each service as supervisord sees it (RUNNING, STARTING, BACKOFF, FATAL...); exits 1
    unless every one is RUNNING."""
    from driftline.operator import stack as operator_stack

    try:
        services = operator_stack.status(ctx.settings)
    except operator_stack.StackError as exc:
        raise click.ClickException(str(exc)) from exc
    for service in services:
        click.echo(f"{service.name:<14} {service.state:<9} {service.description}")
    if any(service.state != "RUNNING" for service in services):
        sys.exit(1)


@stack.command("restart")
@click.argument("service", metavar="NAME")
@click.option("--timeout", default=240, show_default=True, help="Seconds to wait for health.")
@pass_context
def stack_restart(ctx: _Context, service: str, timeout: int) -> None:
    """Restart one service through supervisord (e.g. api-server, scheduler, mlflow), with
    what a crashed one left behind stopped first; wait until it is healthy again."""
    from driftline.operator import stack as operator_stack

    try:
        operator_stack.restart(ctx.settings, service, timeout=timeout)
    except operator_stack.StackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"restarted: {service}")


def _reconciliation_status(partitions: list[tuple[dt.date, Path, int]], each_day: bool) -> None:
    """How many loaded days hold exactly the rows the source counted in them; the days that
    do not (or were loaded before the count existed) by name; with `each_day`, every day."""
    from driftline.storage import read_parquet_metadata

    counted = {day: read_parquet_metadata(p).get("reconciliation") for day, p, _ in partitions}
    agree = [day for day, counts in counted.items() if counts and counts.get("agrees")]
    uncounted = [day for day, counts in counted.items() if not counts]
    click.echo(
        f"  reconciliation     {len(agree)} of {len(partitions)} days hold exactly the rows the "
        "source counts in them"
    )
    if uncounted:
        click.echo(
            f"    not counted (loaded before reconciliation; rerun to count): "
            f"{_day_ranges(uncounted)}"
        )
    if not each_day:
        return
    for day, _, rows in partitions:
        counts = counted[day] or {}
        click.echo(
            f"    {day}  loaded {rows:>7,}  source {counts.get('source_rows', '-'):>7}  "
            f"in no day {counts.get('unplaced_rows', '-'):>4}"
        )


def _day_ranges(days: list[dt.date]) -> str:
    """`2013-01-01..2013-01-05, 2013-01-09`: consecutive days folded into ranges."""
    spans: list[list[dt.date]] = []
    for day in sorted(days):
        if spans and (day - spans[-1][1]).days == 1:
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in spans)


def _quarantine_summary(folder: Path, loaded: dict[dt.date, Path]) -> str:
    import json

    try:
        record = json.loads((folder / "validation.json").read_text())
        failed = ", ".join(
            f["expectation"] + (f"({f['column']})" if f["column"] else "")
            for f in record["failures"]
        )
    except (OSError, ValueError, KeyError) as exc:
        failed = f"(unreadable validation.json: {exc})"
    try:
        partition = loaded.get(dt.date.fromisoformat(folder.name))
    except ValueError:
        partition = None
    if partition and partition.stat().st_mtime > folder.stat().st_mtime:
        failed += " (resolved: the day was loaded later)"
    return failed


def _training_status(usecase: UseCase, settings: Settings) -> None:
    workspace = settings.workspace_dir(usecase.name)
    if not workspace.exists():
        click.echo("  training           no model trained yet")
        return
    from driftline.ingest.etl import masked_url
    from driftline.training import registry

    name = usecase.training.registered_model
    click.echo(
        f"  training workspace {workspace} (git + DVC; remote {settings.dvc_remote(usecase.name)})"
    )
    click.echo(
        f"  mlflow             {masked_url(settings.mlflow_tracking_uri)} (experiment "
        f"{usecase.training.experiment}, model {name})"
    )
    metric = usecase.training.gate.primary_metric
    for alias in (registry.CHAMPION, registry.PREVIOUS, registry.CHALLENGER):
        version = registry.alias_version(settings, name, alias)
        if version is None:
            continue
        info = registry.version_info(settings, usecase, version)
        click.echo(
            f"    @{alias:<10} version {version}: window {info['tags'].get('window')}, "
            f"holdout {metric} {info['metrics'].get(metric, float('nan')):.4f} "
            f"({info['tags'].get('gate.decision', 'not gated')})"
        )


def _monitoring_status(usecase: UseCase, settings: Settings) -> None:
    from driftline.ingest.etl import masked_url
    from driftline.monitoring import history as drift_history

    if not drift_history.exists(settings.history_url):
        click.echo("  monitoring         no night monitored yet")
        return
    ledger = drift_history.DriftHistory(settings.history_url)
    try:
        nights = ledger.nights(usecase.name, dt.date.max, 10_000)
    finally:
        ledger.dispose()
    reports = settings.reports_dir(usecase.name, dt.date.min).parent
    published = _published_days(usecase, settings)
    if published:
        click.echo(
            f"  predictions        {len(published)} days ({published[0]} .. {published[-1]}): "
            f"{settings.predictions_path(usecase.name, dt.date.min).parent.parent} and the "
            f"table predictions of {masked_url(settings.predictions_url)} (`driftline "
            "predictions`)"
        )
    if not nights:
        click.echo("  monitoring         no night monitored yet")
        return
    fired = [str(n.day) for n in nights if n.decision == FIRED]
    click.echo(
        f"  drift history      {masked_url(settings.history_url)}: {len(nights)} nights "
        f"({nights[0].day} .. {nights[-1].day}); fired on {', '.join(fired) or 'none'}"
    )
    click.echo(f"  drift reports      {reports}/<day>/drift.html (+ quality.html, summary.json)")
    click.echo(f"  evidently          evidently ui --workspace {settings.evidently_workspace}")


def run() -> None:
    """Entry point that turns config errors into one readable line instead of a traceback."""
    try:
        main(standalone_mode=True)
    except (ConfigError, ValueError, RuntimeError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
