"""Wall time of the 10-month backfill of raw_trips + trips, launched as a user would: `dagster job backfill`
with a running `dagster-daemon`, every run its own process, the `duckdb` pool at 1.

    .venv/bin/python bench/bench_backfill.py

Prints the wall time from launch to the last run's end, the time the runs themselves span, rows/s, and
the slowest run. Uses a temporary DAGSTER_HOME and DuckDB file; the TLC directory defaults to ../shared/data/tlc.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402

from tests.support.dagster_processes import backfill_from_cli, running_daemon, wait_for_runs  # noqa: E402
from tests.support.platform import MANIFEST_ROWS, enter_platform_environment  # noqa: E402


def main() -> None:
    months = sorted(MANIFEST_ROWS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(os.getenv("BENCH_KEEP_DIR") or tmp)
        enter_platform_environment(work)
        dagster_home = work / "dagster_home"
        with running_daemon(dagster_home, work / "daemon.log"):
            time.sleep(3)  # let the daemon load the workspace, as a running platform has
            started = time.monotonic()
            backfill_from_cli(dagster_home, "trip_data_job", months)
            with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
                runs = wait_for_runs(instance, len(months), timeout=900)
                wall = time.monotonic() - started
                stats = {run.run_id: instance.get_run_stats(run.run_id) for run in runs}
        with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as conn:
            (rows,) = conn.execute("SELECT count(*) FROM raw_trips").fetchone()
    failed = [run.tags["dagster/partition"] for run in runs if run.status != dg.DagsterRunStatus.SUCCESS]
    span = max(s.end_time for s in stats.values()) - min(s.launch_time for s in stats.values())
    slowest = max(s.end_time - s.launch_time for s in stats.values())
    print(f"months: {len(months)}  runs: {len(runs)}  failed: {failed or 'none'}")
    print(f"raw rows loaded: {rows}")
    print(f"wall time, launch to last run end: {wall:.1f} s  ({rows / wall:,.0f} raw rows/s)")
    print(f"runs span (first launch to last end): {span:.1f} s; slowest run {slowest:.1f} s")


if __name__ == "__main__":
    main()
