"""The `driftline` commands the README uses, on the real data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from driftline.cli import main
from tests.conftest import corrupt, repo_settings, sqlite_url


@pytest.fixture
def cli(settings, monkeypatch):
    monkeypatch.setenv("DRIFTLINE_HOME", str(settings.home))

    def invoke(*args: str):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_etl_over_a_range_loads_each_day(cli, seeded_source, settings):
    done = cli("etl", "--start", "2013-01-01", "--end", "2013-01-02",
               "--db", sqlite_url(seeded_source))
    assert done.exit_code == 0, done.output
    assert "2 of 2 days loaded: 1,785 rows (26 without label)" in done.output
    status = cli("status")
    assert "2 days (2013-01-01 .. 2013-01-02), 1,785 rows" in status.output
    assert "quarantine         0 batches" in status.output
    assert "2 of 2 days hold exactly the rows the source counts in them" in status.output
    per_day = cli("status", "--days").output
    assert "2013-01-01  loaded     842  source     842  in no day    0" in per_day


def test_etl_goes_on_past_a_broken_day_and_exits_1_naming_it(cli, source_copy, usecase):
    import datetime as dt

    corrupt(source_copy, usecase, dt.date(2013, 1, 2),
            "UPDATE flights SET distance = -1 WHERE time_hour >= :start AND time_hour < :end")
    done = cli("etl", "--start", "2013-01-01", "--end", "2013-01-03",
               "--db", sqlite_url(source_copy))
    assert done.exit_code == 1
    assert "2013-01-02  FAILED" in done.output
    assert "expect_column_values_to_be_between on distance" in done.output
    assert "2 of 3 days loaded" in done.output
    assert "1 days failed: 2013-01-02" in done.output
    status = cli("status")
    assert "quarantine         1 batches" in status.output
    assert "expect_column_values_to_be_between(distance)" in status.output


def test_a_backfill_on_two_processes_writes_the_bytes_of_a_sequential_one(
    seeded_source, usecase, tmp_path
):
    import datetime as dt

    from driftline.ingest import etl

    days = [dt.date(2013, 1, 1) + dt.timedelta(days=n) for n in range(4)]
    url = sqlite_url(seeded_source)
    homes = {workers: repo_settings(tmp_path / f"workers-{workers}") for workers in (1, 2)}
    for workers, home in homes.items():
        outcomes = list(etl.run_days(usecase, home, days, url, workers=workers))
        assert [o.day for o in outcomes] == days and not [o for o in outcomes if o.error]
    for day in days:
        one, two = (home.partition_dir("flights", day) / etl.PARTITION_FILE for home in
                    homes.values())
        assert one.read_bytes() == two.read_bytes(), day


def test_fail_fast_on_two_processes_reports_every_day_it_loaded(
    cli, source_copy, usecase, settings
):
    import datetime as dt

    corrupt(source_copy, usecase, dt.date(2013, 1, 2),
            "UPDATE flights SET distance = -1 WHERE time_hour >= :start AND time_hour < :end")
    done = cli("etl", "--start", "2013-01-01", "--end", "2013-01-10", "--workers", "2",
               "--fail-fast", "--db", sqlite_url(source_copy))
    assert done.exit_code == 1 and "2013-01-02  FAILED" in done.output
    reported = [line.split()[0] for line in done.output.splitlines()
                if line.startswith("2013-") and " rows " in line]
    loaded = sorted(path.parent.name.removeprefix("date=") for path in
                    settings.curated_dir("flights").glob("date=*/part-0.parquet"))
    assert reported == loaded and "2013-01-10" not in loaded  # fail-fast stopped the rest
    assert f"{len(loaded)} of 10 days loaded" in done.output


def test_validate_a_day_and_a_quarantined_file(cli, source_copy, usecase, settings):
    import datetime as dt

    url = sqlite_url(source_copy)
    good = cli("validate", "--day", "2013-01-01", "--db", url)
    assert good.exit_code == 0, good.output
    assert "source: 842 rows in the day, 0 rows in no day" in good.output
    assert "842 rows, suite 'flights_batch': 79 of 79 passed" in good.output
    corrupt(source_copy, usecase, dt.date(2013, 1, 1),
            "UPDATE flights SET origin = 'ZZZ' WHERE time_hour >= :start AND time_hour < :end")
    cli("etl", "--start", "2013-01-01", "--end", "2013-01-01", "--db", url)
    quarantined = settings.quarantine_dir("flights", dt.date(2013, 1, 1)) / "batch.parquet"
    bad = cli("validate", "--file", str(quarantined))
    assert bad.exit_code == 1
    assert "FAILED expect_column_values_to_be_in_set on origin: 842 of 842 rows" in bad.output


def test_end_before_start_is_a_usage_error(cli):
    done = CliRunner().invoke(main, ["etl", "--start", "2013-01-05", "--end", "2013-01-01"])
    assert done.exit_code == 2 and "is before --start" in done.output


def test_an_unknown_usecase_is_one_readable_line(tmp_path):
    script = Path(sys.executable).parent / "driftline"
    done = subprocess.run([str(script), "--usecase", "trains", "status"], capture_output=True,
                          text=True, env={"DRIFTLINE_HOME": str(tmp_path), "PATH": "/usr/bin"})
    assert done.returncode == 2
    assert done.stderr.startswith("error: no use-case 'trains'")
    assert "Traceback" not in done.stderr


def test_status_and_history_on_a_fresh_home_say_nothing_yet_and_create_nothing(cli, settings):
    """The first command a new user types: no traceback, and no state made by reading."""
    status = cli("status")
    assert status.exit_code == 0, status.output
    assert "monitoring         no night monitored yet" in status.output
    history = cli("history")
    assert history.exit_code == 0, history.output
    assert "no night monitored yet" in history.output
    assert not settings.home.exists()


@pytest.fixture
def usecases_dir(tmp_path, monkeypatch) -> Path:
    """A use-cases folder of the test's own, holding flights.yaml only (DRIFTLINE_USECASES_DIR),
    and a fresh home."""
    from tests.conftest import REPO

    folder = tmp_path / "usecases"
    folder.mkdir()
    (folder / "flights.yaml").write_text((REPO / "usecases" / "flights.yaml").read_text())
    monkeypatch.setenv("DRIFTLINE_USECASES_DIR", str(folder))
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DRIFTLINE_USECASE", raising=False)
    return folder


def add_usecase(folder: Path, name: str) -> None:
    """A second config: flights' own under another name."""
    text = (folder / "flights.yaml").read_text()
    (folder / f"{name}.yaml").write_text(text.replace("\nname: flights\n", f"\nname: {name}\n"))


def test_the_only_config_is_the_usecase_without_being_named(usecases_dir):
    add_usecase(usecases_dir, "trains")
    (usecases_dir / "flights.yaml").unlink()
    done = CliRunner().invoke(main, ["status"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("use-case trains ")


def test_with_two_configs_a_command_must_be_told_which_and_says_how(usecases_dir, monkeypatch):
    add_usecase(usecases_dir, "trains")
    unnamed = CliRunner().invoke(main, ["status"])
    assert unnamed.exit_code == 2
    assert f"{usecases_dir} holds configs ['flights', 'trains']" in unnamed.output
    assert "pass --usecase NAME or set $DRIFTLINE_USECASE" in unnamed.output
    named = CliRunner().invoke(main, ["--usecase", "trains", "status"])
    assert named.exit_code == 0 and named.output.startswith("use-case trains "), named.output
    monkeypatch.setenv("DRIFTLINE_USECASE", "trains")
    from_env = CliRunner().invoke(main, ["status"])
    assert from_env.exit_code == 0 and from_env.output.startswith("use-case trains ")
    # the option wins over the environment
    both = CliRunner().invoke(main, ["--usecase", "flights", "status"])
    assert both.output.startswith("use-case flights ")


def test_a_command_without_a_usecase_runs_whatever_the_folder_holds(usecases_dir):
    add_usecase(usecases_dir, "trains")
    done = CliRunner().invoke(main, ["stack", "status"])
    assert "which use-case" not in done.output
    assert "no stack is running" in done.output


def test_replay_nights_default_to_the_usecases_own_dates(usecases_dir, monkeypatch):
    """flights: from the first night with a full-window champion (1 Jan + 31 + 7 days) to its
    end_date; a use-case without end_date: to its last loaded day; none loaded: ask."""
    import datetime as dt

    import pandas as pd

    from driftline import storage
    from driftline.config import Settings
    from driftline.experiments import replay as replaying

    asked = []

    def replay(usecase, settings, policy, start, end, out, progress):
        asked.append((usecase.name, start, end))
        raise replaying.ReplayError("stopped by the test")

    monkeypatch.setattr(replaying, "replay", replay)
    done = CliRunner().invoke(main, ["replay", "--policy", "never"])
    assert done.exit_code == 1 and "stopped by the test" in done.output
    assert asked.pop() == ("flights", dt.date(2013, 2, 8), dt.date(2013, 12, 31))

    text = (usecases_dir / "flights.yaml").read_text()
    (usecases_dir / "flights.yaml").write_text(text.replace('end_date: "2013-12-31"\n', ""))
    unloaded = CliRunner().invoke(main, ["replay", "--policy", "never"])
    assert unloaded.exit_code == 2
    assert "give --end: use-case flights has no end_date and no day loaded yet" in unloaded.output
    for day in (dt.date(2013, 3, 1), dt.date(2013, 3, 2)):
        partition = Settings.from_env().partition_dir("flights", day) / "part-0.parquet"
        storage.write_parquet(pd.DataFrame({"x": [1]}), partition)
    CliRunner().invoke(main, ["replay", "--policy", "never", "--start", "2013-02-20"])
    assert asked.pop() == ("flights", dt.date(2013, 2, 20), dt.date(2013, 3, 2))


def test_monitor_without_dates_catches_up_from_the_last_judged_night_to_the_last_loaded_day(
    settings, usecase
):
    """Before: --start and --end were required. Now the use-case's own state says which
    nights: its first full-window night (nothing judged yet), then the night after the last
    one judged; up to the last day loaded."""
    import datetime as dt

    import click
    import pandas as pd

    from driftline import storage
    from driftline.cli import _monitored_nights
    from driftline.monitoring.history import DriftHistory, NightSummary

    with pytest.raises(click.UsageError, match="no day of flights is loaded yet"):
        _monitored_nights(usecase, settings, None, None)
    for day in (dt.date(2013, 2, 8), dt.date(2013, 2, 10)):
        path = settings.partition_dir("flights", day) / "part-0.parquet"
        storage.write_parquet(pd.DataFrame({"x": [1]}), path)
    first = usecase.first_full_night()
    assert first == dt.date(2013, 2, 8)  # 1 Jan + 31-day window + 7-day holdout
    assert _monitored_nights(usecase, settings, None, None) == (first, dt.date(2013, 2, 10))

    ledger = DriftHistory(settings.history_url)
    ledger.record(NightSummary(usecase="flights", day=dt.date(2013, 2, 9), model_version="1",
                               reference_md5="abc", rows=900, dataset_drift=False,
                               drift_share=0.1))
    ledger.dispose()
    assert _monitored_nights(usecase, settings, None, None) == (
        dt.date(2013, 2, 10), dt.date(2013, 2, 10)
    )
    given = dt.datetime(2013, 2, 1)
    assert _monitored_nights(usecase, settings, given, None) == (given.date(), dt.date(2013, 2, 10))
    with pytest.raises(click.UsageError, match="every night of flights up to 2013-02-09"):
        _monitored_nights(usecase, settings, None, dt.datetime(2013, 2, 9))
