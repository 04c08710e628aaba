"""After a real shift a retraining learns the new regime: the generated orders replayed night by
night (the monitoring DAG's functions, DVC + MLflow training, the gate) with the adaptive rule.

Before issue 22 the onset's firing trained on the window ending holdout_days before it, all of
it before the shift, and the cool-down then held the next retraining back (measured on a longer
stretch by scripts/measure_adaptation.py: 28 nights to adapt, against 11 now).
"""

from __future__ import annotations

import datetime as dt

import pytest

from driftline.config import Settings, load_usecase
from driftline.experiments import replay
from driftline.experiments import results as replay_results
from driftline.experiments import synthetic_orders as orders
from driftline.ingest import etl
from driftline.monitoring.drift_rule import WAITING
from driftline.monitoring.history import FIRED

pytestmark = pytest.mark.integration

MIN_WINDOW_DAYS = 4  # ~1,140 labelled orders: above the config's min_train_rows (1,000)
HOLDOUT_DAYS = orders.CONFIG["training"]["holdout_days"]
RULE = {"from_onset": True, "min_window_days": MIN_WINDOW_DAYS, "retry_days": 1,
        "cooldown_days": 2}
# the first champion: 1-7 March, holdout 8-9; nights from 10 March to a week after the onset
FIRST_NIGHT = orders.WINDOW_END + dt.timedelta(days=HOLDOUT_DAYS + 1)
LAST_NIGHT = orders.DRIFT_ONSET + dt.timedelta(days=7)


def test_a_firing_after_the_shift_trains_on_the_new_regime(tmp_path, monkeypatch):
    for name in (*replay.SHARED_STORE_ENVS, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    orders.write_config(tmp_path / "usecases", tmp_path / "expectations",
                        {"monitoring": {"rule": RULE}})
    url = orders.write_source(orders.orders(orders.FIRST_DAY, LAST_NIGHT),
                              tmp_path / "source" / "orders.db")
    settings = Settings(home=tmp_path / "home", usecases_dir=tmp_path / "usecases",
                        expectations_dir=tmp_path / "expectations")
    usecase = load_usecase(orders.NAME, settings)
    day = orders.FIRST_DAY
    while day <= LAST_NIGHT:
        etl.run_day(usecase, settings, day, url)
        day += dt.timedelta(days=1)

    nights = replay.replay(usecase, settings, replay.DRIFT, FIRST_NIGHT, LAST_NIGHT,
                           tmp_path / "replay")
    for night in nights:
        print(night.night, night.decision, night.roc_auc, night.window_start, night.promoted)
    assert all(n.decision != FIRED for n in nights if n.night < orders.DRIFT_ONSET)
    (retrained,) = [n for n in nights if n.retrained]
    # the window starts at the onset the rule saw (its first drifted night) ...
    assert orders.DRIFT_ONSET <= retrained.window_start <= orders.DRIFT_ONSET + dt.timedelta(1)
    assert (retrained.window_end - retrained.window_start).days + 1 == MIN_WINDOW_DAYS
    # ... on the first night a window from it fits before the holdout; the rule waited till then
    assert retrained.night == retrained.window_end + dt.timedelta(days=HOLDOUT_DAYS)
    waited = [n for n in nights if orders.DRIFT_ONSET <= n.night < retrained.night]
    assert waited and all(n.decision == WAITING for n in waited[1:]), waited
    assert retrained.promoted  # the old champion is no match for it on the new regime
    adapted = replay_results.time_to_adapt(
        replay_results.load(tmp_path / "replay"), replay.DRIFT, orders.DRIFT_ONSET,
        HOLDOUT_DAYS, orders.WINDOW_DAYS)
    assert adapted.nights is not None and adapted.nights <= MIN_WINDOW_DAYS + HOLDOUT_DAYS
    assert adapted.post_onset_share == 1.0
