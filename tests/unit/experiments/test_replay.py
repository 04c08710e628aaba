"""The replay's pure parts: policies, the first champion's window, the retraining conf, the
nights.csv round trip and the comparison (summary, table, plot)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from driftline.experiments import replay
from driftline.experiments import results as replay_results
from driftline.monitoring import nightly as monitoring
from driftline.monitoring.drift_rule import COOL_DOWN, QUIET, Verdict
from driftline.monitoring.history import FIRED, NightSummary

QUIET_NIGHT = Verdict(QUIET, "quiet")
FIRING = Verdict(FIRED, "drift share >= 0.3 on 3 of the last 5 nights")


@pytest.mark.parametrize(
    ("policy", "night", "verdict", "expected"),
    [
        ("never", dt.date(2013, 3, 1), FIRING, False),
        ("nightly", dt.date(2013, 3, 2), QUIET_NIGHT, True),
        ("monthly", dt.date(2013, 3, 1), QUIET_NIGHT, True),
        ("monthly", dt.date(2013, 3, 2), FIRING, False),
        ("monthly", dt.date(2013, 2, 1), QUIET_NIGHT, False),  # the first champion's month
        ("drift", dt.date(2013, 3, 2), FIRING, True),
        ("drift", dt.date(2013, 3, 1), Verdict(COOL_DOWN, "cool-down"), False),
    ],
)
def test_each_policy_retrains_on_its_nights(policy, night, verdict, expected):
    assert replay.wants_retraining(policy, night, dt.date(2013, 2, 1), verdict) is expected


def test_an_unknown_policy_is_named():
    with pytest.raises(replay.ReplayError, match="'weekly'"):
        replay.wants_retraining("weekly", dt.date(2013, 3, 1), dt.date(2013, 2, 1), FIRING)


def test_the_first_champion_sees_no_night_it_will_be_judged_on(usecase):
    request = replay.first_request(usecase, dt.date(2013, 2, 1))
    assert request.holdout_end == dt.date(2013, 1, 31)
    assert request.window_start == usecase.start_date  # Jan 1..24: shorter than 31 days
    assert request.window_days == 24
    later = replay.first_request(usecase, dt.date(2013, 6, 1))
    assert later.window_days == usecase.training.window_days
    with pytest.raises(replay.ReplayError, match="no room"):
        replay.first_request(usecase, dt.date(2013, 1, 5))


def night(day: dt.date) -> NightSummary:
    return NightSummary("flights", day, "3", "md5", 900, True, 0.5, ["dest"], 0.6, 0.5, 0.7)


def test_the_retraining_conf_never_starts_before_the_first_day(usecase):
    """Early in the year the sensor's conf shortens the window instead of being refused."""
    conf = monitoring.retraining_conf(usecase, night(dt.date(2013, 2, 1)), FIRING)
    assert (conf["window_end"], conf["window_days"]) == ("2013-01-25", 25)
    request = replay.retraining_request(usecase, "drift", night(dt.date(2013, 2, 1)), FIRING)
    assert request.window_start == usecase.start_date
    assert request.evidence["day"] == "2013-02-01"
    monthly = replay.retraining_request(usecase, "monthly", night(dt.date(2013, 6, 1)), FIRING)
    assert (monthly.window_end, monthly.window_days) == (dt.date(2013, 5, 25), 31)
    assert monthly.reason == "replay: monthly" and monthly.evidence == {}


def test_a_replay_refuses_an_environment_store_every_policy_would_share(
    settings, usecase, tmp_path, monkeypatch
):
    monkeypatch.setenv("DRIFTLINE_HISTORY_URL", "postgresql://x/y")
    with pytest.raises(replay.ReplayError, match="DRIFTLINE_HISTORY_URL"):
        replay.policy_settings(settings, tmp_path / "out", "drift", usecase)


def test_a_replay_needs_the_curated_store(settings, usecase, tmp_path):
    with pytest.raises(replay.ReplayError, match="driftline etl"):
        replay.policy_settings(settings, tmp_path / "out", "drift", usecase)


def test_each_policy_gets_its_own_stores_over_the_shared_curated_store(settings, usecase, tmp_path):
    settings.curated_dir(usecase.name).mkdir(parents=True)
    (settings.home / "validations" / usecase.name).mkdir(parents=True)
    drift = replay.policy_settings(settings, tmp_path / "out", "drift", usecase)
    never = replay.policy_settings(settings, tmp_path / "out", "never", usecase)
    assert drift.curated_dir(usecase.name).resolve() == settings.curated_dir(usecase.name)
    assert drift.mlflow_tracking_uri != never.mlflow_tracking_uri
    assert drift.history_url != never.history_url
    assert drift.workspace_dir(usecase.name) != never.workspace_dir(usecase.name)


def record(policy: str, day: int, auc: float | None, retrained: bool = False) -> replay.NightRecord:
    return replay.NightRecord(
        policy=policy,
        night=dt.date(2013, 2, 1) + dt.timedelta(days=day),
        champion_version="1",
        rows=900,
        labelled=880,
        roc_auc=auc,
        log_loss=None if auc is None else 1 - auc,
        drift_share=0.25,
        decision=QUIET,
        retrained=retrained,
        new_version="2" if retrained else None,
        promoted=True if retrained else None,
        training_seconds=20.0 if retrained else None,
        night_seconds=1.5,
    )


def test_nights_csv_round_trips(tmp_path):
    path = tmp_path / "nights.csv"
    written = [record("drift", 0, 0.7, retrained=True), record("drift", 1, None)]
    for each in written:
        replay._append(path, each)
    assert replay.recorded_nights(path) == written


def test_the_comparison_reports_mean_worst_week_and_trainings(tmp_path):
    out = tmp_path / "out"
    # never: 0.70 in the first week (Feb 1-3: Fri-Sun), 0.60 the next; drift retrains once
    for day in range(10):
        replay._append(out / "never" / "nights.csv", record("never", day, 0.7 if day < 3 else 0.6))
        replay._append(out / "drift" / "nights.csv", record("drift", day, 0.72, retrained=day == 4))
    replay._append(out / "drift" / "nights.csv", record("drift", 10, None))  # too few labels
    summaries = {s.policy: s for s in replay_results.write(out, tmp_path / "docs")}
    never, drift = summaries["never"], summaries["drift"]
    assert never.mean_roc_auc == pytest.approx((3 * 0.7 + 7 * 0.6) / 10)
    assert (never.worst_week, never.worst_week_roc_auc) == ("2013-02-04", pytest.approx(0.6))
    assert (never.trainings, drift.trainings, drift.promotions) == (0, 1, 1)
    assert drift.nights == 10 and drift.training_seconds == 20.0
    docs = tmp_path / "docs"
    table = (docs / replay_results.TABLE).read_text()
    assert "| never | 2013-02-01..2013-02-10 | 10 | 0.6300 |" in table
    assert "| drift | 2013-02-01..2013-02-11 | 10 | 0.7200 |" in table
    assert (docs / replay_results.PLOT).read_bytes()[:4] == b"\x89PNG"
    combined = pd.read_csv(docs / replay_results.COMBINED_CSV)
    assert combined.groupby("policy").size().to_dict() == {"drift": 11, "never": 10}


def test_no_replay_yet_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="driftline replay"):
        replay_results.load(tmp_path)


def test_a_second_replay_of_the_same_policy_is_refused(settings, usecase, tmp_path):
    import fcntl

    settings.curated_dir(usecase.name).mkdir(parents=True)
    (settings.home / "validations" / usecase.name).mkdir(parents=True)
    home = replay.policy_settings(settings, tmp_path / "out", "drift", usecase).home
    with (home / ".replay.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(replay.ReplayError, match="another replay of drift is running"):
            replay.replay(
                usecase,
                settings,
                "drift",
                dt.date(2013, 2, 1),
                dt.date(2013, 2, 2),
                tmp_path / "out",
            )


def test_a_calendar_policy_trains_on_the_configured_window_whatever_the_rule_says(usecase):
    from driftline.monitoring.drift_rule import Window

    onset = Verdict(FIRED, "drift", (), Window(dt.date(2013, 5, 25), 10, dt.date(2013, 5, 16)))
    drift = replay.retraining_request(usecase, "drift", night(dt.date(2013, 6, 1)), onset)
    assert (drift.window_start, drift.window_end) == (dt.date(2013, 5, 16), dt.date(2013, 5, 25))
    assert drift.evidence["onset"] == "2013-05-16"
    monthly = replay.retraining_request(usecase, "monthly", night(dt.date(2013, 6, 1)), onset)
    assert (monthly.window_end, monthly.window_days) == (dt.date(2013, 5, 25), 31)


def test_a_replay_begun_before_the_window_columns_resumes_in_its_own_columns(tmp_path):
    """nights.csv files written before 2026-12-07 have no window_start/window_end."""
    path = tmp_path / "nights.csv"
    old = [c for c in replay.COLUMNS if not c.startswith("window_")]
    path.write_text(",".join(old) + "\n")
    from dataclasses import replace

    retrained = replace(
        record("nightly", 0, 0.7, retrained=True),
        window_start=dt.date(2013, 1, 1),
        window_end=dt.date(2013, 1, 24),
    )
    replay._append(path, retrained)
    assert path.read_text().splitlines()[0] == ",".join(old)
    (back,) = replay.recorded_nights(path)
    assert back == replace(retrained, window_start=None, window_end=None)


def test_with_threads_sets_the_training_threads_only(usecase):
    fast = replay.with_threads(usecase, 1)
    assert fast.training.params["nthread"] == 1
    assert "nthread" not in usecase.training.params
    assert fast.training.window_days == usecase.training.window_days


def adapting(policy: str, day: int, *, promoted: bool = False, fired: bool = False,
             window: tuple[int, int] | None = None) -> replay.NightRecord:
    """A night of a policy; `window`: its retraining's first and last day, as day numbers."""
    from dataclasses import replace

    base = replace(record(policy, day, 0.7), decision=FIRED if fired else QUIET)
    if window is None:
        return base
    first = dt.date(2013, 2, 1)
    return replace(
        base,
        retrained=True,
        new_version=str(day),
        promoted=promoted,
        training_seconds=20.0,
        window_start=first + dt.timedelta(days=window[0]),
        window_end=first + dt.timedelta(days=window[1]),
    )


def test_time_to_adapt_waits_for_a_champion_mostly_of_the_new_regime(tmp_path):
    """Onset on day 10: the retraining of day 12 learned days 0..5 (none after the onset),
    the one of day 20 was refused, the one of day 24 learned days 10..17 and was promoted."""
    nights = [adapting("drift", day, fired=day == 3) for day in range(30)]
    nights[12] = adapting("drift", 12, promoted=True, fired=True, window=(0, 5))
    nights[20] = adapting("drift", 20, fired=True, window=(8, 13))
    nights[24] = adapting("drift", 24, promoted=True, fired=True, window=(6, 17))
    for each in nights:
        replay._append(tmp_path / "drift" / "nights.csv", each)
    found = replay_results.time_to_adapt(
        replay_results.load(tmp_path), "drift", dt.date(2013, 2, 11), 7, 31
    )
    assert (found.night, found.nights) == (dt.date(2013, 2, 25), 14)
    assert found.post_onset_share == pytest.approx(8 / 12, abs=0.001)
    assert found.window == "2013-02-07..2013-02-18"
    assert found.firings_before_onset == 1
    row = "| 2013-02-11 | drift | 2013-02-25 | 14 | 67% | 2013-02-07..2013-02-18 |"
    assert row in replay_results.adaptation_table([found])
    assert row + " 1 |" in replay_results.adaptation_table([found], false_alarms=True)
    # had it been refused too, the policy would not have adapted within the replay
    nights[24] = adapting("drift", 24, fired=True, window=(6, 17))
    (tmp_path / "drift" / "nights.csv").unlink()
    for each in nights:
        replay._append(tmp_path / "drift" / "nights.csv", each)
    never = replay_results.time_to_adapt(
        replay_results.load(tmp_path), "drift", dt.date(2013, 2, 11), 7, 31
    )
    assert never.night is None and never.nights is None
