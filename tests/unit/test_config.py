"""The use-case config: read when asked for, and wrong fields named."""

from __future__ import annotations

import shutil

import pytest
import yaml

from driftline.config import ConfigError, Settings, list_usecases, load_usecase
from tests.conftest import REPO


def _write_usecase(settings: Settings, name: str, edit) -> None:
    raw = yaml.safe_load((REPO / "usecases" / "flights.yaml").read_text())
    raw["name"] = name
    edit(raw)
    settings.usecases_dir.mkdir(parents=True, exist_ok=True)
    (settings.usecases_dir / f"{name}.yaml").write_text(yaml.safe_dump(raw))


@pytest.fixture
def own_settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", usecases_dir=tmp_path / "usecases",
                    expectations_dir=REPO / "expectations")


def test_flights_config_describes_the_curated_schema(usecase):
    assert usecase.curated_columns[:2] == ["flight_id", "sched_time"]
    assert usecase.label.rule == "arr_delay > 15"
    assert "arr_delay" not in usecase.features.all  # only pre-departure features
    assert usecase.tz.key == "America/New_York"


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda raw: raw.update(colour="blue"), "colour: Extra inputs are not permitted"),
        (lambda raw: raw["label"].pop("rule"), "label.rule: Field required"),
        (lambda raw: raw.update(timezone="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (lambda raw: raw["source"]["queries"].update(flights="SELECT * FROM flights"),
         "must bind :start and :end"),
        (lambda raw: raw.update(start_date="someday"), "start_date"),
        (lambda raw: raw["source"].update(time_zone="Chicago"), "unknown time zone 'Chicago'"),
        (lambda raw: raw["training"].update(params={"max_dept": 3}),
         "training.params: Value error, unknown XGBoost parameter(s) ['max_dept']"),
        (lambda raw: raw["training"].update(params={"max_depth": [3, 4]}),
         "training.params.max_depth"),
        (lambda raw: raw["training"].update(params={"num_boost_round": 0.5}), "num_boost_round"),
        (lambda raw: raw["monitoring"]["rule"].update(from_onset=True, min_window_days=40),
         "monitoring.rule.min_window_days: 40 is longer than training.window_days (31)"),
    ],
)
def test_a_bad_config_is_refused_with_the_field_named(own_settings, edit, named):
    _write_usecase(own_settings, "broken", edit)
    with pytest.raises(ConfigError, match="broken.yaml") as raised:
        load_usecase("broken", own_settings)
    assert named in str(raised.value)


def test_an_unknown_usecase_lists_the_known_ones(own_settings):
    _write_usecase(own_settings, "other", lambda raw: None)
    with pytest.raises(ConfigError, match=r"no use-case 'flight'.*known: \['other'\]"):
        load_usecase("flight", own_settings)


def test_the_file_name_must_match_the_usecase_name(own_settings):
    _write_usecase(own_settings, "renamed", lambda raw: None)
    shutil.move(own_settings.usecases_dir / "renamed.yaml", own_settings.usecases_dir / "x.yaml")
    with pytest.raises(ConfigError, match="must match the file name"):
        list_usecases(own_settings)


def test_settings_come_from_the_environment_when_asked(monkeypatch, tmp_path):
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "state"))
    settings = Settings.from_env()
    assert settings.home == tmp_path / "state"
    assert not settings.home.exists()  # reading settings creates nothing
    usecase = load_usecase("flights", settings)
    assert settings.source_url(usecase) == f"sqlite:///{tmp_path}/state/source/flights.db"
    monkeypatch.setenv(usecase.source.url_env, "postgresql://u@db/flights")
    assert settings.source_url(usecase) == "postgresql://u@db/flights"


def test_the_tracking_uri_is_read_once_not_after_mlflow_rewrites_the_env(monkeypatch, tmp_path):
    import mlflow

    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "a"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings.from_env()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")  # sets $MLFLOW_TRACKING_URI
    own_store = f"sqlite:///{tmp_path / 'a' / 'mlflow' / 'mlflow.db'}"
    try:
        assert settings.mlflow_tracking_uri == own_store
    finally:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_every_train_parameter_of_params_yaml_can_be_set_by_a_usecase():
    from driftline.config import TRAIN_PARAMS

    shared = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    assert set(shared) <= TRAIN_PARAMS
