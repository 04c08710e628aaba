"""One night's drift report: Evidently (driftline.monitoring.drift_report) against the same tests
in scipy.

Platform: driftline.monitoring.drift_report.drift_report with the shipped monitoring config
(usecases/flights.yaml `monitoring`: the monitored columns + the prediction, normalized
Wasserstein for numbers and Jensen-Shannon for categories, threshold 0.05), then
drift_report.summarize of its JSON, as a monitored night does. Reference: the drift reference
a January champion carries (a seeded sample of `monitoring.reference.rows` = 20,000 labelled
January rows, seed 7, with the model's predictions, made as the DVC `reference` stage makes
it); current: the night's trailing `monitoring.current_days` = 7 days, scored by the same
model (driftline.training.model.fit on January with params.yaml's `train` section).

Baseline, same run, same frames: the per-column tests computed directly with scipy, as
Evidently 0.7.23 does (evidently/legacy/calculations/data_drift.py and stattests/): NaN and
+-inf dropped per column; numerical: scipy.stats.wasserstein_distance(ref, cur) divided by
max(np.std(ref), 0.001) (population std of the reference); categorical:
scipy.spatial.distance.jensenshannon of the value frequencies over the union of values seen
(natural log, no zero filling); a column drifts when its score >= its threshold. The drifted
columns must agree (and the scores match), or the bench stops.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics

from bench.common import (
    Table,
    curated_frame,
    feature_schema,
    flights,
    parse_args,
    settings_for,
    temp_dir,
    timed,
    train_params,
)

# full: a July night against a January reference (a stale champion: drift expected)
FULL = {"train": (dt.date(2013, 1, 1), dt.date(2013, 1, 31)), "night": dt.date(2013, 7, 14)}
QUICK = {"train": (dt.date(2013, 1, 1), dt.date(2013, 1, 3)), "night": dt.date(2013, 1, 10)}


def reference_sample(train, model, usecase):
    """driftline.training.stages.reference_rows on these training rows (labelled rows sorted by
    key)."""
    from driftline.config import PREDICTION

    sample_config = usecase.monitoring.reference
    schema = model.schema
    sample = train.sample(
        n=min(sample_config.rows, len(train)), random_state=sample_config.seed
    ).sort_index()
    sample = sample[[schema.key, schema.event_time, *schema.features, schema.label]]
    return sample.assign(**{PREDICTION: model.predict_proba(sample)}).reset_index(drop=True)


def scipy_tests(reference, current, usecase) -> dict[str, float]:
    """Each judged column's score, as Evidently 0.7 computes it (see the module's doc)."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    from driftline.monitoring.drift_report import judged_columns

    def clean(series):
        return series.replace([np.inf, -np.inf], np.nan).dropna()

    scores = {}
    for column in judged_columns(reference, current, usecase):
        ref, cur = clean(reference[column]), clean(current[column])
        if column in usecase.features.categorical:
            values = list(set(ref.unique()) | set(cur.unique()))
            p = ref.value_counts().reindex(values, fill_value=0).to_numpy() / len(ref)
            q = cur.value_counts().reindex(values, fill_value=0).to_numpy() / len(cur)
            scores[column] = float(jensenshannon(p, q))
        else:
            ref, cur = ref.to_numpy(np.float64), cur.to_numpy(np.float64)
            scores[column] = float(wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
    return scores


def drifted(scores: dict[str, float], usecase) -> list[str]:
    tests = usecase.monitoring.tests
    return sorted(
        c
        for c, score in scores.items()
        if score
        >= (tests.cat_threshold if c in usecase.features.categorical else tests.num_threshold)
    )


def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.ERROR)
    plan = QUICK if args.quick else FULL
    with temp_dir("drift", args.keep) as root:
        settings = settings_for(root / "home")
        usecase = flights(settings)
        tests = usecase.monitoring.tests
        night = plan["night"]
        first_current = night - dt.timedelta(days=usecase.monitoring.current_days - 1)

        from driftline.config import PREDICTION
        from driftline.monitoring import drift_report
        from driftline.training.model import fit

        window = curated_frame(usecase, *plan["train"])
        label = usecase.label.name
        train = window[window[label].notna()].sort_values(usecase.key, kind="stable")
        train = train.reset_index(drop=True)
        with timed() as training:
            model = fit(train, feature_schema(usecase), train_params())
        reference = reference_sample(train, model, usecase)
        current = curated_frame(usecase, first_current, night)
        current = current.assign(**{PREDICTION: model.predict_proba(current)})

        stamp = dt.datetime.combine(night, dt.time(23, 59), tzinfo=usecase.tz)
        with timed() as evidently_import:
            import evidently  # noqa: F401
            from evidently.metrics import DriftedColumnsCount, ValueDrift  # noqa: F401
        repeats = 1 if args.quick else 3
        report_times, scipy_times = [], []
        for _ in range(repeats):
            with timed() as report:
                snapshot = drift_report.drift_report(reference, current, usecase, tests, stamp)
                figures = drift_report.summarize(snapshot.dict(), None)
            report_times.append(report.seconds)
            with timed() as baseline:
                scores = scipy_tests(reference, current, usecase)
                scipy_drifted = drifted(scores, usecase)
            scipy_times.append(baseline.seconds)
        with timed() as saving:
            drift_report.save(snapshot, root / "reports", "drift")

    evidently_drifted = sorted(figures.drifted_columns)
    if set(scores) != set(figures.column_scores) or scipy_drifted != evidently_drifted:
        raise SystemExit(
            f"Evidently and scipy disagree: columns {sorted(figures.column_scores)} vs "
            f"{sorted(scores)}; drifted {evidently_drifted} vs {scipy_drifted}"
        )
    worst = max(abs(scores[c] - figures.column_scores[c]) for c in scores)
    if worst > 1e-9:
        raise SystemExit(f"scores differ by up to {worst:g}: {figures.column_scores} vs {scores}")

    table = Table(
        f"bench_drift: night {night} ({first_current}..{night}) against a "
        f"{plan['train'][0]}..{plan['train'][1]} reference",
        args.quick,
    )
    table.add("reference rows / current rows", f"{len(reference):,} / {len(current):,}")
    table.add("columns judged", len(scores))
    table.add(
        "one night's report: Evidently vs scipy",
        statistics.median(report_times),
        "s",
        statistics.median(scipy_times),
    )
    table.add("Evidently import (once per process)", evidently_import.seconds, "s")
    table.add("drift.html + drift.json written (drift_report.save)", saving.seconds, "s")
    table.add(
        "drifted columns: Evidently vs scipy",
        f"{len(evidently_drifted)} = {len(scipy_drifted)}: agree",
    )
    table.add("largest score difference", f"{worst:.1e}")
    table.add("drift share", figures.drift_share)
    table.add("model fit on the reference window (setup)", training.seconds, "s")
    table.note(f"drifted: {', '.join(evidently_drifted) or 'none'}")
    table.note(
        f"thresholds: numerical {tests.num_method} >= {tests.num_threshold}, categorical "
        f"{tests.cat_method} >= {tests.cat_threshold}; median of {repeats} run(s); the report "
        "time includes drift_report.summarize of snapshot.dict()."
    )
    table.finish(args)


if __name__ == "__main__":
    main()
