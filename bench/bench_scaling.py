"""The cost curve: how the platform's costs grow with volume on one machine (prints a table; not a test).

    .venv/bin/python bench/bench_scaling.py [--records 1e6,5e6,20e6] [--windows 1e3,1e5,1e6] [--month-rows 3e6]
        [--mongo-records 200000] [--skip ingest,mongo,online,batch]

Every measured step runs in a child process of its own, which reports its wall time and its peak RSS (the
process's high-water mark, DuckDB's native memory included).

1. ingest: one UTC day of `--records` prediction-log records (4 predictions to 1 feedback, the service's own
   line format) in the file store, then (a) a sensor tick's store reads (`changes` + `pending` from nothing
   ingested) and (b) `prediction_logs` of that day materialized. Goals at 20M: >= 500k rows/s, RSS bounded
   (flat in the volume).
2. mongo: the MongoDB store's shipping (journal -> collection) and staging of a day (collection -> DuckDB), against
   mongomock (an in-process Python imitation: the rates are mongomock's, not a server's; what this measures is that
   our side streams, i.e. RSS flat in the volume).
3. online: `online_drift` with its `last_n` window at each of `--windows` rows, over an ingested log.
4. batch: a yellow-taxi-sized month (`--month-rows`, resampled from the real green months into 2022-06) loaded,
   scored, drift-measured and reported: `trip_months`, `batch_predictions`, `drift_metrics` + `monitoring_report`.
   Goals: <= 60 s and <= 4 GB.
"""

import argparse
import datetime as dt
import json
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

DAY = "2024-06-03"
GOAL_INGEST_ROWS_PER_S = 500_000
GOAL_BATCH_SECONDS, GOAL_BATCH_GB = 60.0, 4.0


# ---- children: each measures one thing in a fresh process and prints one JSON line


def _report(**figures) -> None:
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def write_day(folder: Path, records: int, model_tag: str = "m:1") -> dict:
    """A day of records as the service writes them: PredictionBatch lines, and one feedback per 4 predictions."""
    from taxi_assets.core import predlog

    writer = predlog.FileLogWriter(folder)
    rides = _rides()
    done, batch = 0, 50_000
    while done < records:
        n = min(batch, records - done)
        predictions = n * 4 // 5
        ids = [f"r{done + i:09d}" for i in range(predictions)]
        pick = [rides[(done + i) % len(rides)] for i in range(predictions)]
        ts = f"{DAY}T{(done // batch) % 24:02d}:00:00.000000+00:00"
        columns = {name: [ride[name] for ride in pick] for name in ("PULocationID", "DOLocationID", "trip_distance")}
        columns["pickup_datetime"] = [ride["pickup_datetime"] for ride in pick]
        assert writer.append(
            predlog.PredictionBatch(
                rides={"id": ids, **columns}, predictions=[12.5] * predictions, model_tag=model_tag, ts=ts
            )
        )
        assert writer.append([predlog.feedback_record(ride_id, 11.0, ts=ts) for ride_id in ids[: n - predictions]])
        done += n
    writer.close()
    return {"records": records, "bytes": sum(path.stat().st_size for path in folder.rglob("*.jsonl"))}


def _rides() -> list[dict]:
    import duckdb

    return [
        {"PULocationID": pu, "DOLocationID": do, "trip_distance": dist, "pickup_datetime": pickup.isoformat()}
        for pu, do, dist, pickup in duckdb.sql(
            f"SELECT PULocationID, DOLocationID, trip_distance, lpep_pickup_datetime FROM "
            f"read_parquet('{TLC_DIR / 'green_tripdata_2022-02.parquet'}') LIMIT 20000"
        ).fetchall()
    ]


def sensor_reads(folder: Path) -> dict:
    from taxi_assets.core import predlog

    reader = predlog.FileLogReader(folder)
    started = time.perf_counter()
    changes = reader.changes(None)
    pending = reader.pending(None)
    return {"seconds": time.perf_counter() - started, "pending": pending.count, "days": changes.days}


def ingest(folder: Path) -> dict:
    enter_platform_environment(folder)
    import dagster as dg

    from taxi_assets.defs.online_monitoring.assets import prediction_logs
    from tests.support.platform import platform_resources

    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = dg.materialize([prediction_logs], partition_key=DAY, instance=instance, resources=platform_resources())
        seconds = time.perf_counter() - started
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    return {
        "seconds": seconds,
        "rows": metadata["prediction_rows"].value + metadata["feedback_rows"].value,
    }


def mongo(folder: Path, records: int) -> dict:
    """Ship `records` journal records to a mongomock collection, then stage their day into DuckDB."""
    import duckdb
    import mongomock

    from taxi_assets.core import predlog

    collection = mongomock.MongoClient().taxi.prediction_logs
    write_day(folder / "journal", records)
    writer = predlog.MongoLogWriter("mongodb://unused", folder / "journal", collection_obj=collection)
    started = time.perf_counter()
    assert writer.ship_once()
    shipped = time.perf_counter() - started
    writer.close()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with duckdb.connect(str(folder / "w.duckdb")) as conn:
        started = time.perf_counter()
        predlog.MongoLogReader("mongodb://unused", collection_obj=collection).stage_day(conn, DAY)
        staged = time.perf_counter() - started
        (rows,) = conn.execute(f"SELECT count(*) FROM {predlog.STAGING_TABLE}").fetchone()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    return {"ship_seconds": shipped, "stage_seconds": staged, "rows": rows, "stage_rss_growth_mb": grown}


def online_setup(folder: Path, rows: int) -> dict:
    """A deployed model (seed recipe, trained on 2021-01, validated on 2021-02) and `rows` logged predictions of it
    (one feedback per 4), ingested."""
    enter_platform_environment(folder)
    import dagster as dg

    from taxi_assets.defs.online_monitoring.assets import prediction_logs
    from tests.support.platform import deploy_seed_model, platform_resources

    resources = platform_resources()
    with dg.instance_for_test() as instance:
        tag = deploy_seed_model(instance, resources)
        _write_predictions(folder / "prediction_logs", rows * 5 // 4, tag)
        assert dg.materialize([prediction_logs], partition_key=DAY, instance=instance, resources=resources)
    return {"model_tag": tag}


def _write_predictions(folder: Path, records: int, tag: str) -> None:
    write_day(folder, records, tag)


def online_window(folder: Path, rows: int) -> dict:
    enter_platform_environment(folder)
    import dagster as dg

    from taxi_assets.defs.online_monitoring.assets import online_drift
    from tests.support.platform import platform_resources

    config = {"ops": {"online_drift": {"config": {"last_n": rows, "as_of": f"{DAY}T23:59:00+00:00"}}}}
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = dg.materialize([online_drift], instance=instance, resources=platform_resources(), run_config=config)
        seconds = time.perf_counter() - started
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    return {"seconds": seconds, "rows": metadata[f"last_{rows}/rows"].value}


BIG_MONTH, REFERENCE = "2022-06", "2021-01"


def batch_setup(folder: Path, rows: int) -> dict:
    """A `rows`-ride month (2022-06) resampled with replacement from the real green months, their pickups moved into
    June (day of month kept, capped at 30); the real months beside it; a seed model trained on 2021-01 deployed; the
    big month loaded into raw_trips and trips (timed)."""
    import duckdb

    source = folder / "tlc"
    source.mkdir(parents=True)
    for path in TLC_DIR.glob("*"):
        (source / path.name).symlink_to(path)
    files = ", ".join(f"'{path}'" for path in sorted(TLC_DIR.glob("green_tripdata_*.parquet")))
    duckdb.sql(f"""
        COPY (
            WITH pool AS (
                SELECT * EXCLUDE (lpep_pickup_datetime, lpep_dropoff_datetime), lpep_pickup_datetime AS pickup,
                    lpep_dropoff_datetime - lpep_pickup_datetime AS took, row_number() OVER () - 1 AS n
                FROM read_parquet([{files}], union_by_name = true)
            ), picks AS (SELECT hash(range) % (SELECT count(*) FROM pool) AS n FROM range({rows}))
            SELECT pool.* EXCLUDE (pickup, took, n),
                TIMESTAMP '{BIG_MONTH}-01' + INTERVAL (least(day(pickup), 30) - 1) DAY
                    + (pickup - date_trunc('day', pickup)) AS lpep_pickup_datetime,
                TIMESTAMP '{BIG_MONTH}-01' + INTERVAL (least(day(pickup), 30) - 1) DAY
                    + (pickup - date_trunc('day', pickup)) + took AS lpep_dropoff_datetime
            FROM picks JOIN pool USING (n)
        ) TO '{source}/green_tripdata_{BIG_MONTH}.parquet' (FORMAT parquet)
    """)
    os.environ["TAXI_TRIP_DATA_URL"] = str(source)
    enter_platform_environment(folder)
    os.environ["TAXI_TRIP_DATA_URL"] = str(source)
    import dagster as dg

    from taxi_assets.defs.trip_data.assets import taxi_zones, trip_months
    from tests.support.platform import deploy_seed_model, platform_resources

    resources = platform_resources()
    with dg.instance_for_test() as instance:
        assert dg.materialize([taxi_zones], instance=instance, resources=resources)
        deploy_seed_model(instance, resources, REFERENCE)
        started = time.perf_counter()
        assert dg.materialize([trip_months], partition_key=BIG_MONTH, instance=instance, resources=resources)
        loaded = time.perf_counter() - started
    with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as conn:
        (trips,) = conn.execute("SELECT count(*) FROM trips WHERE month = $m", {"m": BIG_MONTH}).fetchone()
    return {"load_seconds": loaded, "trips": trips}


def batch_monitoring(folder: Path) -> dict:
    os.environ["TAXI_TRIP_DATA_URL"] = str(folder / "tlc")
    enter_platform_environment(folder)
    os.environ["TAXI_TRIP_DATA_URL"] = str(folder / "tlc")
    import dagster as dg

    from taxi_assets.defs.batch_monitoring.assets import batch_drift, batch_predictions
    from tests.support.platform import platform_resources

    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = dg.materialize(
            [batch_predictions, batch_drift], partition_key=BIG_MONTH, instance=instance, resources=platform_resources()
        )
        seconds = time.perf_counter() - started
    assert result.success
    return {"seconds": seconds}


CHILDREN = {
    "write_day": write_day,
    "sensor_reads": sensor_reads,
    "ingest": ingest,
    "mongo": mongo,
    "online_setup": online_setup,
    "online_window": online_window,
    "batch_setup": batch_setup,
    "batch_monitoring": batch_monitoring,
}


def child(name: str, *args: str) -> dict:
    """Run CHILDREN[name](*args) in a fresh interpreter; its figures with its wall time and peak RSS."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, __file__, "--child", name, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["wall"] = time.monotonic() - started
    return figures


# ---- the curve


def bench_ingest(work: Path, sizes: list[int]) -> list[str]:
    lines = [
        "| log records / day | log size | sensor tick reads | ingest (`prediction_logs`) | rows/s | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for records in sizes:
        folder = work / f"ingest-{records}"
        written = child("write_day", str(folder / "prediction_logs"), str(records))
        tick = child("sensor_reads", str(folder / "prediction_logs"))
        assert tick["pending"] == records, tick
        done = child("ingest", str(folder))
        assert done["rows"] == records, done
        rate = records / done["seconds"]
        lines.append(
            f"| {records:,} | {written['bytes'] / 1e9:.2f} GB | {tick['seconds']:.1f} s, {tick['rss_mb']:.0f} MB "
            f"| {done['seconds']:.1f} s | {rate:,.0f} | {done['rss_mb'] / 1024:.2f} GB |"
        )
        print(lines[-1], flush=True)
        _remove(folder)
    top = sizes[-1]
    lines.append(f"\ngoal at {top:,}/day: >= {GOAL_INGEST_ROWS_PER_S:,} rows/s and peak RSS flat in the volume")
    return lines


def bench_mongo(work: Path, sizes: list[int]) -> list[str]:
    lines = [
        "| records (mongomock) | shipping | records/s | staging into DuckDB | records/s | RSS growth while staging |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for records in sizes:
        done = child("mongo", str(work / f"mongo-{records}"), str(records))
        assert done["rows"] == records, done
        lines.append(
            f"| {records:,} | {done['ship_seconds']:.1f} s | {records / done['ship_seconds']:,.0f} "
            f"| {done['stage_seconds']:.1f} s | {records / done['stage_seconds']:,.0f} "
            f"| {done['stage_rss_growth_mb']:.0f} MB |"
        )
        print(lines[-1], flush=True)
        _remove(work / f"mongo-{records}")
    return lines


def bench_online(work: Path, windows: list[int]) -> list[str]:
    folder = work / "online"
    child("online_setup", str(folder), str(max(windows)))
    lines = ["| `online_drift` window (`last_n`) | wall | peak RSS |", "|---:|---:|---:|"]
    for rows in windows:
        done = child("online_window", str(folder), str(rows))
        assert done["rows"] == rows, done
        lines.append(f"| {rows:,} rows | {done['seconds']:.1f} s | {done['rss_mb'] / 1024:.2f} GB |")
        print(lines[-1], flush=True)
    _remove(folder)
    return lines


def bench_batch(work: Path, rows: int) -> list[str]:
    folder = work / "batch"
    setup = child("batch_setup", str(folder), str(rows))
    done = child("batch_monitoring", str(folder))
    lines = [
        f"| {rows:,}-ride month (`{BIG_MONTH}`, {setup['trips']:,} trips) | wall | peak RSS |",
        "|---|---:|---:|",
        f"| load: `trip_months` | {setup['load_seconds']:.1f} s | {setup['rss_mb'] / 1024:.2f} GB (setup process) |",
        f"| monitor: `batch_predictions` + `drift_metrics` + `monitoring_report` | {done['seconds']:.1f} s "
        f"| {done['rss_mb'] / 1024:.2f} GB |",
        f"\ngoal: monitored in <= {GOAL_BATCH_SECONDS:.0f} s and <= {GOAL_BATCH_GB:.0f} GB",
    ]
    print("\n".join(lines), flush=True)
    _remove(folder)
    return lines


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _sizes(text: str) -> list[int]:
    return [int(float(size)) for size in text.split(",")]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        name, *args = sys.argv[2:]
        function = CHILDREN[name]
        converted = [Path(a) if "/" in a else int(a) if a.isdigit() else a for a in args]
        _report(**function(*converted))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="1e6,5e6,20e6")
    parser.add_argument("--mongo-records", default="1e5,4e5")
    parser.add_argument("--windows", default="1e3,1e5,1e6")
    parser.add_argument("--month-rows", default="3e6")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: ingest,mongo,online,batch")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"{dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        work = Path(os.getenv("BENCH_KEEP_DIR") or tmp)
        report = []
        if "ingest" not in skip:
            report += bench_ingest(work, _sizes(args.records))
        if "mongo" not in skip:
            report += ["", *bench_mongo(work, _sizes(args.mongo_records))]
        if "online" not in skip:
            report += ["", *bench_online(work, _sizes(args.windows))]
        if "batch" not in skip:
            report += ["", *bench_batch(work, int(float(args.month_rows)))]
    print("\n".join(report))


if __name__ == "__main__":
    main()
