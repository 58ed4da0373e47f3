"""The challenger-gain alarm on every loaded month, through the real assets (prints figures; not a test).

    .venv/bin/python bench/bench_challenger.py [--resamples 200]

In a temporary platform: every local TLC month loaded; `duration_model` trained (default recipe) for every month
that has a later one; the 2021-01 model deployed as the champion (no promotion in between, so every month is
judged against the same deployed model); `model_challenge` materialized for every month after 2021-01. The
challenger of a month is the model of the newest loaded month before it (2022-01's is 2021-03's).

Prints, per evaluation month: champion and challenger training months, both RMSEs, the gain, its 90% interval
from a paired bootstrap over the month's rides (`--resamples`), and whether the alarm fires at the
TAXI_PROMOTION_MIN_GAIN setting; then which months fire at other minimum gains. Goal: silent for 2021-02 (the
challenger is the champion), firing for the 2022 and 2023 months where retraining pays.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support.platform import MANIFEST_ROWS, enter_platform_environment  # noqa: E402

CHAMPION_MONTH = "2021-01"
MIN_GAINS = [0.025, 0.05, 0.075, 0.10, 0.125]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_challenger_") as tmp:
        enter_platform_environment(Path(tmp))
        import dagster as dg

        from taxi_assets import settings
        from taxi_assets.core.model import TARGET, predict
        from taxi_assets.core.promotion import wins
        from taxi_assets.defs.model.assets import deployed_model, duration_model, model_challenge, month_trips
        from taxi_assets.defs.trip_data.assets import trip_months
        from tests.support.platform import platform_resources

        months = sorted(MANIFEST_ROWS)
        started = time.perf_counter()
        with dg.instance_for_test(temp_dir=str(Path(tmp) / "dagster_home")) as instance:
            resources = platform_resources()

            def run(assets, partition_key=None):
                result = dg.materialize(assets, partition_key=partition_key, instance=instance, resources=resources)
                assert result.success
                return {
                    k: v.value
                    for k, v in result.get_asset_materialization_events()[-1].materialization.metadata.items()
                }

            for month in months:
                run([trip_months], month)
            for month in months[:-1]:
                run([duration_model], month)
            run([deployed_model])
            figures = [run([model_challenge], month) for month in months if month > CHAMPION_MONTH]
            print(f"set-up and {len(figures)} challenges: {time.perf_counter() - started:.0f} s\n")

            registry = resources["model_registry"]
            rng = np.random.default_rng(0)
            min_gain = settings.current().promotion_min_gain
            print(
                f"{'month':<8}{'champion':>9}{'challenger':>11}{'RMSE champ':>11}{'RMSE chall':>11}{'gain':>8}"
                f"{'90% interval':>18}  alarm at {min_gain:.1%}"
            )
            with resources["warehouse"].get_connection() as conn:
                for row in figures:
                    rides = month_trips(conn, row["evaluation_month"])
                    actual = rides[TARGET].to_numpy()
                    champion = (predict(registry.load(row["champion"]), rides) - actual) ** 2
                    challenger = (predict(registry.load(row["challenger"]), rides) - actual) ** 2
                    draws = rng.integers(0, len(rides), size=(args.resamples, len(rides)))
                    champ_rmse = np.sqrt(champion[draws].mean(axis=1))
                    boot = (champ_rmse - np.sqrt(challenger[draws].mean(axis=1))) / champ_rmse
                    low, high = np.quantile(boot, [0.05, 0.95])
                    row["fires"] = wins(row["gain"], min_gain) and row["challenger"] != row["champion"]
                    print(
                        f"{row['evaluation_month']:<8}{row['champion_month']:>9}{row['challenger_month']:>11}"
                        f"{row['champion_rmse']:>11.4f}{row['challenger_rmse']:>11.4f}{row['gain']:>8.2%}"
                        f"{f'[{low:.2%}, {high:.2%}]':>18}  {'FIRES' if row['fires'] else 'silent'}"
                    )
            print("\nmonths firing per minimum gain (TAXI_PROMOTION_MIN_GAIN):")
            for threshold in MIN_GAINS:
                firing = [
                    row["evaluation_month"] for row in figures if wins(row["gain"], threshold) and row["gain"] > 0
                ]
                print(f"  {threshold:>6.1%}: {len(firing)}/{len(figures)} {' '.join(firing)}")


if __name__ == "__main__":
    main()
