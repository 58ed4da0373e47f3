"""Online monitoring figures (prints them; not a test).

    .venv/bin/python bench/bench_online.py [--records 200000] [--repeat 3] [--trials 3] [--skip-latency]

1. Ingest rate: `--records` prediction records (and one feedback per four predictions) written with the store's
   own writer into one UTC day, then `prediction_logs` of that day materialized in-process, `--repeat` times (each
   run replaces the whole day). Goal: >= 100,000 rows/s. The store reader's record-by-record
   `read_day` (the MongoDB path) is timed for comparison.
2. Serve-to-Prometheus latency: a real `bentoml serve`, Pushgateway and Prometheus with the repo's config (15 s
   scrape interval), the model trained and deployed by the assets. The sensor ticks every 30 s (its minimum
   interval) and each run it requests is executed in-process as soon as it is requested; a batch of 100 rides is
   posted at a random moment of the tick cycle, and the time until Prometheus shows the new
   `taxi_online_window_rows{window="last_2000"}` is measured, `--trials` times. Goal: <= 60 s.
   The daemon would add the launch of a run process (a few seconds) to each figure.
"""

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import dagster as dg  # noqa: E402
import requests  # noqa: E402

from taxi_assets import settings  # noqa: E402
from taxi_assets.core import predlog  # noqa: E402
from taxi_assets.core.drift import DEFAULT_WINDOW  # noqa: E402
from taxi_assets.core.warehouse import PREDICTION_LOG_DAY_SELECTS, replace_partition  # noqa: E402
from taxi_assets.defs.online_monitoring.assets import prediction_logs  # noqa: E402
from tests.support import service_harness  # noqa: E402
from tests.support.platform import (  # noqa: E402
    enter_platform_environment,
    free_port,
    platform_resources,
)
from tests.support.prometheus_harness import query, start_prometheus, start_pushgateway  # noqa: E402

TICK_SECONDS = 30
RIDES_PER_TRIAL = 100


def bench_ingest(records: int, repeat: int) -> None:
    day = dt.datetime.now(dt.timezone.utc).date().isoformat()
    rides = service_harness.ride_payloads(service_harness.load_rides("2022-02").head(records))
    current = settings.load()
    writer = predlog.open_writer(current.predlog_uri, current.predlog_spool_dir)
    batch: list[dict] = []
    for i in range(records):
        ride = rides[i % len(rides)]
        batch.append(predlog.prediction_record({**ride, "id": f"bench-{i}"}, 12.5, "taxi_duration_deployed:bench"))
        if i % 4 == 0:
            batch.append(predlog.feedback_record(f"bench-{i}", 11.0))
        if len(batch) >= 10_000:
            writer.append(batch)
            batch = []
    writer.append(batch)
    writer.close()

    resources = platform_resources()
    started = time.perf_counter()
    stored = len(resources["prediction_log"].reader().read_day(day))
    read_seconds = time.perf_counter() - started
    timings, cpu = [], []
    with dg.instance_for_test() as instance:
        for _ in range(repeat):
            started, cpu_started = time.perf_counter(), time.process_time()
            result = dg.materialize([prediction_logs], partition_key=day, instance=instance, resources=resources)
            timings.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            assert result.success
    # The asset's own work without Dagster's run around it: staging the day and replacing it.
    with resources["warehouse"].get_connection() as conn:
        started = time.perf_counter()
        resources["prediction_log"].reader().stage_day(conn, day)
        rows = replace_partition(conn, "day", day, PREDICTION_LOG_DAY_SELECTS)["prediction_log"]
        body_seconds = time.perf_counter() - started
    assert rows == records, (rows, records)
    median = statistics.median(timings)
    print(f"ingest: {stored:,} store records ({records:,} predictions) of {day}")
    print(f"  for comparison, read_day in Python: {read_seconds:.2f} s = {stored / read_seconds:,.0f} records/s")
    print(f"  prediction_logs materialization: {', '.join(f'{t:.2f}' for t in timings)} s")
    print(f"  median {median:.2f} s = {records / median:,.0f} prediction rows/s ({stored / median:,.0f} records/s)")
    # Other work on the host stretches wall time; the CPU time of this process (all threads) does not.
    cpu_median = statistics.median(cpu)
    print(f"  stage + replace the day without Dagster: {body_seconds:.2f} s = {records / body_seconds:,.0f} rows/s")
    print(f"  CPU time median {cpu_median:.2f} s = {records / cpu_median:,.0f} prediction rows per CPU-second")


def deploy_model(instance: dg.DagsterInstance) -> None:
    from taxi_assets.defs.model.assets import deployed_model, duration_model
    from taxi_assets.defs.model.profile import reference_profile
    from taxi_assets.defs.trip_data.assets import trip_months

    resources = platform_resources()
    # 2021-02 too: a model is validated on the month after its training month, never on its own.
    for month in ("2021-01", "2021-02"):
        assert dg.materialize([trip_months], partition_key=month, instance=instance, resources=resources)
    assert dg.materialize([duration_model], partition_key="2021-01", instance=instance, resources=resources)
    assert dg.materialize([deployed_model, reference_profile], instance=instance, resources=resources)


def sensor_loop(instance: dg.DagsterInstance, stop: threading.Event, runs: list[float]) -> None:
    """Ticks like the daemon (every TICK_SECONDS) and runs what each tick requests."""
    from taxi_assets.definitions import defs
    from taxi_assets.defs.online_monitoring.sensors import prediction_log_sensor

    resources = platform_resources()
    job = defs().resolve_job_def("online_monitoring_job")
    cursor = None
    while not stop.is_set():
        tick_started = time.monotonic()
        context = dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            resources={name: resources[name] for name in ("prediction_log", "pushgateway")},
        )
        result = prediction_log_sensor(context)
        cursor = result.cursor
        for request in result.run_requests:
            started = time.monotonic()
            job.execute_in_process(partition_key=request.partition_key, instance=instance, tags=request.tags)
            runs.append(time.monotonic() - started)
        stop.wait(max(0.0, TICK_SECONDS - (time.monotonic() - tick_started)))


def bench_latency(folder: Path, trials: int) -> None:
    with start_pushgateway(folder) as gateway:
        os.environ["TAXI_PUSHGATEWAY_URL"] = gateway
        latencies, runs = measure_latency(folder, gateway, trials)
    print(
        f"latency: median {statistics.median(latencies):.1f} s, max {max(latencies):.1f} s over {trials} trials "
        f"(tick every {TICK_SECONDS} s, scrape every 15 s); ingest+drift run median {statistics.median(runs):.1f} s"
    )


def measure_latency(folder: Path, gateway: str, trials: int) -> tuple[list[float], list[float]]:
    rides = service_harness.ride_payloads(service_harness.load_rides("2022-02").sample(1000, random_state=5))
    stop, runs, latencies = threading.Event(), [], []
    with dg.instance_for_test() as instance:
        deploy_model(instance)
        port = free_port()
        service = service_harness.serve(folder / "bentoml", folder / "prediction_logs", port, folder / "bento.log")
        loop = threading.Thread(target=sensor_loop, args=(instance, stop, runs), daemon=True)
        try:
            with start_prometheus(
                folder / "prometheus",
                bento=f"127.0.0.1:{port}",
                pushgateway=gateway.removeprefix("http://"),
                scrape_interval="15s",
            ) as prometheus:
                loop.start()
                for trial in range(trials):
                    time.sleep(random.uniform(0, TICK_SECONDS))
                    batch = rides[trial * RIDES_PER_TRIAL : (trial + 1) * RIDES_PER_TRIAL]
                    sent = time.monotonic()
                    answer = requests.post(f"http://127.0.0.1:{port}/predict_batch", json={"rides": batch}, timeout=60)
                    answer.raise_for_status()
                    expected = str(min((trial + 1) * RIDES_PER_TRIAL, DEFAULT_WINDOW))
                    while True:
                        result = query(prometheus, f'taxi_online_window_rows{{window="last_{DEFAULT_WINDOW}"}}')
                        if result and result[0]["value"][1] == expected:
                            break
                        if time.monotonic() - sent > 300:
                            raise TimeoutError(f"trial {trial}: not visible in Prometheus after 300 s")
                        time.sleep(0.25)
                    latencies.append(time.monotonic() - sent)
                    print(f"  trial {trial + 1}: {latencies[-1]:.1f} s from served to visible in Prometheus")
        finally:
            stop.set()
            loop.join(timeout=120)
            service_harness.stop(service)
    return latencies, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_online_") as tmp:
        folder = Path(tmp)
        enter_platform_environment(folder)
        bench_ingest(args.records, args.repeat)
        if not args.skip_latency:
            enter_platform_environment(folder / "latency")
            bench_latency(folder / "latency", args.trials)


if __name__ == "__main__":
    main()
