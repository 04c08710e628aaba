"""A wrong use-case config is found when it is read (and by `driftline check`), every mistake
at once, naming the file and the field: not at run time as if the data were bad."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from click.testing import CliRunner

from driftline.cli import main
from driftline.config import ConfigError, Settings, check_usecase, list_usecases, load_usecase
from tests.conftest import REPO


@pytest.fixture
def own_settings(tmp_path) -> Settings:
    """A use-cases folder holding flights.yaml, and a copy of the shipped suites."""
    settings = Settings(home=tmp_path / "home", usecases_dir=tmp_path / "usecases",
                        expectations_dir=tmp_path / "expectations")
    shutil.copytree(REPO / "expectations", settings.expectations_dir)
    settings.usecases_dir.mkdir()
    shutil.copy(REPO / "usecases" / "flights.yaml", settings.usecases_dir)
    return settings


def write_usecase(settings: Settings, name: str, edit) -> None:
    """usecases/<name>.yaml: flights.yaml renamed, its suite copied as <name>_batch, edited."""
    raw = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    suite = json.loads((REPO / "expectations" / "flights_batch.json").read_text())
    raw["name"], raw["validation"]["suite"] = name, f"{name}_batch"
    edit(raw, suite)
    (settings.usecases_dir / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (settings.expectations_dir / f"{name}_batch.json").write_text(json.dumps(suite))


def five_mistakes(raw: dict, suite: dict) -> None:
    raw["transform"] = "driftline.usecases.flights:build_batches"  # misspelt
    suite["expectations"].append(
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "tail_number"}})
    raw["training"]["gate"]["slices"]["tailnum"] = 0  # not a feature
    raw["label"]["rule"] = "arr_delay >> > 15"
    del raw["validation"]["parameters"]["min_plane_present"]  # the suite uses it


FIVE = [
    "broken.yaml: transform: cannot import 'driftline.usecases.flights:build_batches'",
    "broken.yaml: validation.suite: broken_batch.json: #80 expect_column_values_to_not_be_null: "
    "column 'tail_number' is not one of the config's columns",
    "broken.yaml: training.gate.slices: not features: ['tailnum']",
    "broken.yaml: label.rule: 'arr_delay >> > 15' is not an expression",
    "broken.yaml: validation.parameters: no value for the suite's $PARAMETER "
    "'min_plane_present'",
]


def test_the_check_names_all_five_mistakes_each_with_file_and_field(own_settings):
    write_usecase(own_settings, "broken", five_mistakes)
    problems = check_usecase(own_settings.usecase_path("broken"), own_settings)
    assert len(problems) == 5, "\n".join(problems)
    for expected in FIVE:
        assert sum(f"{own_settings.usecases_dir}/{expected}" in p for p in problems) == 1, (
            expected, problems)


def test_loading_refuses_the_config_naming_every_mistake_but_the_hooks(own_settings):
    """Loading imports no use-case code (DAG files load configs at parse time)."""
    write_usecase(own_settings, "broken", five_mistakes)
    with pytest.raises(ConfigError) as raised:
        load_usecase("broken", own_settings)
    lines = str(raised.value).splitlines()
    assert len(lines) == 4, lines
    for expected in FIVE[1:]:
        assert sum(line.startswith(f"{own_settings.usecases_dir}/{expected}") for line in lines)
    with pytest.raises(ConfigError, match="broken.yaml: training.gate.slices"):
        list_usecases(own_settings)
    assert [u.name for u in list_usecases(own_settings, skip_broken=True)] == ["flights"]


def test_the_shipped_flights_config_passes_the_check():
    settings = Settings(home=REPO / "data", usecases_dir=REPO / "usecases",
                        expectations_dir=REPO / "expectations")
    assert check_usecase(settings.usecase_path("flights"), settings) == []


def _signature_mistakes(raw: dict, suite: dict) -> None:
    raw["transform"] = "driftline.usecases.flights:source_tables"  # takes no arguments
    raw["source"]["seed"] = "driftline.usecases.flights:build_batch"  # needs two
    raw["label"]["missing_when_null"] = "arrival_delay"  # in no column the batch keeps


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_signature_mistakes,
         ["transform: driftline.usecases.flights:source_tables cannot be called as "
          "source_tables(tables, usecase)",
          "source.seed: driftline.usecases.flights:build_batch cannot be called as "
          "build_batch()",
          "label.missing_when_null: 'arrival_delay' is neither read by the label rule nor "
          "one of the batch's columns"]),
        (lambda raw, suite: raw["passthrough"].remove("cancelled"),
         ["validation.suite: broken_batch.json: #1 expect_table_columns_to_match_ordered_list, "
          "#10 expect_column_values_to_not_be_null, #43 expect_column_type_to_be: "
          "column 'cancelled' is not one of the config's columns"]),
        (lambda raw, suite: suite["expectations"].insert(
            0, {"type": "expect_colum_values_to_exist", "kwargs": {"column": "origin"}}),
         ["validation.suite: broken_batch.json: #1 expect_colum_values_to_exist: "
          "expect_colum_values_to_exist not found"]),
        (lambda raw, suite: raw["features"]["numerical"].append("carrier"),
         ["features.numerical: 'carrier' is also features.categorical"]),
        (lambda raw, suite: raw.update(name="other"),
         ["name: 'other' must match the file name 'broken'"]),
    ],
    ids=["hook-signatures", "suite-column", "expectation-type", "column-twice", "name"],
)
def test_the_check_names_what_is_wrong(own_settings, edit, named):
    write_usecase(own_settings, "broken", edit)
    problems = "\n".join(check_usecase(own_settings.usecase_path("broken"), own_settings))
    for text in named:
        assert f"broken.yaml: {text}" in problems, problems
    assert len(problems.splitlines()) == len(named), problems


def test_a_missing_or_broken_suite_is_named(own_settings):
    write_usecase(own_settings, "broken", lambda raw, suite: None)
    suite = own_settings.expectations_dir / "broken_batch.json"
    suite.write_text("{not json")
    assert check_usecase(own_settings.usecase_path("broken"), own_settings) == [
        f"{own_settings.usecases_dir}/broken.yaml: validation.suite: {suite} is not valid "
        "JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"]
    suite.unlink()
    assert check_usecase(own_settings.usecase_path("broken"), own_settings) == [
        f"{own_settings.usecases_dir}/broken.yaml: validation.suite: no suite file {suite}"]


def test_driftline_check_prints_every_problem_and_exits_1(own_settings, monkeypatch):
    monkeypatch.setenv("DRIFTLINE_USECASES_DIR", str(own_settings.usecases_dir))
    monkeypatch.setenv("DRIFTLINE_EXPECTATIONS_DIR", str(own_settings.expectations_dir))
    write_usecase(own_settings, "broken", five_mistakes)
    done = CliRunner().invoke(main, ["check"])
    assert done.exit_code == 1, done.output
    for expected in FIVE:
        assert expected in done.output
    assert "OK flights" in done.output
    assert "5 problems in 1 of 2 use-case configs" in done.output
    only_flights = CliRunner().invoke(main, ["check", "--usecase", "flights"])
    assert only_flights.exit_code == 0, only_flights.output
    assert "broken" not in only_flights.output


def test_a_suite_gx_would_silently_shorten_fails_validation_as_a_config_error(usecase, settings):
    """GX drops an expectation of an unknown type with a log line: no batch may pass a suite
    that lost a check that way."""
    import datetime as dt

    import pandas as pd

    from driftline.ingest.validation import validate_batch

    suite = json.loads((REPO / "expectations" / "flights_batch.json").read_text())
    suite["expectations"].append(
        {"type": "expect_colum_values_to_exist", "kwargs": {"column": "origin"}})
    with pytest.raises(ConfigError, match="#80 expect_colum_values_to_exist: .*not found"):
        validate_batch(pd.DataFrame(columns=usecase.curated_columns), usecase, settings,
                       dt.date(2013, 1, 1), suite_json=json.dumps(suite))
