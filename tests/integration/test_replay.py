"""`driftline replay` end to end on real stores: the first champion, nights scored and
reported, the drift policy retraining through DVC + MLflow + the gate, and a resumed replay.

Kept small by a use-case override: nights from 10 January (a 2-day first window), a rule
that fires on any column's drift with no cool-down, and a gate floor of 0.5.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from driftline.cli import main
from driftline.config import Settings, load_usecase
from driftline.monitoring.history import DriftHistory
from driftline.training import registry
from tests.conftest import REPO, copy_curated

pytestmark = pytest.mark.integration

START, END = dt.date(2013, 1, 10), dt.date(2013, 1, 11)


@pytest.fixture
def small_year(tmp_path: Path, curated_days: Path, seeded_source: Path, monkeypatch) -> Settings:
    """A home whose curated store holds 1..12 January (and whose source the next day is scored
    ahead from), under a use-case that fires nightly."""
    config = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    config["training"]["gate"]["floor"] = 0.5
    # every column drifts at a threshold this low: the rule fires each night
    config["monitoring"]["tests"].update(num_threshold=1e-9, cat_threshold=1e-9)
    config["monitoring"]["rule"].update(
        drift_share=0.5, nights_drifted=1, nights_window=1, quality_drop=None, cooldown_days=0,
        from_onset=False, retry_days=None,  # each night's firing trains at once
    )
    usecases = tmp_path / "usecases"
    usecases.mkdir()
    (usecases / "flights.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    settings = Settings(tmp_path / "home", usecases, REPO / "expectations")
    load_usecase("flights", settings)  # the override is a valid use-case
    copy_curated(curated_days, settings.home, dt.date(2013, 1, 12))
    settings.source_dir.mkdir(parents=True)
    (settings.source_dir / "flights.db").symlink_to(seeded_source)
    monkeypatch.setenv("DRIFTLINE_HOME", str(settings.home))
    monkeypatch.setenv("DRIFTLINE_USECASES_DIR", str(usecases))
    monkeypatch.setenv("DRIFTLINE_EXPECTATIONS_DIR", str(settings.expectations_dir))
    for name in ("MLFLOW_TRACKING_URI", "DRIFTLINE_HISTORY_URL", "DRIFTLINE_DVC_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    return settings


def replay(*args: str):
    return CliRunner().invoke(main, ["replay", *args], catch_exceptions=False)


def test_drift_policy_replay_retrains_and_resumes(
    small_year: Settings, tmp_path: Path, monkeypatch
):
    out, docs = tmp_path / "replay", tmp_path / "docs"
    common = ["--policy", "drift", "--start", str(START), "--out", str(out), "--docs", str(docs)]
    first = replay(*common, "--end", str(END))
    assert first.exit_code == 0, first.output
    lines = [line for line in first.output.splitlines() if line.startswith("drift    2013")]
    assert len(lines) == 2 and all("fired" in line and "trained v" in line for line in lines)

    home = out / "drift"
    usecase = load_usecase("flights", small_year)
    policy_settings = Settings(home, small_year.usecases_dir, small_year.expectations_dir)
    versions = registry.client(policy_settings).search_model_versions("name = 'flights_delay'")
    assert len(versions) == 3  # the first champion + one training per night

    # the 11th was scored ahead on the night of the 10th, before its retraining: by the
    # first champion, like the 10th
    nights = pd.read_csv(home / "nights.csv", dtype=str)
    assert nights["night"].tolist() == ["2013-01-10", "2013-01-11"]
    assert nights["champion_version"].tolist() == ["1", "1"]
    assert float(nights.loc[0, "roc_auc"]) > 0.5 and float(nights.loc[0, "training_seconds"]) > 0

    # resumed: only 12 January is new; nothing of the first two nights is redone. The 13th is
    # not loaded: not judged nor recorded, as the DAG would not judge it (the nights' steps
    # are the DAG's: nightly.run_night)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # set by MLflow in this process
    again = replay(*common, "--end", "2013-01-13")
    assert again.exit_code == 0, again.output
    assert [
        line[9:19] for line in again.output.splitlines() if line.startswith("drift    2013")
    ] == ["2013-01-12"]
    history = DriftHistory(policy_settings.history_url)
    try:
        recorded = history.nights(usecase.name, dt.date(2013, 12, 31), 10)
    finally:
        history.dispose()
    assert [n.day for n in recorded] == [START, END, dt.date(2013, 1, 12)]
    # the 12th was scored ahead on the night of the 11th: by the 10th's retraining if it won
    nights = pd.read_csv(home / "nights.csv", dtype=str)
    made_12th = nights.loc[0, "new_version"] if nights.loc[0, "promoted"] == "True" else "1"
    assert nights.loc[2, "champion_version"] == made_12th
    assert (home / "reports" / "flights" / "2013-01-12" / "drift.html").exists()
    assert "| drift | 2013-01-10..2013-01-12 | 3 |" in (docs / "replay-table.md").read_text()
    assert (docs / "replay-quality.png").exists()

    # a replay from another first night does not mix into these stores
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    other = CliRunner().invoke(
        main,
        [
            "replay",
            "--policy",
            "drift",
            "--start",
            "2013-01-11",
            "--end",
            "2013-01-11",
            "--out",
            str(out),
            "--docs",
            str(docs),
        ],
    )
    assert other.exit_code != 0 and "not 2013-01-11" in other.output
