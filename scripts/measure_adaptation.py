"""Time to adapt on the generated shift: how many nights after a known onset the drift policy
serves a champion trained mostly on the new regime, and whether the rule fired before it.

The orders use-case (driftline.experiments.synthetic_orders) over seven months, its shift on
ONSET after 150 quiet nights, loaded with `driftline etl` and replayed night by night with
`driftline replay --policy drift` (the monitoring DAG's functions, DVC + MLflow training, the
gate), in a home of its own. Each policy setting below is replayed from the same source:

    .venv/bin/python scripts/measure_adaptation.py [--home DIR] [--setting adaptive]

prints, per setting, the firings before the onset, the night of the first promoted champion
with >= 50% of its training rows from the onset on, that share and its window.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from driftline.experiments import results
from driftline.experiments import synthetic_orders as orders

FIRST_DAY = dt.date(2023, 10, 1)
ONSET = dt.date(2024, 4, 1)
LAST_DAY = dt.date(2024, 5, 15)
WINDOW_DAYS, HOLDOUT_DAYS = 28, 5  # ~8,000 rows to learn from, ~1,400 to judge on

# The rule's knobs as a platform team would set them for a daily batch of ~300 rows.
SETTINGS = {
    # what the drift policy did before 2026-12-07: the window ending holdout_days before the
    # firing (pre-onset rows only), a 14-day cool-down from the firing whatever the gate said
    "before": {"cooldown_days": 14, "from_onset": False},
    # train from the onset once a week of it exists before the holdout; the cool-down counts
    # from the champion's training; a refused retraining is retried after 3 nights
    "adaptive": {"cooldown_days": 14, "retry_days": 3, "from_onset": True, "min_window_days": 7},
}


def write_home(home: Path, rule: dict) -> dict[str, str]:
    """Config, suite and source of the orders under `home`; the environment that selects them."""
    overrides = {
        "start_date": FIRST_DAY.isoformat(),
        "training": {"window_days": WINDOW_DAYS, "holdout_days": HOLDOUT_DAYS},
        "monitoring": {"rule": rule},
    }
    orders.write_config(home / "usecases", home / "expectations", overrides)
    url = orders.write_source(orders.orders(FIRST_DAY, LAST_DAY, ONSET), home / "source" / "o.db")
    # every store under `home`: none named by this shell's environment
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_", "MLFLOW_"))}
    return {
        **inherited,
        "DRIFTLINE_HOME": str(home),
        "DRIFTLINE_USECASES_DIR": str(home / "usecases"),
        "DRIFTLINE_EXPECTATIONS_DIR": str(home / "expectations"),
        "DRIFTLINE_ORDERS_SOURCE_URL": url,
        "DRIFTLINE_USECASE": orders.NAME,
    }


def measure(home: Path, setting: str) -> results.Adaptation:
    env = write_home(home, SETTINGS[setting])
    cli = str(Path(sys.executable).with_name("driftline"))
    first_night = FIRST_DAY + dt.timedelta(days=WINDOW_DAYS + HOLDOUT_DAYS)
    for command in (
        [cli, "etl", "--start", str(FIRST_DAY), "--end", str(LAST_DAY)],
        [cli, "replay", "--policy", "drift", "--start", str(first_night), "--end", str(LAST_DAY),
         "--docs", str(home / "docs")],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    nights = results.load(home / "replay")
    return results.time_to_adapt(nights, "drift", ONSET, HOLDOUT_DAYS, WINDOW_DAYS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, help="keep each setting's stores in HOME/<setting>")
    parser.add_argument("--setting", choices=sorted(SETTINGS), action="append")
    args = parser.parse_args()
    root = args.home or Path(tempfile.mkdtemp(prefix="adaptation-"))
    for setting in args.setting or list(SETTINGS):
        found = measure(root / setting, setting)
        adapted = (
            f"adapted after {found.nights} nights (promoted on {found.night}; "
            f"{found.post_onset_share:.0%} of its rows from the onset, window {found.window})"
            if found.night
            else "never adapted"
        )
        sys.stdout.write(
            f"{setting:<9} onset {ONSET}: {found.firings_before_onset} firings before it; "
            f"{adapted}\n"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
