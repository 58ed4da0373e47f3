"""Model recipes on every consecutive month pair, and one-ride prediction cost (prints figures; not a test).

    .venv/bin/python bench/bench_model.py [--repeat 500]

For each pair of consecutive loaded months (train on M, validate on M+1: 2021-01>02, 2021-02>03, 2022-01>02,
2022-02>03, 2023-01>02, 2023-02>03, 2023-03>04) every recipe is trained on M with the course's filter and scored
on M+1; the table shows RMSE and fit seconds. Then the 2021-01 model of each recipe predicts one ride `--repeat`
times, the recipes interleaved so that load from other processes hits them alike (median and p90, ms), as the
service predicts one ride at a time. Goal for the default recipe: lowest RMSE on every pair, fit <= 10 s.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from taxi_assets.core.model import DEFAULT_RECIPE, FEATURE_FIELDS, RECIPES, evaluate, predict, timed_train  # noqa: E402
from tests.support.platform import MANIFEST_ROWS  # noqa: E402
from tests.support.service_harness import load_rides  # noqa: E402

RECIPE_ORDER = ["seed", "hgb", "hgb_te"]


def next_month(month: str) -> str:
    year, number = map(int, month.split("-"))
    return f"{year + number // 12}-{number % 12 + 1:02d}"


def month_pairs() -> list[tuple[str, str]]:
    """(M, M+1) for every M whose following month is in the local TLC mirror."""
    return [(month, next_month(month)) for month in sorted(MANIFEST_ROWS) if next_month(month) in MANIFEST_ROWS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=500)
    args = parser.parse_args()
    assert set(RECIPE_ORDER) == set(RECIPES), "bench every recipe"

    rides = {month: load_rides(month) for month in sorted(MANIFEST_ROWS)}
    first_models = {}
    print(f"{'train>valid':<14}" + "".join(f"{recipe:>18}" for recipe in RECIPE_ORDER) + "   best")
    wins, slowest_fit = 0, 0.0
    pairs = month_pairs()
    for train_month, valid_month in pairs:
        scores = {}
        for recipe in RECIPE_ORDER:
            pipeline, seconds = timed_train(rides[train_month], recipe)
            scores[recipe] = (evaluate(pipeline, rides[valid_month])["rmse"], seconds)
            if recipe == DEFAULT_RECIPE:
                slowest_fit = max(slowest_fit, seconds)
            if train_month == pairs[0][0]:
                first_models[recipe] = pipeline
        best = min(scores, key=lambda recipe: scores[recipe][0])
        wins += best == DEFAULT_RECIPE
        cells = "".join(f"{rmse:>10.4f} ({seconds:4.1f}s)" for rmse, seconds in scores.values())
        print(f"{train_month}>{valid_month[5:]:<6}{cells}   {best}")
    print(f"default recipe {DEFAULT_RECIPE}: best on {wins}/{len(pairs)} pairs, slowest fit {slowest_fit:.1f} s")

    ride = rides[pairs[0][1]].head(1)
    record = ride[FEATURE_FIELDS].assign(pickup_datetime=ride["pickup_datetime"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
    records = record.to_dict(orient="records")
    timings: dict[str, list[float]] = {recipe: [] for recipe in RECIPE_ORDER}
    for iteration in range(args.repeat + 20):
        for recipe in RECIPE_ORDER:
            started = time.perf_counter()
            predict(first_models[recipe], records)
            if iteration >= 20:  # warm-up
                timings[recipe].append(time.perf_counter() - started)
    print(f"one-ride predict (records, {args.repeat} calls each, interleaved):")
    for recipe, seconds in timings.items():
        ms = 1e3 * np.asarray(seconds)
        print(f"  {recipe:<7} median {np.median(ms):.2f} ms   p90 {np.quantile(ms, 0.9):.2f} ms")


if __name__ == "__main__":
    main()
