"""Promotion under concurrency and with overlapping windows, on a real MLflow store and DVC.

Two gates deciding at once must leave a registry that tells one story (each promoted
version names the champion it replaced, `previous` is the one before the champion); a
champion is never compared with a challenger on days it trained on.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from driftline import registry, training
from driftline.config import load_usecase
from tests.conftest import REPO, copy_curated, repo_settings

pytestmark = pytest.mark.integration

# One process per gate: says when it is about to gate, then prints its result and the time.
GATE = """
import json, sys, time
from pathlib import Path
from driftline import training
from driftline.config import load_usecase
from tests.conftest import repo_settings
settings = repo_settings(Path(sys.argv[1]))
usecase = load_usecase("flights", settings)
request = training.TrainingRequest.from_dict(json.loads(sys.argv[3]))
print("ready", flush=True)
result = training.gate(usecase, settings, request, sys.argv[2])
print(json.dumps({**result, "finished_at": time.time()}, default=str), flush=True)
"""
HOLD_SECONDS = 12  # after both are ready: loading a challenger takes a few seconds


def registered_without_gate(usecase, settings, conf: dict, run_id: str) -> tuple[str, dict]:
    """A training up to its registration (the DAG's first four tasks): version, request."""
    request = training.TrainingRequest.from_conf(conf, usecase)
    snapshot = training.snapshot_window(usecase, settings, request)
    pipeline = training.run_pipeline(
        usecase, settings, training.commit_message(request, "test", run_id),
        snapshot["snapshot_md5"],
    )
    done = training.register(
        usecase, settings, request, run_id, {"airflow_dag_id": "test", "airflow_run_id": run_id},
        pipeline,
    )
    return done["version"], request.as_dict()


@pytest.fixture(scope="module")
def home(tmp_path_factory, curated_days):
    home = tmp_path_factory.mktemp("promotion") / "home"
    copy_curated(curated_days, home, dt.date(2013, 1, 28))
    return home


def test_two_promotions_at_once_leave_a_consistent_registry(home):
    """Two gates reach the promotion while the test holds its lock: neither may decide until
    it is released, then one after the other. Before: both read "no champion", both
    promoted, `previous` was never set and both versions said they replaced nobody."""
    import time

    settings = repo_settings(home)
    usecase = load_usecase("flights", settings)
    first = registered_without_gate(
        usecase, settings, {"window_end": "2013-01-14", "window_days": 7, "force_promote": True},
        "race-a")
    second = registered_without_gate(
        usecase, settings, {"window_end": "2013-01-21", "window_days": 7, "force_promote": True},
        "race-b")
    with registry.promotion_lock(settings, usecase):
        gates = [
            subprocess.Popen(
                [sys.executable, "-c", GATE, str(home), version, json.dumps(request)],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for version, request in (first, second)
        ]
        for gate in gates:
            assert gate.stdout.readline().strip() == "ready", gate.stderr.read()[-3000:]
        time.sleep(HOLD_SECONDS)
        assert [g.poll() for g in gates] == [None, None], "a gate decided while the lock was held"
        released_at = time.time()
    results = []
    for gate in gates:
        out, err = gate.communicate(timeout=600)
        assert gate.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["promoted"] and r["finished_at"] > released_at for r in results)  # both forced
    replaced = {r["version"]: r["champion_before"] for r in results}
    earlier = next(v for v, before in replaced.items() if before is None)
    later = next(v for v in replaced if v != earlier)
    assert replaced[later] == earlier, f"the later promotion must replace the earlier: {replaced}"
    name = usecase.training.registered_model
    assert registry.alias_version(settings, name, registry.CHAMPION) == later
    assert registry.alias_version(settings, name, registry.PREVIOUS) == earlier
    for version, champion_before in replaced.items():
        tags = registry.version_info(settings, usecase, version)["tags"]
        assert tags["gate.champion_version"] == (champion_before or "none")


def test_a_challenger_whose_holdout_the_champion_trained_on_is_not_compared_there(home):
    """Before: the champion was scored on its own training days and won by construction."""
    settings = repo_settings(home)
    usecase = load_usecase("flights", settings)
    name = usecase.training.registered_model
    champion = registry.alias_version(settings, name, registry.CHAMPION)
    window = registry.version_info(settings, usecase, champion)["tags"]["window"]
    champion_start = dt.date.fromisoformat(window.split("..")[0])
    # the challenger's 7-day holdout is exactly the champion's 7-day training window
    conf = {"window_end": (champion_start - dt.timedelta(days=1)).isoformat(), "window_days": 7,
            "reason": "overlap"}
    result = training.train(usecase, settings, training.TrainingRequest.from_conf(conf, usecase))
    assert not result["promoted"]
    assert result["reason"].startswith(
        f"not compared with champion version {champion}: 0 holdout rows lie outside its "
        "training window, fewer than min_compare_rows 1000"), result["reason"]
    assert f"are in champion version {champion}'s training window" in result["reason"]
    assert registry.alias_version(settings, name, registry.CHAMPION) == champion
    scores = json.loads(
        registry.version_info(settings, usecase, result["version"])["tags"]["gate.scores"])
    assert scores["checks"]["compared"]["rows"] == 0
