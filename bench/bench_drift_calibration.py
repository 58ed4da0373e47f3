"""False-alarm and detection rates of the drift and RMSE alarms on the real TLC months (prints tables; not a test).

    .venv/bin/python bench/bench_drift_calibration.py [--windows 200] [--size 5000] [--seed 7] [--skip-evidently]

Reference: the `hgb` model trained on 2022-01, its profile (validation month 2022-02). For each scenario, `--windows`
windows of `--size` rides, random (distinct rides of the month) and consecutive (rides in pickup order): the share of
windows whose dataset verdict is "drifted", with the calibrated tests (ours) and with Evidently 0.7's defaults
(Wasserstein/Jensen-Shannon at 0.1, dataset drift at half the features; `taxi_assets.core.evidently_defaults`).
Then: the per-feature false-alarm rates, the window-size sweep behind `DEFAULT_WINDOW`, the batch table (every month
against the 2021-01 model's profile, and month over month), and the online RMSE bound.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from taxi_assets.core import drift, profile  # noqa: E402
from taxi_assets.core.drift import BATCH_FEATURES, DEFAULT_WINDOW, ONLINE_FEATURES  # noqa: E402
from taxi_assets.core.evidently_defaults import dataset_drift  # noqa: E402
from taxi_assets.core.model import PREDICTION, TARGET  # noqa: E402
from tests.support.drift_data import (  # noqa: E402
    MONTHS,
    consecutive_windows,
    next_month,
    random_windows,
    scored,
)

REFERENCE = "2022-01"
ADJACENT = "2022-02"
OLD_MODEL = "2021-01"
# Evidently's view of the online features: zones as categories, distance and hour as numbers.
EVIDENTLY_TYPES = {
    name: (drift.CATEGORICAL if kind == drift.CATEGORICAL else drift.NUMERICAL)
    for name, kind in ONLINE_FEATURES.items()
}
# The fixed rule the RMSE alert used before the calibrated bound.
OLD_RMSE_FACTOR = 1.25
MOM_PAIRS = [
    (a, b) for a, b in zip(MONTHS, MONTHS[1:], strict=False) if next_month(a) == b
]  # ordinary month-over-month pairs


def build(model_month: str) -> dict:
    started = time.perf_counter()
    built = profile.build_profile(
        scored(model_month, model_month),
        scored(next_month(model_month), model_month),
        model_tag=f"hgb-{model_month}",
        reference_month=model_month,
        validation_month=next_month(model_month),
    )
    print(f"profile of the {model_month} model built in {time.perf_counter() - started:.1f} s")
    return built


def evidently_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "PULocationID": frame["PULocationID"],
            "DOLocationID": frame["DOLocationID"],
            "trip_distance": drift.clean("trip_distance", frame["trip_distance"].to_numpy()),
            "pickup_hour": frame["pickup_datetime"].dt.hour,
        }
    )


class Scenario:
    """Windows of one month, possibly altered: ours and Evidently's dataset verdict per window."""

    def __init__(self, name: str, frame: pd.DataFrame, rows: np.ndarray):
        self.name, self.frame, self.rows = name, frame.reset_index(drop=True), rows


def windows_of(frame: pd.DataFrame, kind: str, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    frame_rows = len(frame)
    if kind == "random":
        return random_windows(rng, frame_rows, size, count)
    return consecutive_windows(rng, frame_rows, size, count)


def ours(prof: dict, arrays, frame: pd.DataFrame, rows: np.ndarray, features=ONLINE_FEATURES) -> list:
    rides = drift.encode(arrays, frame, features)
    return drift.window_verdicts(prof, arrays, rides, "online", features, rows)


def evidently(reference: pd.DataFrame, frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    current = evidently_frame(frame)
    return np.array([dataset_drift(reference, current.iloc[window], EVIDENTLY_TYPES).dataset_drift for window in rows])


def shifted_distance(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
    return frame.assign(trip_distance=frame["trip_distance"] * factor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--size", type=int, default=DEFAULT_WINDOW)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-evidently", action="store_true", help="leave out the Evidently-defaults column")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    prof = build(REFERENCE)
    arrays = profile.arrays(prof)
    reference = scored(REFERENCE, REFERENCE)
    adjacent = scored(ADJACENT, REFERENCE)
    evidently_reference = evidently_frame(reference)
    evening = reference[reference["pickup_datetime"].dt.hour.between(17, 19)].reset_index(drop=True)
    later = reference.assign(pickup_datetime=reference["pickup_datetime"] + pd.Timedelta(hours=1))

    cases: list[tuple[str, str, pd.DataFrame]] = [
        ("unchanged: same month", "false alarm", reference),
        ("unchanged: adjacent month 2022-02", "false alarm", adjacent),
        ("unchanged: 2022-03 (not calibrated on)", "false alarm", scored("2022-03", REFERENCE)),
        ("trip_distance x1.05", "detection", shifted_distance(reference, 1.05)),
        ("trip_distance x1.10", "detection", shifted_distance(reference, 1.10)),
        ("trip_distance x1.25", "detection", shifted_distance(reference, 1.25)),
        ("rides of 17:00-20:00 only", "detection", evening),
        ("pickups shifted +1 h", "detection", later),
    ]
    print(f"\nDataset verdict, online features {list(ONLINE_FEATURES)}, {args.windows} windows of {args.size} rides")
    print(
        f"{'scenario':38s} {'rate':12s} "
        + " ".join(f"{title:>12s}" for title in ("ours random", "ours consec", "evid random", "evid consec"))
    )
    per_feature: dict[str, dict[str, list]] = {}
    for name, rate, frame in cases:
        row = []
        for kind in ("random", "consecutive"):
            rows = windows_of(frame, kind, args.size, args.windows, rng)
            verdicts = ours(prof, arrays, frame, rows)
            row.append(np.mean([v.dataset_drift for v in verdicts]))
            if rate == "false alarm":
                per_feature.setdefault(name, {})[kind] = verdicts
        for kind in ("random", "consecutive"):
            if args.skip_evidently:
                row.append(float("nan"))
                continue
            rows = windows_of(frame, kind, args.size, args.windows, rng)
            row.append(evidently(evidently_reference, frame, rows).mean())
        print(f"{name:38s} {rate:12s} " + " ".join(f"{value:12.1%}" for value in row))

    print("\nPer-feature false-alarm rates (ours)")
    features = list(ONLINE_FEATURES)
    print(f"{'windows':52s} " + " ".join(f"{name:>14s}" for name in features))
    for name, kinds in per_feature.items():
        for kind, verdicts in kinds.items():
            rates = [np.mean([v.feature(f).drifted for v in verdicts]) for f in features]
            print(f"{name + ', ' + kind:52s} " + " ".join(f"{rate:14.1%}" for rate in rates))

    print("\nWindow size sweep (ours): dataset false alarms on the same month and detection of trip_distance x1.10")
    print(f"{'size':>6s} {'FA random':>10s} {'FA consec':>10s} {'x1.10 random':>13s} {'x1.10 consec':>13s}")
    longer = shifted_distance(reference, 1.10)
    for size in (500, 1000, 2000, 3000, 4000, 5000):
        figures = []
        for frame in (reference, longer):
            for kind in ("random", "consecutive"):
                rows = windows_of(frame, kind, size, args.windows, rng)
                figures.append(np.mean([v.dataset_drift for v in ours(prof, arrays, frame, rows)]))
        print(f"{size:6d} {figures[0]:10.1%} {figures[1]:10.1%} {figures[2]:13.1%} {figures[3]:13.1%}")

    prediction_verdicts(prof, arrays, reference, adjacent, args, rng)
    batch_table()
    rmse_table(prof, args, rng)


def prediction_verdicts(prof, arrays, reference, adjacent, args, rng) -> None:
    print("\nPrediction drift (ours, alpha 1%): share of windows flagged")
    for name, frame in (("same month", reference), ("adjacent month", adjacent)):
        row = []
        for kind in ("random", "consecutive"):
            rows = windows_of(frame, kind, args.size, args.windows, rng)
            verdicts = ours(prof, arrays, frame, rows, {PREDICTION: drift.NUMERICAL})
            row.append(np.mean([v.dataset_drift for v in verdicts]))
        print(f"  {name:16s} random {row[0]:6.1%}   consecutive {row[1]:6.1%}")


def batch_table() -> None:
    prof = build(OLD_MODEL)
    arrays = profile.arrays(prof)
    columns = [*BATCH_FEATURES, PREDICTION, TARGET]

    def line(label: str, verdict: drift.DriftVerdict, extra: list[drift.FeatureDrift]) -> str:
        effects = " ".join(f"{f.effect:6.3f}{'*' if f.drifted else ' '}" for f in (*verdict.features, *extra))
        return f"{label:22s} {'DRIFT' if verdict.dataset_drift else 'quiet':6s} {effects}"

    header = " ".join(f"{name[:7]:>7s}" for name in columns)
    print("\nBatch: effect sizes (* = drifted; KS distance for numbers, Jensen-Shannon for zones and hours)")
    print(f"min effects {drift.BATCH_MIN_EFFECT}")
    print(f"{'month vs ' + OLD_MODEL + ' profile':22s} {'':6s} {header}")
    for month in MONTHS:
        frame = scored(month, OLD_MODEL)
        verdict = drift.assess(prof, arrays, frame, "batch", BATCH_FEATURES, month=True)
        outputs = drift.assess(prof, arrays, frame, "batch", {PREDICTION: "numerical", TARGET: "numerical"}, month=True)
        print(line(month, verdict, list(outputs.features)))
    print(f"{'month over month':22s} {'':6s} {header}")
    for previous, month in MOM_PAIRS:
        before = profile.arrays(profile.describe(scored(previous, OLD_MODEL)))
        frame = scored(month, OLD_MODEL)
        verdict = drift.assess(prof, before, frame, "batch", BATCH_FEATURES, month=True)
        outputs = drift.assess(prof, before, frame, "batch", {PREDICTION: "numerical", TARGET: "numerical"}, month=True)
        print(line(f"{previous} -> {month}", verdict, list(outputs.features)))


def rmse_table(prof, args, rng) -> None:
    print("\nOnline RMSE bound: share of windows above it (ours) and above 1.25 x validation RMSE (before)")
    old = build(OLD_MODEL)

    def slower(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
        return frame.assign(**{TARGET: frame[TARGET] * factor})

    validation = scored(ADJACENT, REFERENCE)
    cases = [
        (f"{REFERENCE} model on {ADJACENT} (its validation month)", prof, validation),
        (f"{REFERENCE} model on 2022-03", prof, scored("2022-03", REFERENCE)),
        (f"{OLD_MODEL} model on 2021-02 (its validation month)", old, scored("2021-02", OLD_MODEL)),
        (f"{OLD_MODEL} model on 2021-03", old, scored("2021-03", OLD_MODEL)),
        *(
            (f"{OLD_MODEL} model on {m}", old, scored(m, OLD_MODEL))
            for m in ("2023-01", "2023-02", "2023-03", "2023-04")
        ),
        (f"{REFERENCE} model, {ADJACENT} rides 10% slower", prof, slower(validation, 1.10)),
        (f"{REFERENCE} model, {ADJACENT} rides 20% slower", prof, slower(validation, 1.20)),
        (
            f"{REFERENCE} model, {ADJACENT} predictions +1 min",
            prof,
            validation.assign(prediction=validation[PREDICTION] + 1),
        ),
    ]
    print(
        f"{'case':52s} {'rmse':>6s} {'bound r/c':>12s} {'ours rnd':>9s} {'ours cons':>9s} {'1.25x rnd':>9s} "
        f"{'1.25x cons':>10s}"
    )
    for name, model_profile, frame in cases:
        errors = (frame[PREDICTION] - frame[TARGET]).to_numpy()
        bounds = {kind: profile.rmse_bound(model_profile, args.size, kind) for kind in drift.WINDOW_KINDS}
        old_bound = OLD_RMSE_FACTOR * model_profile["residuals"]["rmse"]
        figures = []
        for ours_rule in (True, False):
            for kind in ("random", "consecutive"):
                rows = windows_of(frame, kind, args.size, args.windows, rng)
                rmse = np.sqrt((errors[rows] ** 2).mean(axis=1))
                span = drift.SPREAD if kind == "random" else drift.CONSECUTIVE
                figures.append((rmse > (bounds[span] if ours_rule else old_bound)).mean())
        total = float(np.sqrt((errors**2).mean()))
        bound_text = f"{bounds[drift.SPREAD]:.2f}/{bounds[drift.CONSECUTIVE]:.2f}"
        print(f"{name:52s} {total:6.2f} {bound_text:>12s} " + " ".join(f"{f:9.1%}" for f in figures))


if __name__ == "__main__":
    main()
