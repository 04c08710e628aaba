"""Where driftline keeps its state, and what a use-case is.

Read when asked for, never at import: importing this module creates no folder and reads no
file, so DAG files can import it at parse time for free (it needs only pydantic and yaml).
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import inspect
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

HOME_ENV = "DRIFTLINE_HOME"
USECASE_ENV = "DRIFTLINE_USECASE"  # the use-case a command means when not told
USECASES_ENV = "DRIFTLINE_USECASES_DIR"
EXPECTATIONS_ENV = "DRIFTLINE_EXPECTATIONS_DIR"
DVC_REMOTE_ENV = "DRIFTLINE_DVC_REMOTE"

# The longest training window, in days: a use-case's training.window_days and a training
# request's (driftline.training.request, where the request's other limits are).
MAX_WINDOW_DAYS = 366
DVC_REMOTE_ENDPOINT_ENV = "DRIFTLINE_DVC_REMOTE_ENDPOINT"
MLFLOW_ARTIFACTS_ENV = "DRIFTLINE_MLFLOW_ARTIFACT_ROOT"
HISTORY_URL_ENV = "DRIFTLINE_HISTORY_URL"
PREDICTIONS_URL_ENV = "DRIFTLINE_PREDICTIONS_URL"

PREDICTION = "prediction"  # the model's probability column, in predictions and references

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class ConfigError(ValueError):
    """A use-case config or a setting is wrong; the message names the file and the field."""


def project_root() -> Path:
    """The checkout this package was installed from (editable install), else the cwd."""
    candidate = Path(__file__).resolve().parents[2]
    if (candidate / "pyproject.toml").is_file() and (candidate / "usecases").is_dir():
        return candidate
    return Path.cwd()


@dataclass(frozen=True)
class Settings:
    """The platform's folders. Every path driftline writes to is derived here, once."""

    home: Path
    usecases_dir: Path
    expectations_dir: Path
    # Resolved once, when the settings are made: MLflow's own set_tracking_uri() rewrites
    # $MLFLOW_TRACKING_URI, so reading it later would read back whatever was used last.
    mlflow_uri: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        root = project_root()
        return cls(
            home=Path(os.environ.get(HOME_ENV) or root / "data").resolve(),
            usecases_dir=Path(os.environ.get(USECASES_ENV) or root / "usecases").resolve(),
            expectations_dir=Path(
                os.environ.get(EXPECTATIONS_ENV) or root / "expectations"
            ).resolve(),
            mlflow_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,
        )

    @property
    def source_dir(self) -> Path:
        """The embedded source databases (SQLite files made by `driftline seed`)."""
        return self.home / "source"

    def default_source_url(self, usecase: str) -> str:
        return f"sqlite:///{self.source_dir / f'{usecase}.db'}"

    def source_url(self, usecase: UseCase) -> str:
        """The source database URL: the use-case's environment variable, else the SQLite file."""
        return os.environ.get(usecase.source.url_env) or self.default_source_url(usecase.name)

    def curated_dir(self, usecase: str) -> Path:
        return self.home / "curated" / usecase

    def partition_dir(self, usecase: str, day: dt.date) -> Path:
        return self.curated_dir(usecase) / f"date={day.isoformat()}"

    def staging_dir(self, usecase: str, day: dt.date, run: str) -> Path:
        """Hand-over files between the ETL tasks of one run of a day (removed after its load)."""
        safe_run = re.sub(r"[^A-Za-z0-9_.-]", "_", run)
        if set(safe_run) <= {"."}:  # "", "." and "..": the day's folder or its parent
            safe_run = f"_{safe_run}"
        return self.home / "staging" / usecase / day.isoformat() / safe_run

    def predictions_path(self, usecase: str, day: dt.date) -> Path:
        return self.home / "predictions" / usecase / f"date={day.isoformat()}" / "part-0.parquet"

    @property
    def predictions_url(self) -> str:
        """The published predictions' database, which downstream applications read:
        $DRIFTLINE_PREDICTIONS_URL (e.g. PostgreSQL), else SQLite under the home."""
        return os.environ.get(PREDICTIONS_URL_ENV) or f"sqlite:///{self.home / 'predictions.db'}"

    def scoring_checks_dir(self, usecase: str, day: dt.date) -> Path:
        """The features-only validation of the rows scored ahead for `day`, and their
        quarantine when refused (apart from the ETL's: the day's load is judged on its own)."""
        return self.home / "scoring-checks" / usecase / day.isoformat()

    def reports_dir(self, usecase: str, day: dt.date) -> Path:
        """A night's Evidently reports (HTML + JSON) and its summary."""
        return self.home / "reports" / usecase / day.isoformat()

    def reference_path(self, usecase: str, version: str) -> Path:
        """Local copy of a version's drift reference (fetched once from its MLflow run)."""
        return self.home / "references" / usecase / f"v{version}" / "reference.parquet"

    @property
    def evidently_workspace(self) -> Path:
        """The local Evidently workspace that `evidently ui --workspace` serves."""
        return self.home / "evidently"

    @property
    def history_url(self) -> str:
        """The drift history's database: $DRIFTLINE_HISTORY_URL, else SQLite under the home."""
        return os.environ.get(HISTORY_URL_ENV) or f"sqlite:///{self.home / 'monitoring.db'}"

    def quarantine_dir(self, usecase: str, day: dt.date) -> Path:
        return self.home / "quarantine" / usecase / day.isoformat()

    def validation_result_path(self, usecase: str, day: dt.date) -> Path:
        return self.home / "validations" / usecase / f"{day.isoformat()}.json"

    def workspace_dir(self, usecase: str) -> Path:
        """The training workspace (its own git + DVC repo): never the project checkout."""
        return self.home / "training" / usecase

    def dvc_remote(self, usecase: str) -> str:
        """DVC remote URL: $DRIFTLINE_DVC_REMOTE (e.g. s3://bucket/path) or a local folder."""
        remote = os.environ.get(DVC_REMOTE_ENV)
        return (
            f"{remote.rstrip('/')}/{usecase}" if remote else str(self.home / "dvc-remote" / usecase)
        )

    @property
    def mlflow_tracking_uri(self) -> str:
        """$MLFLOW_TRACKING_URI when the settings were made (a server or a database URL),
        else SQLite under the home."""
        return self.mlflow_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str:
        """Artifact root for experiments created against a database store (not a server)."""
        return os.environ.get(MLFLOW_ARTIFACTS_ENV) or (self.home / "mlflow" / "artifacts").as_uri()

    def suite_path(self, suite: str) -> Path:
        return self.expectations_dir / f"{suite}.json"

    def usecase_path(self, name: str) -> Path:
        return self.usecases_dir / f"{name}.yaml"


def _known_zone(name: str) -> str:
    """`name` if it is an IANA time zone (America/New_York, UTC)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    url_env: str
    seed: str | None = None
    indexes: dict[str, list[str]] = Field(default_factory=dict)
    batch_table: str
    time_column: str
    queries: dict[str, str]
    # Rows of the batch table whose time is NULL or unreadable belong to no day; while there
    # are more than this many, no day loads (each night's count is in its validation result).
    max_unplaced_rows: int = Field(0, ge=0)
    # The zone the source's naive times are written in (values with an offset name their own
    # instant); the queries' :start/:end are the day's bounds as naive wall times in it.
    time_zone: str = "UTC"

    @field_validator("time_zone")
    @classmethod
    def _time_zone_exists(cls, name: str) -> str:
        return _known_zone(name)

    @model_validator(mode="after")
    def _batch_query_is_bound(self) -> SourceConfig:
        query = self.queries.get(self.batch_table)
        if query is None:
            raise ValueError(f"queries has no entry for batch_table {self.batch_table!r}")
        if ":start" not in query or ":end" not in query:
            raise ValueError(f"the {self.batch_table} query must bind :start and :end")
        return self


# The math functions pandas.eval knows (pandas.core.computation.ops.MATHOPS): a label rule may
# call these; every other name it reads is a column.
EVAL_FUNCTIONS = frozenset({
    "sin", "cos", "tan", "exp", "log", "expm1", "log1p", "sqrt", "sinh", "cosh", "tanh",
    "arcsin", "arccos", "arctan", "arccosh", "arcsinh", "arctanh", "abs", "log10", "floor",
    "ceil", "arctan2",
})
# What a label rule may be made of: columns, constants, lists, arithmetic, comparisons, boolean
# operators and those functions (pandas.eval refuses the rest, or reads them differently).
_RULE_NODES = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Constant,
    ast.List, ast.Tuple, ast.Call, ast.Load, ast.And, ast.Or, ast.Add, ast.Sub, ast.Mult,
    ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr, ast.Not, ast.USub, ast.UAdd,
    ast.Invert, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
)
_BACKTICKED = re.compile(r"`([^`]+)`")  # pandas.eval's quoting of a column like `arr delay`


def rule_columns(rule: str) -> list[str]:
    """The columns a label rule (a pandas.eval expression) reads, in order of first use.

    Read from its syntax tree, without pandas or data, so a config is judged when it is read.
    Raises ValueError saying what is wrong: a syntax error, or a part pandas.eval would not
    evaluate on a frame's columns (attributes, subscripts, `@` variables, other functions).
    """
    quoted: dict[str, str] = {}

    def placeholder(match: re.Match[str]) -> str:
        quoted[f"_column_{len(quoted)}_"] = match.group(1)
        return f"_column_{len(quoted) - 1}_"

    try:
        tree = ast.parse(_BACKTICKED.sub(placeholder, rule).strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"{rule!r} is not an expression: {exc.msg}") from exc
    functions = set()
    for node in ast.walk(tree):
        if not isinstance(node, _RULE_NODES):
            part = ast.unparse(node) if isinstance(node, ast.expr) else ""
            raise ValueError(
                f"{rule!r}: {type(node).__name__} {part!r} is not allowed (a rule is made of "
                "columns, constants, operators, comparisons and pandas.eval's math functions)"
                if part else f"{rule!r}: the operator {type(node).__name__} is not allowed"
            )
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            if name not in EVAL_FUNCTIONS:
                raise ValueError(
                    f"{rule!r}: {name}() is not one of pandas.eval's math functions "
                    f"({', '.join(sorted(EVAL_FUNCTIONS))})"
                )
            if node.keywords:
                raise ValueError(f"{rule!r}: {name}() takes positional arguments only")
            functions.add(id(node.func))
    names = sorted(
        (n for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in functions),
        key=lambda n: n.col_offset,
    )
    return list(dict.fromkeys(quoted.get(n.id, n.id) for n in names))


class LabelConfig(_Strict):
    name: str
    rule: str  # a pandas.eval expression over the batch's columns
    missing_when_null: str  # the label is unknown (null) where this column is null

    @property
    def reads(self) -> list[str]:
        """The columns the label is computed from: the rule's, then missing_when_null."""
        return list(dict.fromkeys([*rule_columns(self.rule), self.missing_when_null]))


class FeatureConfig(_Strict):
    categorical: list[str] = Field(default_factory=list)
    numerical: list[str] = Field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.categorical, *self.numerical]


class ValidationException(_Strict):
    """A reviewed exception for one day whose source is known to differ."""

    reason: str = Field(min_length=1)
    parameters: dict[str, float | int | str]


class ValidationConfig(_Strict):
    suite: str
    parameters: dict[str, float | int | str] = Field(default_factory=dict)
    # Days whose source is known to differ: their parameters override `parameters`, and the
    # reason is written into the day's validation result.
    exceptions: dict[dt.date, ValidationException] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _exceptions_override_known_parameters(self) -> ValidationConfig:
        for day, exception in self.exceptions.items():
            unknown = sorted(set(exception.parameters) - set(self.parameters))
            if unknown:
                raise ValueError(f"exceptions.{day} overrides unknown parameters {unknown}")
        return self


class GateConfig(_Strict):
    primary_metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    min_improvement: float = 0.0
    floor: float = 0.5
    slice_tolerance: float = 0.05
    min_slice_rows: int = 100
    # the fewest holdout rows outside the champion's training window to compare the two on
    min_compare_rows: int = Field(1000, ge=1)
    # column -> how many of its largest values are slices (0: every value)
    slices: dict[str, int] = Field(default_factory=dict)


# The XGBoost parameters a use-case may set in `training.params` (over params.yaml's `train`
# section): the tree booster's, by their native names, and num_boost_round. The objective and
# the metric are the platform's (a binary classifier); a misspelt name would be ignored by
# XGBoost, so it is refused here.
TRAIN_PARAMS = frozenset({
    "num_boost_round", "learning_rate", "eta", "gamma", "min_split_loss", "max_depth",
    "min_child_weight", "max_delta_step", "subsample", "sampling_method", "colsample_bytree",
    "colsample_bylevel", "colsample_bynode", "lambda", "reg_lambda", "alpha", "reg_alpha",
    "tree_method", "scale_pos_weight", "grow_policy", "max_leaves", "max_bin",
    "num_parallel_tree", "max_cat_to_onehot", "max_cat_threshold", "monotone_constraints",
    "interaction_constraints", "seed", "nthread",
})


class TrainingConfig(_Strict):
    experiment: str
    registered_model: str
    window_days: int = Field(31, ge=1, le=MAX_WINDOW_DAYS)
    holdout_days: int = Field(7, ge=1, le=92)
    min_train_rows: int = Field(1000, ge=1)
    gate: GateConfig = Field(default_factory=GateConfig)
    # This use-case's XGBoost parameters over params.yaml's `train` section (the rest of it
    # stands); a version's params.yaml records the values it was trained with.
    params: dict[str, bool | int | float | str] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _params_are_xgboost_params(
        cls, params: dict[str, bool | int | float | str]
    ) -> dict[str, bool | int | float | str]:
        unknown = sorted(set(params) - TRAIN_PARAMS)
        if unknown:
            raise ValueError(
                f"unknown XGBoost parameter(s) {unknown}; known: {sorted(TRAIN_PARAMS)}"
            )
        rounds = params.get("num_boost_round")
        whole = isinstance(rounds, int) and not isinstance(rounds, bool)
        if rounds is not None and not (whole and rounds >= 1):
            raise ValueError(f"num_boost_round: {rounds!r} is not a whole number >= 1")
        return params


class ReferenceConfig(_Strict):
    """The drift reference made once per version: a seeded sample of its training rows."""

    rows: int = Field(20000, ge=100, le=1_000_000)
    seed: int = 7


class DriftTestConfig(_Strict):
    """Evidently's per-column drift tests (distances: a column drifts at or above its threshold)."""

    num_method: str = "wasserstein"
    num_threshold: float = Field(0.1, gt=0)
    cat_method: str = "jensenshannon"
    cat_threshold: float = Field(0.1, gt=0)
    # Evidently's own dataset-drift flag: share of drifted columns at or above this.
    dataset_drift_share: float = Field(0.5, gt=0, le=1)


class DriftRule(_Strict):
    """When the drift sensor starts a retraining (judged by
    driftline.monitoring.drift_rule.judge)."""

    drift_share: float = Field(0.5, gt=0, le=1)
    nights_drifted: int = Field(3, ge=1)  # k ...
    nights_window: int = Field(5, ge=1)  # ... of the last n nights
    # Also fire when tonight's ROC AUC is more than this below the champion's holdout figure.
    quality_drop: float | None = Field(None, gt=0, lt=1)
    min_labelled_rows: int = Field(200, ge=1)  # fewer labelled rows: no quality figure
    # No retraining within this many days of the last one: with retry_days unset, of the later
    # of the last firing and the champion's window end; with it set, of the champion's
    # training (its holdout's last day: the night a firing trained it).
    cooldown_days: int = Field(14, ge=0)
    # Set: a retraining the gate refused does not start the cool-down; the next may start
    # this many days after its firing.
    retry_days: int | None = Field(None, ge=0)
    # A firing among drifted nights trains on the new regime: the window starts at the onset
    # (the first night of the run of drifted nights judged with this champion), and the
    # sensor waits until that leaves min_window_days days before the holdout.
    from_onset: bool = False
    min_window_days: int = Field(7, ge=1)

    @model_validator(mode="after")
    def _k_of_n(self) -> DriftRule:
        if self.nights_drifted > self.nights_window:
            raise ValueError(
                f"need k <= n: nights_drifted ({self.nights_drifted}) > nights_window "
                f"({self.nights_window})"
            )
        return self


class MonitoringConfig(_Strict):
    """The nightly drift report and the rule that turns drift into a retraining."""

    # Current data of a night's report: that night and the days before it (1: the night alone).
    current_days: int = Field(1, ge=1, le=31)
    # Columns judged for drift (default: every model feature); the prediction always is.
    columns: list[str] | None = None
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    tests: DriftTestConfig = Field(default_factory=DriftTestConfig)
    rule: DriftRule = Field(default_factory=DriftRule)


class ScoringConfig(_Strict):
    """What a night scores before its outcome exists, and when that outcome arrives."""

    # next_day: the rows of the day after the night, read from the source (their features are
    # known before the day starts: a schedule); loaded_day: the day just loaded, for a
    # use-case whose rows arrive with their features and learn their outcome later.
    ahead: Literal["next_day", "loaded_day"] = "next_day"
    # The labels of day X are in the curated store from the night of X + this many days
    # (0: with the day's own ETL). A night judges the predictions of labelled days only.
    label_delay_days: int = Field(0, ge=0, le=366)


class UseCase(_Strict):
    """One use-case: where its data comes from, how a batch is built, and how it is judged."""

    name: str
    description: str = ""
    timezone: str
    start_date: dt.date
    end_date: dt.date | None = None
    source: SourceConfig
    # Feature code, optional: `package.module:function`, called as function(tables, usecase)
    # and returning the batch (contract: driftline.ingest.etl.transform). Without it, the batch
    # is the batch table as extracted (its query can join), cut to the columns this file names.
    transform: str | None = None
    key: str
    event_time: str
    label: LabelConfig
    features: FeatureConfig
    passthrough: list[str] = Field(default_factory=list)
    validation: ValidationConfig
    training: TrainingConfig | None = None
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    # A nightly run (ETL, monitoring) not finished this many hours after it was queued (at
    # midnight, when on time) raises one deadline alert (Airflow's Deadline Alerts); None:
    # no deadline.
    night_deadline_hours: float | None = Field(None, gt=0, le=168)

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("must be lower-case letters, digits and _ (it names DAGs and folders)")
        return name

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, name: str) -> str:
        return _known_zone(name)

    @model_validator(mode="after")
    def _monitored_columns_are_features(self) -> UseCase:
        unknown = set(self.monitoring.columns or []) - set(self.features.all)
        if unknown:
            raise ValueError(f"monitoring.columns: not features: {sorted(unknown)}")
        return self

    @model_validator(mode="after")
    def _onset_window_fits(self) -> UseCase:
        rule, training = self.monitoring.rule, self.training
        if rule.from_onset and training and rule.min_window_days > training.window_days:
            raise ValueError(
                f"monitoring.rule.min_window_days: {rule.min_window_days} is longer than "
                f"training.window_days ({training.window_days}): a window from the onset "
                "could never be long enough"
            )
        return self

    @property
    def drift_columns(self) -> list[str]:
        """The columns a drift report judges: the configured features, then the prediction."""
        return [*(self.monitoring.columns or self.features.all), "prediction"]

    @property
    def tz(self) -> ZoneInfo:
        # not cached: a model_copy(update=...) would keep the old zone (ZoneInfo caches)
        return ZoneInfo(self.timezone)

    def day_start(self, day: dt.date) -> dt.datetime:
        """The local midnight that starts `day`, in the use-case's zone: the data interval
        start of the nightly run covering `day` (a scheduled run's logical date), and, for
        `day` + 1, its interval end (the date `airflow dags test` takes to run `day`)."""
        return dt.datetime.combine(day, dt.time(), tzinfo=self.tz)

    def run_day(self, data_interval_start: dt.datetime) -> dt.date:
        """The day a nightly run covers: its data interval start, in the use-case's zone."""
        return run_day(data_interval_start, self.timezone)

    def first_full_night(self) -> dt.date:
        """The first night whose first champion can train on a full window: the use-case's
        first day, its training window and its holdout before it (replay's and monitor's
        default first night)."""
        training = self.training or TrainingConfig(experiment="", registered_model="")
        return self.start_date + dt.timedelta(days=training.window_days + training.holdout_days)

    def day_bounds(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The use-case's local `day` as UTC instants: start inclusive, end exclusive."""
        start, end = self.day_start(day), self.day_start(day + dt.timedelta(days=1))
        return start.astimezone(dt.UTC), end.astimezone(dt.UTC)

    def scored_day(self, night: dt.date) -> dt.date:
        """The day whose rows the night scores ahead (see ScoringConfig.ahead)."""
        ahead = self.scoring.ahead == "next_day"
        return night + dt.timedelta(days=1) if ahead else night

    def last_labelled_day(self, night: dt.date) -> dt.date:
        """The newest day whose labels have arrived by the night."""
        return night - dt.timedelta(days=self.scoring.label_delay_days)

    @property
    def scoring_columns(self) -> list[str]:
        """What a row scored ahead holds: key, time and features (no label, no passthrough)."""
        return [self.key, self.event_time, *self.features.all]

    @property
    def curated_columns(self) -> list[str]:
        """The curated store's columns, in order: key, time, features, label, passthrough."""
        columns = [self.key, self.event_time, *self.features.all, self.label.name]
        return columns + [c for c in self.passthrough if c not in columns]

    @property
    def batch_table_columns(self) -> list[str]:
        """What the batch table must supply when there is no `transform`: the curated columns
        but the label, then the columns the label is computed from. Raises ValueError when
        the label rule cannot be read."""
        curated = [c for c in self.curated_columns if c != self.label.name]
        return list(dict.fromkeys([*curated, *self.label.reads]))


def run_day(data_interval_start: dt.datetime, timezone: str) -> dt.date:
    """The day a nightly run covers: its data interval start, in the use-case's `timezone`
    (UseCase.run_day; the plugin's links know the zone's name only). A naive instant is
    refused: read in the machine's zone, it would name another day."""
    if data_interval_start.utcoffset() is None:
        raise ValueError(f"{data_interval_start!r} has no time zone")
    local = data_interval_start.astimezone(ZoneInfo(timezone))
    return dt.date(local.year, local.month, local.day)  # not pendulum's Date


def load_usecase(name: str, settings: Settings | None = None) -> UseCase:
    """Read `usecases/<name>.yaml`; a wrong or missing field is named in the error."""
    settings = settings or Settings.from_env()
    path = settings.usecase_path(name)
    if not path.is_file():
        known = sorted(p.stem for p in settings.usecases_dir.glob("*.yaml"))
        raise ConfigError(f"no use-case {name!r}: {path} does not exist (known: {known})")
    return parse_usecase(path, settings)


def resolve_usecase_name(
    explicit: str | None, settings: Settings, env: Mapping[str, str] | None = None
) -> str:
    """The use-case a command means: the one named (`--usecase`), else $DRIFTLINE_USECASE,
    else the only config in the use-cases folder; with none or several, a ConfigError that
    names the configs and both ways to choose."""
    if explicit:
        return explicit
    env = os.environ if env is None else env
    if env.get(USECASE_ENV):
        return env[USECASE_ENV]
    known = sorted(p.stem for p in settings.usecases_dir.glob("*.yaml"))
    if len(known) == 1:
        return known[0]
    found = f"configs {known}" if known else "no config (*.yaml)"
    raise ConfigError(
        f"which use-case? {settings.usecases_dir} holds {found}: pass --usecase NAME or set "
        f"${USECASE_ENV}"
    )


def parse_usecase(path: Path, settings: Settings | None = None) -> UseCase:
    """The use-case config at `path`, or a ConfigError naming every problem read_usecase
    finds, one line each."""
    usecase, problems = read_usecase(path, settings or Settings.from_env())
    if problems:
        raise ConfigError("\n".join(problems))
    assert usecase is not None  # no problem: it was read
    return usecase


# A problem of a config: the field it is in ("" for the whole file) and what is wrong.
_Problem = tuple[str, str]
# Filled in by the platform in every suite (driftline.ingest.validation.suite_parameters).
PLATFORM_PARAMETERS = ("day_start", "day_end")
# The arguments by which a Great Expectations expectation names columns of the batch.
_COLUMN_KWARGS = ("column", "column_A", "column_B", "column_list", "column_set")


def read_usecase(path: Path, settings: Settings) -> tuple[UseCase | None, list[str]]:
    """The config at `path` and every problem that can be found without running use-case
    code, each "<file>: <field>: <what is wrong>": its schema (all of pydantic's errors), then,
    when that holds, its consistency (name, columns, label rule, slices, suite). The use-case
    is None when the schema is wrong. Reads the file and its suite only: cheap enough for
    DAG files at parse time."""
    found: list[_Problem] = []
    usecase = _validated(path, found)
    if usecase is not None:
        found += _consistency_problems(usecase, path, settings)
    return usecase, _rendered(path, found)


def check_usecase(path: Path, settings: Settings) -> list[str]:
    """Every problem of the config at `path` (read_usecase's), plus what only running code
    finds: its hooks imported and their signatures bound, its suite's expectations built by
    Great Expectations. `driftline check`: imports use-case code, pandas and GX."""
    usecase, problems = read_usecase(path, settings)
    if usecase is None:
        return problems
    found = _hook_problems(usecase)
    suite, _ = _read_suite(settings.suite_path(usecase.validation.suite))
    if suite is not None:
        from driftline.ingest.validation import expectation_problems

        name = settings.suite_path(usecase.validation.suite).name
        found += [("validation.suite", f"{name}: {p}") for p in expectation_problems(suite)]
    return problems + _rendered(path, found)


def config_problems(settings: Settings) -> list[str]:
    """read_usecase's problems of every config in the use-cases folder."""
    return [
        problem
        for path in sorted(settings.usecases_dir.glob("*.yaml"))
        for problem in read_usecase(path, settings)[1]
    ]


def _rendered(path: Path, found: list[_Problem]) -> list[str]:
    return [f"{path}: {field}: {what}" if field else f"{path}: {what}" for field, what in found]


def _validated(path: Path, found: list[_Problem]) -> UseCase | None:
    try:
        # libyaml's loader when PyYAML has it: 40x faster, and every DAG file reads every config
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        found.append(("", f"not valid YAML: {exc}"))
        return None
    if not isinstance(raw, dict):
        found.append(("", "expected a mapping at the top level"))
        return None
    try:
        return UseCase.model_validate(raw)
    except ValidationError as exc:
        found += [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]
        return None


def _consistency_problems(usecase: UseCase, path: Path, settings: Settings) -> list[_Problem]:
    """What the schema alone cannot see: fields that must agree with each other, with the
    file's name and with the suite."""
    found: list[_Problem] = []
    if usecase.name != path.stem:
        found.append(("name", f"{usecase.name!r} must match the file name {path.stem!r}"))
    roles = [
        ("key", usecase.key),
        ("event_time", usecase.event_time),
        *(("features.categorical", c) for c in usecase.features.categorical),
        *(("features.numerical", c) for c in usecase.features.numerical),
        ("label.name", usecase.label.name),
    ]
    seen: dict[str, str] = {}
    for field, column in roles:
        if column in seen:
            found.append((field, f"{column!r} is also {seen[column]}: a column has one role"))
        seen.setdefault(column, field)
    found += _label_problems(usecase)
    slices = usecase.training.gate.slices if usecase.training else {}
    not_features = [c for c in slices if c not in usecase.features.all]
    if not_features:
        found.append((
            "training.gate.slices",
            f"not features: {not_features} (a slice is the rows of one value of a feature)",
        ))
    return found + _suite_problems(usecase, settings)


def _label_problems(usecase: UseCase) -> list[_Problem]:
    label = usecase.label
    try:
        reads = rule_columns(label.rule)
    except ValueError as exc:
        return [("label.rule", str(exc))]
    kept = [c for c in usecase.curated_columns if c != label.name]
    if label.missing_when_null == label.name:
        return [("label.missing_when_null", "is the label itself: name a column it comes from")]
    if label.missing_when_null not in kept and label.missing_when_null not in reads:
        return [(
            "label.missing_when_null",
            f"{label.missing_when_null!r} is neither read by the label rule nor one of the "
            "batch's columns (key, event_time, features, passthrough)",
        )]
    return []


def _read_suite(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The suite file's expectations, or what is wrong with it."""
    if not path.is_file():
        return None, f"no suite file {path}"
    try:
        suite = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"{path} is not valid JSON: {exc}"
    expectations = suite.get("expectations") if isinstance(suite, dict) else None
    if not isinstance(expectations, list) or not all(
        isinstance(e, dict) and isinstance(e.get("type"), str)
        and isinstance(e.get("kwargs", {}), dict)
        for e in expectations
    ):
        return None, (
            f"{path}: expected {{\"name\": ..., \"expectations\": [{{\"type\": ..., "
            "\"kwargs\": {...}}, ...]}"
        )
    return suite, None


def _suite_problems(usecase: UseCase, settings: Settings) -> list[_Problem]:
    """The suite must exist, name only the batch's columns (all of them, in order, where it
    lists them) and use only $PARAMETERs the config gives a value."""
    path = settings.suite_path(usecase.validation.suite)
    suite, wrong = _read_suite(path)
    if suite is None:
        return [("validation.suite", str(wrong))]
    columns = usecase.curated_columns
    known_parameters = {*usecase.validation.parameters, *PLATFORM_PARAMETERS}
    unknown_columns: dict[str, list[str]] = {}
    unknown_parameters: dict[str, list[str]] = {}
    listing: list[str] = []
    for number, expectation in enumerate(suite["expectations"], 1):
        kwargs = expectation.get("kwargs", {})
        where = f"#{number} {expectation['type']}"
        for argument in _COLUMN_KWARGS:
            named = kwargs.get(argument)
            for column in [named] if isinstance(named, str) else named or []:
                if isinstance(column, str) and column not in columns:
                    unknown_columns.setdefault(column, []).append(where)
        listed = kwargs.get("column_list")
        ordered = expectation["type"] == "expect_table_columns_to_match_ordered_list"
        if ordered and isinstance(listed, list) and len(set(columns)) == len(columns):
            unlisted = [c for c in columns if c not in listed]
            if unlisted:
                listing.append(f"{path.name}: {where} does not list the columns {unlisted}")
            elif set(listed) <= set(columns) and listed != columns:
                at = next(
                    i for i, c in enumerate(listed) if i >= len(columns) or c != columns[i]
                )
                has = repr(columns[at]) if at < len(columns) else "no column"
                listing.append(
                    f"{path.name}: {where} lists the columns in another order than the batch "
                    f"(key, event_time, features, label, passthrough): {listed[at]!r} at "
                    f"position {at + 1}, where the batch has {has}"
                )
        for parameter in _parameters(kwargs):
            if parameter not in known_parameters:
                unknown_parameters.setdefault(parameter, []).append(where)
    found = [
        ("validation.suite", f"{path.name}: {', '.join(where)}: column {column!r} is not one "
         "of the config's columns (key, event_time, features, label, passthrough)")
        for column, where in unknown_columns.items()
    ]
    found += [("validation.suite", text) for text in listing]
    found += [
        ("validation.parameters", f"no value for the suite's $PARAMETER {name!r} "
         f"({path.name}: {', '.join(where)})")
        for name, where in unknown_parameters.items()
    ]
    return found


def _parameters(value: Any) -> list[str]:
    """The names of the `{"$PARAMETER": name}` placeholders anywhere in `value`."""
    if isinstance(value, dict):
        if isinstance(value.get("$PARAMETER"), str):
            return [value["$PARAMETER"]]
        return [name for item in value.values() for name in _parameters(item)]
    if isinstance(value, list):
        return [name for item in value for name in _parameters(item)]
    return []


def _hook_problems(usecase: UseCase) -> list[_Problem]:
    """Each hook importable, callable, and callable as the platform calls it."""
    hooks = [("transform", usecase.transform, ("tables", "usecase")),
             ("source.seed", usecase.source.seed, ())]
    found: list[_Problem] = []
    for field, dotted, arguments in hooks:
        if dotted is None:
            continue
        try:
            hook = import_object(dotted)
        except ConfigError as exc:
            found.append((field, str(exc)))
            continue
        if not callable(hook):
            found.append((field, f"{dotted} is a {type(hook).__name__}, not a function"))
            continue
        try:
            signature = inspect.signature(hook)
        except (TypeError, ValueError):  # some builtins have none: nothing to compare
            continue
        try:
            signature.bind(*arguments)
        except TypeError as exc:
            call = f"{dotted.partition(':')[2]}({', '.join(arguments)})"
            found.append((field, f"{dotted} cannot be called as {call}: {exc}"))
    return found


def import_object(dotted: str, field: str | None = None) -> Any:
    """The object named `package.module:attribute` (the config's hooks into use-case code).

    Anything that stops the import (a missing module, a syntax error in it, an error its
    top level raises) is a ConfigError naming `field`, the config's field that names it."""
    where = f"{field}: " if field else ""
    module, colon, attribute = dotted.partition(":")
    if not (module and colon and attribute):
        raise ConfigError(f"{where}{dotted!r} is not of the form package.module:attribute")
    try:
        return getattr(importlib.import_module(module), attribute)
    except Exception as exc:  # importing runs the module: anything may stop it
        raise ConfigError(
            f"{where}cannot import {dotted!r}: {type(exc).__name__}: {exc}"
        ) from exc


def list_usecases(settings: Settings | None = None, skip_broken: bool = False) -> list[UseCase]:
    """Every use-case config in the folder. A wrong one raises a ConfigError naming every
    problem of every wrong config; with `skip_broken` it is left out (and logged): the DAG
    files, so that one wrong file takes no other use-case's DAGs down (dags/usecase_configs.py
    shows its problems as the one import error)."""
    settings = settings or Settings.from_env()
    usecases, problems = [], []
    for path in sorted(settings.usecases_dir.glob("*.yaml")):
        usecase, found = read_usecase(path, settings)
        if found:
            problems += found
            if skip_broken:
                log.warning("use-case config %s left out: %d problem(s)", path, len(found))
        else:
            usecases.append(usecase)
    if problems and not skip_broken:
        raise ConfigError("\n".join(problems))
    return usecases
