"""One schema for a training request: the trigger form's Params are made of it, and
TrainingRequest.from_conf checks every other way in against it (hostile confs:
test_malicious_conf.py)."""

from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator

from driftline.training.request import (
    TrainingRequest,
    TrainingRequestError,
    _not_before_year,
    request_schema,
)
from tests.conftest import REPO


def test_the_trigger_form_is_the_schemas_properties(usecase):
    from airflow.dag_processing.dagbag import BundleDagBag

    dags = REPO / "dags"
    bag = BundleDagBag(dag_folder=str(dags / "training.py"), bundle_path=dags, safe_mode=False)
    params = bag.dags["flights_training"].params
    schema = request_schema(usecase)
    Draft202012Validator.check_schema(schema)
    assert list(params) == list(schema["properties"])
    for name, spec in schema["properties"].items():
        param = params.get_param(name)
        assert param.value == spec["default"], name
        assert param.description == spec["description"], name
        rules = {k: v for k, v in spec.items() if k not in ("default", "description")}
        assert param.schema == rules, name
    assert params.get_param("window_end").value == "2013-01-31"  # the first full window


def test_what_a_conf_leaves_out_is_the_forms_default(usecase):
    request = TrainingRequest.from_conf({"window_end": "2013-03-31"}, usecase)
    properties = request_schema(usecase)["properties"]
    defaults = {name: spec["default"] for name, spec in properties.items()}
    assert (request.window_days, request.reason, request.force_promote, request.evidence) == (
        defaults["window_days"], defaults["reason"], defaults["force_promote"], defaults["evidence"]
    )
    with pytest.raises(TrainingRequestError, match=r"^window_end: missing; a date \(YYYY-MM-DD\)"):
        TrainingRequest.from_conf({"window_days": 31}, usecase)


def test_a_holdout_past_the_use_cases_last_day_is_refused(usecase):
    assert str(usecase.end_date) == "2013-12-31"
    TrainingRequest.from_conf({"window_end": "2013-12-24"}, usecase)  # holdout to 31 December
    with pytest.raises(TrainingRequestError) as refused:
        TrainingRequest.from_conf({"window_end": "2013-12-25"}, usecase)
    assert str(refused.value) == (
        "window_end: the 7-day holdout would end 2014-01-01, after the use-case's last day "
        "2013-12-31"
    )


def test_a_list_of_deeply_nested_values_is_refused_briefly(usecase):
    """jsonschema's own message would quote the list whole: RecursionError at this depth."""
    deep: dict = {"leaf": 1}
    for _ in range(5000):
        deep = {"a": deep}
    conf = {"window_end": "2013-01-31", "evidence": {"columns": [deep] * 101}}
    with pytest.raises(TrainingRequestError) as refused:
        TrainingRequest.from_conf(conf, usecase)
    assert str(refused.value) == "evidence: 'columns' holds 101 items, more than 100"


@pytest.mark.parametrize("year", [1000, 1999, 2000, 2013, 2019, 2099, 2900, 9999])
def test_the_forms_date_pattern_admits_the_start_year_and_later(year):
    pattern = _not_before_year(year)
    admitted = [y for y in range(1000, 10000) if re.search(pattern, f"{y:04d}-06-30")]
    assert admitted == list(range(year, 10000))
    assert not re.search(pattern, f"{year:04d}-06-3")
