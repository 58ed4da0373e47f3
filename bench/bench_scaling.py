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


def write_day(folder: Path, records: int) -> dict:
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
                rides={"id": ids, **columns}, predictions=[12.5] * predictions, model_tag="m:1", ts=ts
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


CHILDREN = {"write_day": write_day, "sensor_reads": sensor_reads, "ingest": ingest}


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


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        name, *args = sys.argv[2:]
        function = CHILDREN[name]
        converted = [Path(a) if "/" in a else int(a) if a.isdigit() else a for a in args]
        _report(**function(*converted))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="1e6,5e6,20e6")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: ingest,mongo,online,batch")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"{dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        work = Path(os.getenv("BENCH_KEEP_DIR") or tmp)
        report = []
        if "ingest" not in skip:
            report += bench_ingest(work, [int(float(size)) for size in args.records.split(",")])
    print("\n".join(report))


if __name__ == "__main__":
    main()
