"""The whole asset graph over every month of the local TLC mirror, in a child process (prints figures; not a test).

    .venv/bin/python bench/bench_graph.py [--train-all]

The child materializes, in a temporary folder: `taxi_zones`; `raw_trips` + `trips` for each month; `duration_model`
for the deployed month (2021-01; every month with --train-all) and `deployed_model`; then `batch_predictions` +
`drift_metrics` + `monitoring_report` for each month. The parent reports the wall time and the child's peak RSS
(`getrusage(RUSAGE_CHILDREN)`). Goals: wall time <= 60 s, peak RSS <= 1.5 GB.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support.platform import TLC_DIR, enter_platform_environment  # noqa: E402

DEPLOYED_MONTH = "2021-01"


def months() -> list[str]:
    return sorted(path.stem.removeprefix("green_tripdata_") for path in TLC_DIR.glob("green_tripdata_*.parquet"))


def child(train_all: bool) -> None:
    """Materialize the graph; print one line per stage with its seconds."""
    import dagster as dg

    from taxi_assets.defs.batch_monitoring.assets import batch_drift, batch_predictions
    from taxi_assets.defs.model.assets import deployed_model, duration_model
    from taxi_assets.defs.model.profile import reference_profile
    from taxi_assets.defs.trip_data.assets import taxi_zones, trip_months
    from tests.support.platform import platform_resources

    with dg.instance_for_test(temp_dir=os.environ["DAGSTER_HOME"]) as instance:
        resources = platform_resources()

        def run(assets, partition_key=None, **kwargs) -> None:
            result = dg.materialize(
                assets, partition_key=partition_key, instance=instance, resources=resources, **kwargs
            )
            assert result.success

        def stage(name: str, work) -> None:
            started, cpu = time.perf_counter(), time.process_time()
            work()
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            print(f"  {name:36s} wall {wall:6.1f} s   CPU {cpu:6.1f} s", flush=True)

        stage("taxi_zones", lambda: run([taxi_zones]))
        stage("raw_trips + trips, all months", lambda: [run([trip_months], month) for month in months()])
        # The newest month has no later one to be validated on, so it trains no model.
        trained = months()[:-1] if train_all else [DEPLOYED_MONTH]
        stage(f"duration_model x{len(trained)}", lambda: [run([duration_model], month) for month in trained])
        config = {"ops": {"deployed_model": {"config": {"training_month": DEPLOYED_MONTH}}}}
        stage("deployed_model", lambda: run([deployed_model], run_config=config))
        stage("reference_profile", lambda: run([reference_profile]))
        monitoring = [batch_predictions, batch_drift]
        stage("batch monitoring, all months", lambda: [run(monitoring, month) for month in months()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-all", action="store_true", help="train duration_model for every month too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.train_all)
        return

    with tempfile.TemporaryDirectory(prefix="bench_graph_") as tmp:
        folder = Path(tmp)
        enter_platform_environment(folder)
        env = {**os.environ, "DAGSTER_LOG_LEVEL": "WARNING"}
        print(f"{len(months())} months: {', '.join(months())}")
        started = time.perf_counter()
        command = [sys.executable, __file__, "--child"] + (["--train-all"] if args.train_all else [])
        subprocess.run(command, env=env, check=True, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss is in KiB on Linux; for children it is the largest peak among them.
    peak_gb = usage.ru_maxrss / 1024**2
    # On a shared 2-core host the wall time depends on the neighbours; the CPU time does not.
    verdict = "met" if wall <= 60 else "NOT met"
    print(f"wall time {wall:.1f} s (goal <= 60: {verdict}); load average now {os.getloadavg()[0]:.1f}")
    print(f"CPU time  {usage.ru_utime + usage.ru_stime:.1f} s (user + system)")
    print(f"peak RSS  {peak_gb:.2f} GB (goal <= 1.5: {'met' if peak_gb <= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
