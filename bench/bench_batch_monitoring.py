"""Batch monitoring of one month as Dagster assets vs a bare script doing the same work (prints figures; not a test).

    .venv/bin/python bench/bench_batch_monitoring.py [--month 2022-02] [--reference 2022-01] [--repeat 3]

Set-up (untimed, in a temporary folder): load both months into DuckDB, train the `hgb` model on the reference
month, deploy it, build its reference profile, and score the reference month. Timed, alternately, in one process
with Evidently already imported:
(a) `batch_predictions` + `drift_metrics` + `monitoring_report` (one step) materialized in-process: figures and
    verdicts from the project's maths over the profile, Evidently rendering the report with those verdicts;
(b) the same with the report skipped (run config `report: false`, as inside a backfill): every figure and alarm;
(c) bare Evidently: a script that reads the same rows from DuckDB, scores the month with the deployed pipeline,
    runs Evidently's default drift and regression report and writes its HTML.
Goal (issue 12): median (a) / median (c) <= 1.0; (b) / (c) shows what the figures alone cost.
"""

import argparse
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

        from taxi_assets.core.evidently_report import build_snapshot, report_frame
        from taxi_assets.core.model import predict
        from taxi_assets.core.scoring import TRIP_COLUMNS
        from taxi_assets.defs.batch_monitoring.assets import batch_drift, batch_predictions
        from taxi_assets.defs.model.assets import deployed_model, duration_model
        from taxi_assets.defs.model.profile import reference_profile
        from taxi_assets.defs.trip_data.assets import taxi_zones, trip_months
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
                snapshot = build_snapshot(report_frame(current), report_frame(reference))
                snapshot.save_html(str(resources["reports"].path(f"bare_report_{args.month}.html")))

            timings: dict[str, list[float]] = {"assets": [], "figures": [], "bare": []}
            for _ in range(args.repeat):
                for name, work in (("bare", bare), ("assets", assets), ("figures", figures_only)):
                    started = time.perf_counter()
                    work()
                    timings[name].append(time.perf_counter() - started)

    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(f"month {args.month} vs reference {args.reference}, {args.repeat} runs each (seconds)")
    for name, values in timings.items():
        print(f"  {name:7s} median {medians[name]:6.2f}   runs " + " ".join(f"{v:.2f}" for v in values))
    ratio = medians["assets"] / medians["bare"]
    verdict = "met" if ratio <= 1.0 else "NOT met"
    print(f"  ratio assets (with report) / bare Evidently = {ratio:.2f}  (goal <= 1.0: {verdict})")
    print(f"  ratio assets (report skipped) / bare Evidently = {medians['figures'] / medians['bare']:.2f}")


if __name__ == "__main__":
    main()
