"""An operator's month on the embedded default, through the `driftline` CLI only.

SQLite source, local files, MLflow's SQLite store and the DVC workspace under one temp
DRIFTLINE_HOME, each command a process of its own (tests.warm_cli): ETL nights with a rerun,
a rejected day fixed and reloaded, a first champion, monitored nights until the drift rule
retrains, the sensor's window retrained by hand, another window, a rollback, more nights;
then every store must agree with the others. The steps share their state, so they are one
test; a failure names its step.

Kept small: 1-20 January come from the session's curated store, 7-day windows (the holdout is
the use-case's 7 days), nights judged alone by a rule that fires on any drift once a 10-day
cool-down is over, so it fires exactly once in the month.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from driftline.config import Settings, load_usecase
from driftline.ingest import etl
from driftline.monitoring.history import DriftHistory
from tests.conftest import (
    BREAK_ONE_ORIGIN,
    FIX_ORIGIN,
    REPO,
    copy_curated,
    corrupt,
    repo_settings,
)
from tests.integration.conftest import run

pytestmark = pytest.mark.integration

MODEL = "flights_delay"
DAY = dt.date
WINDOW_DAYS = 7
COOLDOWN_DAYS = 10  # from the champion's window end, or the last firing if later
COPIED_LAST = DAY(2013, 1, 20)  # 1..20 January: copied from the session's curated store
SEEDED = (DAY(2013, 1, 21), DAY(2013, 1, 27))  # the days this month's own ETL reads
RERUN = DAY(2013, 1, 22)  # loaded twice: the second run changes nothing
BAD_DAY = DAY(2013, 1, 23)  # rejected, fixed in the source, reloaded
FIRST_WINDOW_END = DAY(2013, 1, 10)  # v1: 4..10 January, holdout 11..17
FIRING_NIGHT = FIRST_WINDOW_END + dt.timedelta(days=COOLDOWN_DAYS)  # 20 January
OTHER_WINDOW_END = DAY(2013, 1, 16)  # v4: 10..16 January, holdout 17..23 (the fixed day)
LATER_NIGHTS = (DAY(2013, 1, 24), DAY(2013, 1, 26))  # after the rollback
NEVER_PASSES = DAY(2013, 1, 27)  # 3/4 of its flights missing in the source: stays rejected


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


class Month:
    """The month's home, environment and CLI; `step` names what a failure belongs to."""

    def __init__(self, root: Path):
        self.home = root / "home"
        self.usecases = root / "usecases"
        self.settings = Settings(self.home, self.usecases, REPO / "expectations")
        self.current = "setup"
        # nothing of the caller's stores: the embedded default under this home only
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_", "MLFLOW_"))
        }
        self.env.update(
            DRIFTLINE_HOME=str(self.home),
            DRIFTLINE_USECASES_DIR=str(self.usecases),
            DRIFTLINE_EXPECTATIONS_DIR=str(REPO / "expectations"),
            MLFLOW_DISABLE_TELEMETRY="true",
            MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        )

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Any assertion inside names this step of the month; each step prints its time
        (the month has a share of the CI budget)."""
        self.current, began = name, time.perf_counter()
        try:
            yield
        except AssertionError as exc:
            exc.add_note(f"the month failed at step {name!r}")
            raise
        finally:
            print(f"step {name!r}: {time.perf_counter() - began:.1f} s")

    def cli(self, command: str, code: int = 0) -> str:
        """`driftline <command>` as an operator types it, which must exit `code`; its stdout
        and stderr."""
        done = self._run(command, code)
        return done.stdout + done.stderr

    def cli_json(self, command: str) -> dict:
        """A command that prints JSON on stdout (train, lineage --json; MLflow logs to stderr)."""
        return json.loads(self._run(command, 0).stdout)

    def _run(self, command: str, code: int) -> subprocess.CompletedProcess:
        done = run(self.env, "driftline", *shlex.split(command))
        assert done.returncode == code, (
            f"step {self.current!r}: `driftline {command}` exited {done.returncode}, not "
            f"{code}; its output ends:\n{(done.stdout + done.stderr)[-4000:]}"
        )
        return done

    def git(self, *args: str) -> str:
        """git in the training workspace."""
        done = run(self.env, "git", "-C", str(self.settings.workspace_dir("flights")), *args)
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout

    def partition(self, day: dt.date) -> Path:
        return self.settings.partition_dir("flights", day) / etl.PARTITION_FILE

    @property
    def source(self) -> Path:
        return self.home / "source" / "flights.db"


def write_usecase(folder: Path) -> None:
    """flights.yaml with the month's rule (any drift, after the cool-down, nights judged
    alone) and 7-day windows for the sensor's retraining; source, suite and features as
    shipped."""
    config = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    config["training"]["window_days"] = WINDOW_DAYS
    config["monitoring"]["tests"].update(num_threshold=0.01, cat_threshold=0.01)
    # the month tests operations, not what a firing trains on: the configured window, and
    # any firing starts the cool-down (flights ships from_onset and retry_days)
    config["monitoring"]["rule"].update(
        drift_share=0.05, nights_drifted=1, nights_window=1, cooldown_days=COOLDOWN_DAYS,
        from_onset=False, retry_days=None,
    )
    folder.mkdir(parents=True)
    (folder / "flights.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def without_load_time(result: bytes) -> dict:
    """A validation result without GX's batch load time: all that differs between two
    validations of the same batch."""
    record = json.loads(result)
    del record["result"]["meta"]["batch_markers"]["ge_load_time"]
    return record


def history_lines(output: str) -> dict[dt.date, tuple[str, str]]:
    """`driftline history`'s nights: day -> (model version, decision); no day twice."""
    found: dict[dt.date, tuple[str, str]] = {}
    for line in output.splitlines():
        matched = re.match(
            r"(\d{4}-\d\d-\d\d) v(\S+) drift \S+ roc_auc \S+ (fired|skipped: [^:]+|undecided):",
            line,
        )
        if matched:
            night = DAY.fromisoformat(matched[1])
            assert night not in found, f"{night} twice in the drift history:\n{output}"
            found[night] = (matched[2], matched[3])
    return found


def test_a_month_of_operations(tmp_path: Path, curated_days: Path, seeded_source: Path) -> None:
    month = Month(tmp_path)
    write_usecase(month.usecases)
    usecase = load_usecase("flights", month.settings)
    scored_by: dict[dt.date, str] = {}  # each monitored night -> the champion then

    with month.step("0 the embedded source"):
        # the session's seeded copy (`driftline seed --start/--end`:
        # tests/unit/ingest/test_source.py)
        month.source.parent.mkdir(parents=True)
        shutil.copyfile(seeded_source, month.source)
        copy_curated(curated_days, month.home, COPIED_LAST)

    with month.step("1 ETL nights"):
        out = month.cli(f"etl --start {SEEDED[0]} --end {RERUN}")
        assert "2 of 2 days loaded" in out
        template = repo_settings(curated_days)
        for day in days(SEEDED[0], RERUN):  # the bytes the session's ETL wrote from the year
            copied = template.partition_dir("flights", day) / etl.PARTITION_FILE
            assert month.partition(day).read_bytes() == copied.read_bytes(), day
        before = {p: p.read_bytes() for p in month.home.rglob("*") if p.is_file()}
        out = month.cli(f"etl --start {RERUN} --end {RERUN}")
        assert "1 of 1 days loaded" in out
        after = {p: p.read_bytes() for p in month.home.rglob("*") if p.is_file()}
        assert sorted(after) == sorted(before), "the rerun added or removed files"
        result = month.settings.validation_result_path("flights", RERUN)
        changed = [p for p in before if before[p] != after[p]]
        assert set(changed) <= {result}, f"the rerun of {RERUN} changed {changed}"
        assert without_load_time(after[result]) == without_load_time(before[result])

    with month.step("2 a bad day, fixed"):
        corrupt(month.source, usecase, BAD_DAY, BREAK_ONE_ORIGIN)
        out = month.cli(f"etl --start {BAD_DAY} --end {BAD_DAY}", code=1)
        assert "expect_column_values_to_be_in_set on origin: 1 of" in out and "'XXX'" in out
        assert f"1 days failed: {BAD_DAY}" in out
        quarantine = month.settings.quarantine_dir("flights", BAD_DAY)
        assert sorted(p.name for p in quarantine.iterdir()) == ["batch.parquet", "validation.json"]
        assert not month.settings.partition_dir("flights", BAD_DAY).exists()
        corrupt(month.source, usecase, BAD_DAY, FIX_ORIGIN)
        out = month.cli(f"etl --start {BAD_DAY} --end {BAD_DAY}")
        assert "1 of 1 days loaded" in out
        fixed = repo_settings(curated_days).partition_dir("flights", BAD_DAY) / etl.PARTITION_FILE
        assert month.partition(BAD_DAY).read_bytes() == fixed.read_bytes()  # as if never broken

    with month.step("3 first champion"):
        first = month.cli_json(
            f"train --window-end {FIRST_WINDOW_END} --window-days {WINDOW_DAYS} "
            "--reason 'first champion'"
        )
        assert (first["version"], first["promoted"], first["reason"]) == (
            "1",
            True,
            "no champion yet",
        )

    with month.step("4 monitored nights until the rule retrains"):
        # the night before is inside the cool-down from v1's window end
        eve = FIRING_NIGHT - dt.timedelta(days=1)
        out = month.cli(f"monitor --start {eve} --end {FIRING_NIGHT} --retrain")
        scored_by.update({eve: "1", FIRING_NIGHT: "1"})
        assert f"the rule fired on 1 night(s): {FIRING_NIGHT}" in out, out
        retrained = re.search(r"retrained: version 2, (promoted|not promoted)", out)
        assert retrained, out
        sensor = month.cli_json("lineage 2 --json")
        assert sensor["trigger_reason"] == "drift"
        # the sensor's window: its holdout ends on the night that fired
        sensor_end = FIRING_NIGHT - dt.timedelta(days=usecase.training.holdout_days)
        start = sensor_end - dt.timedelta(days=WINDOW_DAYS - 1)
        assert (sensor["window"], sensor["holdout"]) == (
            f"{start}..{sensor_end}",
            f"{sensor_end + dt.timedelta(days=1)}..{FIRING_NIGHT}",
        )
        promoted = retrained[1] == "promoted"
        assert (sensor["gate"]["decision"] == "promoted") == promoted
        champion, previous = ("2", "1") if promoted else ("1", None)

    with month.step("5 the sensor's window again, by hand"):
        again = month.cli_json(
            f"train --window-end {sensor_end} --window-days {WINDOW_DAYS} "
            "--reason 'same window by hand'"
        )
        # the same data gives the same model (DVC's cache): it does not beat itself, nor
        # what v2 did not beat
        assert (again["version"], again["promoted"]) == ("3", False), again
        if promoted:
            assert "does not beat the champion's" in again["reason"], again
        else:
            assert again["reason"] == sensor["gate"]["reason"], again
        manual = month.cli_json("lineage 3 --json")
        assert manual["window"] == sensor["window"]
        assert manual["dvc_hashes"]["model"] == sensor["dvc_hashes"]["model"]

    with month.step("6 another window"):
        # main fails here (issue 17): `dvc repro` finds 'model' tracked by git after step 5
        forced = month.cli_json(
            f"train --window-end {OTHER_WINDOW_END} --window-days {WINDOW_DAYS} "
            "--force-promote --reason 'another window, pushed by hand'"
        )
        assert (forced["version"], forced["promoted"]) == ("4", True), forced
        champion, previous = "4", champion

    with month.step("7 rollback"):
        out = month.cli("rollback --reason 'v4 is worse at JFK'")
        assert f"champion is version {previous} again (version 4 is now `previous`)" in out
        champion, previous = previous, "4"

    with month.step("8 more nights, one of them rejected"):
        corrupt(
            month.source,
            usecase,
            NEVER_PASSES,
            "DELETE FROM flights WHERE time_hour >= :start AND time_hour < :end AND rowid % 4",
        )
        out = month.cli(f"etl --start {LATER_NIGHTS[0]} --end {NEVER_PASSES}", code=1)
        assert "3 of 4 days loaded" in out and f"1 days failed: {NEVER_PASSES}" in out
        assert "expect_table_row_count_to_be_between" in out
        out = month.cli(f"monitor --start {LATER_NIGHTS[0]} --end {NEVER_PASSES} --retrain")
        scored_by.update({night: champion for night in days(*LATER_NIGHTS)})
        for night in days(*LATER_NIGHTS):
            assert re.search(rf"^{night} +{champion} ", out, re.M), out
        # the 26th cannot score the 27th ahead (the same broken source), and is judged anyway
        assert f"{LATER_NIGHTS[1]}  not scored ahead: flights batch for {NEVER_PASSES}" in out
        assert "flights_batch.features" in out and "scoring-checks" in out, out
        assert f"{NEVER_PASSES}  not judged: " in out, out
        assert "the ETL validation failed and nothing was loaded" in out, out  # not "run the ETL"
        assert "the rule fired on 0 night(s): none" in out and "retrained" not in out

    with month.step("9 the stores agree"):
        versions = ["1", "2", "3", "4"]
        assert sorted(month.git("tag", "--list").split()) == [f"{MODEL}-v{v}" for v in versions]
        aliases = {}
        for version in versions:
            info = month.cli_json(f"lineage {version} --json")
            commit = info["dvc_commit"]
            assert month.git("cat-file", "-t", commit).strip() == "commit", version
            assert month.git("rev-parse", f"{MODEL}-v{version}^{{commit}}").strip() == commit
            assert info["validation"] and all(d["success"] for d in info["validation"].values())
            aliases.update({alias: version for alias in info["aliases"]})
        assert (aliases["champion"], aliases["previous"], aliases["challenger"]) == (
            champion,
            previous,
            "4",
        )
        assert month.git("status", "--porcelain") == ""
        in_git = [
            path
            for path in month.git("ls-files").split()
            if path.startswith("model/") or re.fullmatch(r"data/[^/]+\.parquet", path)
        ]
        assert in_git == [], f"DVC outputs tracked by git in the workspace: {in_git}"

        recorded = history_lines(month.cli("history --last 100"))
        assert {night: v for night, (v, _) in recorded.items()} == scored_by
        assert {night: d for night, (_, d) in recorded.items()} == {
            **{night: "skipped: cool-down" for night in scored_by},
            FIRING_NIGHT: "fired",
        }
        ledger = DriftHistory(month.settings.history_url)
        try:
            rows = {n.day: n.model_version for n in ledger.nights("flights", DAY.max, 1000)}
        finally:
            ledger.dispose()
        assert rows == scored_by
        fired = history_night(month, FIRING_NIGHT)  # the evidence follows the decision
        assert fired.fired_by == ["drift share"], fired
        assert fired.training_run and fired.training_run.startswith("driftline-cli/"), fired
        assert fired.training_decision.startswith(
            f"version 2 {'promoted' if promoted else 'not promoted'}: "), fired

        loaded = days(DAY(2013, 1, 1), LATER_NIGHTS[1])
        curated = month.settings.curated_dir("flights")
        assert sorted(
            p.relative_to(curated).as_posix() for p in curated.rglob("*") if p.is_file()
        ) == [f"date={day}/{etl.PARTITION_FILE}" for day in loaded]
        quarantined = month.settings.quarantine_dir("flights", BAD_DAY).parent
        assert sorted(p.name for p in quarantined.iterdir()) == [str(BAD_DAY), str(NEVER_PASSES)]

        out = month.cli("status")
        assert f"{len(loaded)} days (2013-01-01 .. {LATER_NIGHTS[1]})" in out, out
        assert "quarantine         2 batches" in out, out
        assert re.search(rf"{BAD_DAY}: .*\(resolved: the day was loaded later\)", out), out
        assert re.search(rf"{NEVER_PASSES}: expect_table_row_count_to_be_between\n", out), out
        assert re.search(rf"@champion\s+version {champion}:", out), out
        assert re.search(r"@previous\s+version 4:", out), out
        assert f"{len(scored_by)} nights (" in out and f"fired on {FIRING_NIGHT}" in out, out


def history_night(month: Month, day: dt.date):
    ledger = DriftHistory(month.settings.history_url)
    try:
        return ledger.night("flights", day)
    finally:
        ledger.dispose()
