"""`concurrency: pools: granularity: run` against the shipped `granularity: op` (issue 20), on a real daemon.

    .venv/bin/python bench/bench_granularity.py [--rounds 3] [--days 3] [--records 50000] [--skip-tests]

With run granularity Dagster's run queue holds back a run while any pool it uses is full, and a started run's steps
claim nothing (`InstanceConcurrencyContext.claim` returns at once), so the project's executor
(taxi_assets/execution.py), whose claims wait inside a running run, would have nothing left to do. This measures
what that costs. The run-granularity instance is the shipped dagster_home/dagster.yaml with `granularity: run`
(and without `op_granularity_run_buffer`, which only op granularity reads), written to a temporary folder; the
multi-run backfill policy, the run queue and the launcher health check are the same. Each round measures both, in
alternating order, with fresh DAGSTER_HOMEs and DuckDB files:

1. The 10-month raw_trips + trips backfill from the UI (bench/bench_backfill.py: 3 ranged runs), first run queued
   to last run end, against the bare DuckDB floor (bench/backfill_floor.py) measured in the same round.
2. The prediction-log sensor's ingest: `--records` records on each of `--days` past days written before the daemon
   starts, so its first tick requests one run per day (`prediction_logs` + `online_drift`, both in the `duckdb`
   pool); first run queued to the last day's `prediction_logs` materialization. No model is deployed, so each run's
   `online_drift` step then fails at once (the same for both granularities): the figure is the ingest's.
3. kill -9 of the run holding the warehouse (stalled inside raw_trips' download, tests/test_recovery.py's
   StallingSource) while a second run is queued behind it: seconds from the kill to the second run's success.

Then, once per granularity, tests/test_recovery.py (the kill -9 and dead-run tests) on that instance
(TAXI_TEST_DAGSTER_YAML, tests/support/dagster_processes.py): outcome and time of each test.
"""

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402
import psutil  # noqa: E402
import yaml  # noqa: E402

from bench.bench_backfill import floor, ui_backfill  # noqa: E402
from taxi_assets.core import predlog  # noqa: E402
from taxi_assets.execution import worker_process  # noqa: E402
from tests.support.dagster_processes import (  # noqa: E402
    LOCAL_INSTANCE,
    launch_run,
    running_daemon,
    wait_for_daemon,
    wait_for_runs,
)
from tests.support.platform import MANIFEST_ROWS, TLC_DIR, enter_platform_environment, wait_until  # noqa: E402
from tests.test_recovery import StallingSource  # noqa: E402

GRANULARITIES = ("op", "run")
RIDE = {"PULocationID": 74, "DOLocationID": 42, "trip_distance": 1.7, "pickup_datetime": "2022-02-03T08:15:00"}


def instance_yaml(folder: Path, granularity: str) -> Path:
    """The shipped instance for op granularity; for run granularity, a copy of it with `granularity: run`."""
    if granularity == "op":
        return LOCAL_INSTANCE
    config = yaml.safe_load(LOCAL_INSTANCE.read_text())
    pools = config["concurrency"]["pools"]
    pools["granularity"] = granularity
    pools.pop("op_granularity_run_buffer")
    path = folder / f"dagster-{granularity}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sensor_ingest(work: Path, instance: Path, days: int, records: int) -> dict[str, float]:
    enter_platform_environment(work)
    today = dt.datetime.now(dt.timezone.utc).date()
    # Days old enough for the store cursor to seal them at the first tick: one run each, all requested at once.
    log_days = [(today - dt.timedelta(days=3 + offset)).isoformat() for offset in range(days)]
    writer = predlog.open_writer(str(work / "prediction_logs"), str(work / "spool"))
    for day in log_days:
        stamp = f"{day}T12:00:00+00:00"
        for start in range(0, records, 10_000):
            batch = range(start, min(start + 10_000, records))
            writer.append([predlog.prediction_record({**RIDE, "id": f"{day}-{i}"}, 12.0, "m:v1", stamp) for i in batch])
    writer.close()
    dagster_home = work / "dagster_home"
    with (
        running_daemon(dagster_home, work / "daemon.log", instance),
        dg.DagsterInstance.from_config(str(dagster_home)) as dagster,
    ):
        runs = wait_for_runs(dagster, days, timeout=600)
        records_of_runs = dagster.get_run_records(dg.RunsFilter(run_ids=[run.run_id for run in runs]))
        queued = min(record.create_timestamp.timestamp() for record in records_of_runs)
        materialized = dagster.fetch_materializations(dg.AssetKey("prediction_logs"), limit=days).records
    assert sorted(record.partition_key for record in materialized) == sorted(log_days), materialized
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM prediction_log").fetchone()
    assert rows == days * records, rows
    own = max(record.timestamp for record in materialized) - queued
    return {"runs": len(runs), "own": own, "rows_per_s": rows / own}


def kill_recovery(work: Path, instance: Path) -> float:
    """kill -9 of the run holding the warehouse, a second run queued behind it: seconds until that one succeeds."""
    enter_platform_environment(work)
    source = StallingSource(TLC_DIR)
    os.environ["TAXI_TRIP_DATA_URL"] = source.url
    dagster_home = work / "dagster_home"
    try:
        with (
            running_daemon(dagster_home, work / "daemon.log", instance),
            dg.DagsterInstance.from_config(str(dagster_home)) as dagster,
        ):
            wait_for_daemon(dagster)
            source.stalling.set()
            launch_run(dagster_home, "trip_data_job", "2021-01")
            assert source.stalled.wait(120)
            (holder,) = dagster.get_runs()
            pid, _ = wait_until(lambda: worker_process(dagster, holder.run_id), 60, "the holder's worker")
            launch_run(dagster_home, "trip_data_job", "2021-02")
            (waiter,) = (run for run in dagster.get_runs() if run.run_id != holder.run_id)
            time.sleep(5)  # the second run as far as it gets: started and waiting (op), or queued (run)
            source.stalling.clear()
            source.release.set()
            psutil.Process(pid).kill()
            killed_at = time.monotonic()
            wait_until(lambda: dagster.get_run_by_id(waiter.run_id).is_finished, 300, "the second run ends")
            recovery = time.monotonic() - killed_at
            assert dagster.get_run_by_id(waiter.run_id).status == dg.DagsterRunStatus.SUCCESS
            assert dagster.get_run_by_id(holder.run_id).status == dg.DagsterRunStatus.FAILURE
    finally:
        source.close()
    return recovery


def recovery_tests(
    work: Path, instance: Path, environment: dict[str, str]
) -> tuple[float, list[tuple[str, str, float]]]:
    """tests/test_recovery.py on `instance`: its wall time, and each test's name, outcome and seconds."""
    report = work / "junit.xml"
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_recovery.py", "-q", "-p", "no:cacheprovider"]
        + ["--junitxml", str(report)],
        cwd=REPO_ROOT,
        env={**environment, "TAXI_TEST_DAGSTER_YAML": str(instance)},
        stdout=subprocess.DEVNULL,
        check=False,
    )
    wall = time.monotonic() - started
    outcomes = []
    for case in ElementTree.parse(report).iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes.append((case.get("name"), "failed" if failed else "passed", float(case.get("time"))))
    return wall, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three measurements, order alternating")
    parser.add_argument("--days", type=int, default=3, help="days of prediction logs for the sensor to ingest")
    parser.add_argument("--records", type=int, default=50_000, help="prediction records per day")
    parser.add_argument("--skip-tests", action="store_true", help="leave out tests/test_recovery.py")
    args = parser.parse_args()
    environment = dict(os.environ)  # before any platform environment is entered: the tests set their own
    months = sorted(MANIFEST_ROWS)
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in GRANULARITIES}
    floors = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench_granularity_") as tmp:
        work = Path(os.getenv("BENCH_KEEP_DIR") or tmp)
        instances = {name: instance_yaml(work, name) for name in GRANULARITIES}
        for round_number in range(args.rounds):
            order = GRANULARITIES if round_number % 2 == 0 else GRANULARITIES[::-1]
            floor_dir = work / f"floor-{round_number}"  # a fresh DuckDB file each round
            floor_dir.mkdir()
            floors.append(floor(floor_dir, months)[0])
            for name in order:
                here = work / f"{name}-{round_number}"
                backfill = ui_backfill(here / "backfill", months, instances[name])
                ingest = sensor_ingest(here / "ingest", instances[name], args.days, args.records)
                kill = kill_recovery(here / "kill", instances[name])
                for key, value in (
                    ("backfill", backfill["own"]),
                    ("pickup", backfill["pickup"]),
                    ("ingest", ingest["own"]),
                    ("ingest_rows_per_s", ingest["rows_per_s"]),
                    ("kill", kill),
                ):
                    figures[name].setdefault(key, []).append(value)
                loads.append(os.getloadavg()[0])
                print(
                    f"round {round_number + 1}, {name}: backfill {backfill['own']:.1f} s (floor {floors[-1]:.1f} s), "
                    f"ingest {ingest['own']:.1f} s, kill -9 recovery {kill:.1f} s; load {loads[-1]:.1f}",
                    flush=True,
                )
        tests = {}
        if not args.skip_tests:
            for name in GRANULARITIES:
                tests[name] = recovery_tests(work / f"tests-{name}", instances[name], environment)
    print(
        f"\n{args.rounds} rounds, op and run alternating; load average {min(loads):.1f}-{max(loads):.1f}; "
        f"floor median {statistics.median(floors):.1f} s"
    )
    print(f"{'median of rounds':<58} {'op':>9} {'run':>9} {'run/op':>7}")
    rows = (
        ("10-month backfill, first run queued to last end (s)", "backfill"),
        ("  daemon pickup, click to first run queued (s)", "pickup"),
        (f"sensor ingest, {args.days} days x {args.records:,} records, queued to landed (s)", "ingest"),
        ("  ingest rows/s", "ingest_rows_per_s"),
        ("kill -9 of the warehouse holder to next run's success (s)", "kill"),
    )
    for label, key in rows:
        op, run = (statistics.median(figures[name][key]) for name in GRANULARITIES)
        print(f"{label:<58} {op:>9.1f} {run:>9.1f} {run / op:>6.2f}x")
    op, run = (statistics.median(figures[name]["backfill"]) / statistics.median(floors) for name in GRANULARITIES)
    print(f"{'  backfill / floor':<58} {op:>8.2f}x {run:>8.2f}x")
    for name, (wall, outcomes) in tests.items():
        passed = sum(outcome == "passed" for _, outcome, _ in outcomes)
        print(f"\ntests/test_recovery.py, granularity {name}: {passed}/{len(outcomes)} passed in {wall:.0f} s")
        for test, outcome, seconds in outcomes:
            print(f"  {outcome:<7} {seconds:6.1f} s  {test}")


if __name__ == "__main__":
    main()
