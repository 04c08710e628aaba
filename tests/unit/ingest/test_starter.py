"""`driftline new-usecase`: a draft config and suite from a sample of a table the platform has
never seen, which then loads every sampled day through the real ETL and Great Expectations."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from scripts.demo_deliveries import deliveries, write

from driftline.cli import main
from driftline.config import Settings, load_usecase

FIRST, LAST = dt.date(2024, 3, 1), dt.date(2024, 3, 10)
RULE = "delay_min > 30"


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> Settings:
    """A fresh home with no use-case at all, and the README's demo table at the new
    use-case's default source URL ($DRIFTLINE_HOME/source/deliveries.db)."""
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRIFTLINE_USECASES_DIR", str(tmp_path / "usecases"))
    monkeypatch.setenv("DRIFTLINE_EXPECTATIONS_DIR", str(tmp_path / "expectations"))
    monkeypatch.delenv("DRIFTLINE_DELIVERIES_SOURCE_URL", raising=False)
    settings = Settings.from_env()
    write(deliveries(FIRST, (LAST - FIRST).days + 1), settings.default_source_url("deliveries"))
    return settings


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def new_usecase(*extra: str):
    return run("new-usecase", "deliveries", "--table", "deliveries", "--time-column",
               "ordered_at", "--label-rule", RULE, *extra)


def test_the_draft_loads_and_the_etl_loads_every_sampled_day_with_no_quarantine(env):
    done = new_usecase()
    assert done.exit_code == 0, done.output
    usecase = load_usecase("deliveries", env)
    assert usecase.key == "delivery_id"  # the only column unique over the sample
    assert usecase.event_time == "ordered_at"
    assert usecase.start_date == FIRST
    assert usecase.label.missing_when_null == "delay_min"
    assert usecase.features.categorical == ["region", "express"]
    assert usecase.features.numerical == ["distance_km", "weight_kg"]
    assert usecase.passthrough == ["delay_min"]  # the outcome: not known ahead
    text = env.usecase_path("deliveries").read_text()
    assert "customer" in text and "too many" in text  # left out, and said why
    suite = json.loads(env.suite_path("deliveries_batch").read_text())
    assert suite["name"] == "deliveries_batch"
    in_set = {e["kwargs"]["column"]: e["kwargs"]["value_set"] for e in suite["expectations"]
              if e["type"] == "expect_column_values_to_be_in_set"}
    assert in_set["region"] == ["east", "north", "south", "west"]

    checked = run("check")  # the only config: no --usecase anywhere
    assert checked.exit_code == 0, checked.output
    assert "OK deliveries" in checked.output
    loaded = run("etl", "--start", str(FIRST), "--end", str(LAST), "--workers", "1")
    assert loaded.exit_code == 0, loaded.output
    assert "10 of 10 days loaded" in loaded.output
    assert not (env.home / "quarantine").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--table", "parcels", "--time-column", "ordered_at", "--label-rule", RULE],
         "no table 'parcels'"),
        (["--table", "deliveries", "--time-column", "created_at", "--label-rule", RULE],
         "no column 'created_at'"),
        (["--table", "deliveries", "--time-column", "ordered_at", "--label-rule",
          "delay_min >"], "label rule 'delay_min >'"),
        (["--table", "deliveries", "--time-column", "ordered_at", "--label-rule",
          "lateness > 30"], "label rule 'lateness > 30'"),
        (["--table", "deliveries", "--time-column", "ordered_at", "--label-rule", RULE,
          "--key", "region"], "--key region"),
    ],
    ids=["table", "time-column", "rule-syntax", "rule-column", "key-not-unique"],
)
def test_a_wrong_name_or_rule_is_named_and_nothing_is_written(env, args, named):
    done = run("new-usecase", "deliveries", *args)
    assert done.exit_code != 0
    assert named in done.output
    assert not env.usecase_path("deliveries").exists()
    assert not env.suite_path("deliveries_batch").exists()


def test_an_existing_draft_is_kept_unless_forced(env):
    assert new_usecase().exit_code == 0
    config = env.usecase_path("deliveries")
    config.write_text(config.read_text() + "# reviewed\n")
    again = new_usecase()
    assert again.exit_code != 0
    assert "already exist" in again.output and "--force" in again.output
    assert config.read_text().endswith("# reviewed\n")
    assert new_usecase("--force").exit_code == 0
    assert not config.read_text().endswith("# reviewed\n")


def test_the_draft_parses_as_yaml_with_a_comment_on_every_feature(env):
    assert new_usecase().exit_code == 0
    lines = env.usecase_path("deliveries").read_text().splitlines()
    raw = yaml.safe_load("\n".join(lines))
    for column in [*raw["features"]["categorical"], *raw["features"]["numerical"]]:
        line = next(line for line in lines if line.strip().startswith(f"- {column}  #"))
        assert "#" in line, line


def test_the_draft_gets_its_three_dags(env):
    """The DAG files make a use-case's DAGs from the use-cases folder alone."""
    from tests.dags.test_dag_integrity import _dagbag

    assert new_usecase().exit_code == 0
    dagbag = _dagbag()
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {
        "deliveries_etl", "deliveries_training", "deliveries_monitoring"
    }


def test_a_source_url_elsewhere_is_sampled_and_the_config_names_its_variable(env, tmp_path):
    import shutil

    elsewhere = tmp_path / "ops.db"
    shutil.move(env.source_dir / "deliveries.db", elsewhere)
    done = new_usecase("--source-url", f"sqlite:///{elsewhere}")
    assert done.exit_code == 0, done.output
    assert "set it to that URL" in done.output  # the platform reads it from the variable
    assert load_usecase("deliveries", env).source.url_env == "DRIFTLINE_DELIVERIES_SOURCE_URL"


def test_a_table_without_a_unique_column_asks_for_the_key(env):
    rows = deliveries(FIRST, 3).assign(delivery_id="D-1")
    write(rows, env.default_source_url("deliveries"))
    done = new_usecase()
    assert done.exit_code != 0
    assert "no column of 'deliveries' is unique and never null" in done.output
    assert "--key" in done.output
    assert not env.usecase_path("deliveries").exists()


def test_naive_times_in_a_local_zone_give_whole_local_days(env):
    """The demo's times read as Chicago wall times: each generated day is one Chicago day
    (read as UTC, every day would be split across two)."""
    generated = deliveries(FIRST, (LAST - FIRST).days + 1)
    per_day = generated["ordered_at"].dt.date.value_counts()
    zone = ("--timezone", "America/Chicago", "--source-time-zone", "America/Chicago")
    done = new_usecase(*zone)
    assert done.exit_code == 0, done.output
    usecase = load_usecase("deliveries", env)
    assert (usecase.timezone, usecase.source.time_zone) == ("America/Chicago",) * 2
    assert usecase.start_date == FIRST
    assert f"{per_day.min()}..{per_day.max()} a day" in done.output
    loaded = run("etl", "--start", str(FIRST), "--end", str(LAST), "--workers", "1")
    assert loaded.exit_code == 0, loaded.output
    assert f"{FIRST}  {per_day[FIRST]:>6} rows" in loaded.output
