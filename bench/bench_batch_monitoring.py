"""Batch monitoring of one month as Dagster assets vs a bare script doing the same work (prints figures; not a test).

    .venv/bin/python bench/bench_batch_monitoring.py [--month 2022-02] [--reference 2022-01] [--repeat 3]

Set-up (untimed, in a temporary folder): load both months into DuckDB, train the `hgb` model on the reference
month, deploy it, build its reference profile, and score the reference month. Timed, alternately, in one process
with Evidently already imported:
(a) `batch_predictions` + `drift_metrics` + `monitoring_report` (one step) materialized in-process: figures and
    verdicts from the project's maths over the profile; the report's drift widgets drawn from them and its regression
    quality from the predictions (the project's Evidently metrics);
(b) the same with the report skipped (run config `report: false`, as inside a backfill): every figure and alarm;
(c) bare Evidently: a script that reads the same rows from DuckDB, scores the month with the deployed pipeline,
    runs Evidently's default drift and regression report (tests/support/evidently_defaults.py) and writes its HTML;
(d) Dagster's own share of (a): the same two steps, partitioned and chained the same way, doing nothing (run
    creation, step events, input versions in the instance's SQLite storage).
Goal (issues 12 and 21): median (a) / median (c) <= 1.0; (b) / (c) shows what the figures alone cost. The minimum of
each is printed too: on a shared machine the quietest run of each is the steadier comparison.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support.platform import enter_platform_environment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--month", default="2022-02")
    parser.add_argument("--reference", default="2022-01")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        folder = Path(tmp)
        enter_platform_environment(folder)
        import dagster as dg
        import evidently  # noqa: F401  (imported once, outside both timings)

        from taxi_assets.core.evidently_report import report_frame
        from taxi_assets.core.model import predict
        from taxi_assets.core.scoring import TRIP_COLUMNS
        from taxi_assets.defs.batch_monitoring.assets import batch_drift, batch_predictions
        from taxi_assets.defs.model.assets import deployed_model, duration_model
        from taxi_assets.defs.model.profile import reference_profile
        from taxi_assets.defs.partitions import monthly_partitions
        from taxi_assets.defs.trip_data.assets import taxi_zones, trip_months, trips
        from tests.support.evidently_defaults import default_snapshot
        from tests.support.platform import platform_resources

        with dg.instance_for_test(temp_dir=str(folder / "dagster_home")) as instance:
            resources = platform_resources()

            def run(assets, partition_key=None, **kwargs):
                result = dg.materialize(
                    assets, partition_key=partition_key, instance=instance, resources=resources, **kwargs
                )
                assert result.success
                return result

            run([taxi_zones])
            for month in (args.reference, args.month):
                run([trip_months], month)
            run([duration_model], args.reference)
            run(
                [deployed_model], run_config={"ops": {"deployed_model": {"config": {"training_month": args.reference}}}}
            )
            run([reference_profile])
            run([batch_predictions], args.reference)

            def assets() -> None:
                run([batch_predictions, batch_drift], args.month)

            @dg.asset(partitions_def=monthly_partitions, deps=[trips])
            def first() -> None:
                """Nothing, in `batch_predictions`' place."""

            @dg.asset(partitions_def=monthly_partitions, deps=[first])
            def second() -> None:
                """Nothing, in `batch_drift`'s place."""

            def dagster() -> None:
                run([first, second], args.month)

            def figures_only() -> None:
                run(
                    [batch_predictions, batch_drift],
                    args.month,
                    run_config={"ops": {"batch_drift": {"config": {"report": False}}}},
                )

            def bare() -> None:
                pipeline, model = resources["model_registry"].load_deployed()
                with resources["warehouse"].get_connection() as conn:
                    columns = ", ".join(TRIP_COLUMNS)
                    current = conn.execute(f"SELECT {columns} FROM trips WHERE month = $m", {"m": args.month}).df()
                    reference = conn.execute(
                        f"SELECT {columns}, prediction FROM batch_predictions WHERE month = $m", {"m": args.reference}
                    ).df()
                current["prediction"] = predict(pipeline, current)
                snapshot = default_snapshot(report_frame(current), report_frame(reference))
                snapshot.save_html(str(resources["reports"].path(f"bare_report_{args.month}.html")))

            # Wall time (the goal) and this process's CPU time: on a loaded machine the CPU time is the steadier
            # comparison (all three are in-process and single-threaded but for DuckDB's threads).
            timings: dict[str, dict[str, list[float]]] = {
                clock: {"assets": [], "figures": [], "bare": [], "dagster": []} for clock in ("wall", "cpu")
            }
            for _ in range(args.repeat):
                for name, work in (("bare", bare), ("assets", assets), ("figures", figures_only), ("dagster", dagster)):
                    wall, cpu = time.perf_counter(), time.process_time()
                    work()
                    timings["wall"][name].append(time.perf_counter() - wall)
                    timings["cpu"][name].append(time.process_time() - cpu)

    print(
        f"month {args.month} vs reference {args.reference}, {args.repeat} runs each, alternating (seconds); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for clock, runs in timings.items():
        for name, values in runs.items():
            print(f"  {clock:4s} {name:7s} runs " + " ".join(f"{v:.2f}" for v in values))
        for label, figure in (("median", statistics.median), ("min", min)):
            assets, bare, figures, dagster = (figure(runs[name]) for name in ("assets", "bare", "figures", "dagster"))
            print(
                f"  {clock:4s} {label:6s}: assets with report {assets:.2f} s / bare Evidently {bare:.2f} s = "
                f"{assets / bare:.2f}x (goal <= 1.0: {'met' if assets <= bare else 'NOT met'}); "
                f"report skipped {figures:.2f} s = {figures / bare:.2f}x; Dagster's own run of two empty steps "
                f"{dagster:.2f} s, the assets' work without it {assets - dagster:.2f} s = "
                f"{(assets - dagster) / bare:.2f}x"
            )


if __name__ == "__main__":
    main()
