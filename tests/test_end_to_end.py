"""The whole online path with real processes on loopback: `bentoml serve` answering real 2022-02 rides with a
model trained and deployed by the Dagster assets, the prediction-log sensor, the ingest and drift runs it requests,
a Pushgateway, and Prometheus running the repo's config, rules and every Grafana panel query."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest
import requests

from taxi_assets import settings, supervise
from taxi_assets.definitions import defs
from taxi_assets.defs.automation import automation_retry_sensor
from taxi_assets.defs.batch_monitoring.assets import batch_drift, batch_predictions
from taxi_assets.defs.model.assets import deployed_model, duration_model, model_challenge
from taxi_assets.defs.model.profile import reference_profile
from taxi_assets.defs.online_monitoring.sensors import prediction_log_sensor
from taxi_assets.defs.trip_data.assets import taxi_zones, trip_months
from tests.support import service_harness
from tests.support.platform import REPO_ROOT, free_port, platform_resources
from tests.support.prometheus_harness import dashboard_queries, query, start_prometheus

# BentoML fixes its model store once per process: the test stores models in a process (and store) of its own.
pytestmark = [pytest.mark.e2e, pytest.mark.forked]

RIDES = 2000

# Kills the ingest process between its two table replacements, inside the open transaction.
CRASHING_INGEST = textwrap.dedent(
    """
    import os, sys
    import dagster as dg
    from taxi_assets.core import warehouse
    from taxi_assets.defs.online_monitoring.assets import prediction_logs
    from tests.support.platform import platform_resources

    original = warehouse.replace_rows

    def replace_then_die(conn, table, *args):
        if table == "prediction_feedback":
            os._exit(9)
        return original(conn, table, *args)

    warehouse.replace_rows = replace_then_die
    dg.materialize([prediction_logs], partition_key=sys.argv[1], resources=platform_resources())
    """
)


def scraped_value(prometheus: str, expr: str, expected: str, timeout: float = 10.0) -> bool:
    """Whether `expr` reads `expected` in Prometheus within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = query(prometheus, expr)
        if result and result[0]["value"][1] == expected:
            return True
        time.sleep(0.5)
    return False


def replay(url: str, rides: list[dict], durations: list[float]) -> None:
    """Predict the rides in batches, then send the actual duration of each, one request per ride."""
    with requests.Session() as session:
        for start in range(0, len(rides), 500):
            answer = session.post(f"{url}/predict_batch", json={"rides": rides[start : start + 500]}, timeout=60)
            assert answer.status_code == 200, answer.text
        for ride, duration in zip(rides, durations, strict=True):
            answer = session.post(f"{url}/feedback", json={"id": ride["id"], "actual_duration": duration}, timeout=30)
            assert answer.json()["recorded"] is True


def run_sensor(instance: dg.DagsterInstance, job: dg.JobDefinition, cursor: str | None) -> tuple[str, int]:
    """One sensor tick, then every run it requested, executed as the daemon would launch it; the new cursor."""
    resources = platform_resources()
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={name: resources[name] for name in ("prediction_log", "pushgateway")},
    )
    result = prediction_log_sensor(context)
    for request in result.run_requests:
        tags = {**request.tags, "dagster/run_key": request.run_key}
        assert job.execute_in_process(partition_key=request.partition_key, instance=instance, tags=tags).success
    return result.cursor, len(result.run_requests)


def counts() -> tuple[int, int, int]:
    with platform_resources()["warehouse"].get_connection() as conn:
        return conn.execute(
            "SELECT count(*), count(actual_duration), (SELECT count(*) FROM prediction_feedback) "
            "FROM online_predictions"
        ).fetchone()


def test_served_rides_reach_duckdb_and_prometheus(
    platform_env: Path, instance: dg.DagsterInstance, pushgateway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    monkeypatch.setenv("TAXI_PUSHGATEWAY_URL", pushgateway)
    resources = platform_resources()
    assert dg.materialize([taxi_zones], instance=instance, resources=resources)
    for month in ("2021-01", "2021-02", "2022-02"):  # trained on 2021-01, validated on the month after
        assert dg.materialize([trip_months], partition_key=month, instance=instance, resources=resources)
    assert dg.materialize([duration_model], partition_key="2021-01", instance=instance, resources=resources)
    assert dg.materialize([deployed_model, reference_profile], instance=instance, resources=resources)
    # The batch dashboard's figures: one month scored and pushed, and the deployed model challenged on its
    # validation month (the challenger of 2021-02 is the 2021-01 model itself: gain 0).
    assert dg.materialize(
        [batch_predictions, batch_drift], partition_key="2022-02", instance=instance, resources=resources
    )
    assert dg.materialize([model_challenge], partition_key="2021-02", instance=instance, resources=resources)
    # The month before arrives late: re-running the month adds its month-over-month figures (their panels).
    assert dg.materialize([trip_months], partition_key="2022-01", instance=instance, resources=resources)
    assert dg.materialize([batch_drift], partition_key="2022-02", instance=instance, resources=resources)
    job = defs().resolve_job_def("online_monitoring_job")

    # Consecutive rides (from 15 February on), as live traffic is: the window's RMSE alarm is then the CUSUM of its
    # feedback, whose series the dashboards show too.
    month = service_harness.load_rides("2022-02").sort_values("pickup_datetime", kind="stable")
    frame = month[month.pickup_datetime >= "2022-02-15"].head(RIDES).reset_index(drop=True)
    rides = [{**ride, "id": f"e2e-{i}"} for i, ride in enumerate(service_harness.ride_payloads(frame))]
    durations = frame["duration"].round(6).tolist()
    port = free_port()
    service = service_harness.serve(
        platform_env / "bentoml", platform_env / "prediction_logs", port, platform_env / "bento.log"
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with start_prometheus(
            platform_env / "prometheus", bento=f"127.0.0.1:{port}", pushgateway=pushgateway.removeprefix("http://")
        ) as prometheus:
            half = RIDES // 2
            replay(url, rides[:half], durations[:half])
            cursor, runs = run_sensor(instance, job, None)
            assert runs >= 1 and counts() == (half, half, half)

            # The second half, then an ingest killed between its two table replacements: the first half stays.
            replay(url, rides[half:], durations[half:])
            day = max(p.name for p in (platform_env / "prediction_logs").iterdir())
            crashed = subprocess.run(
                [sys.executable, "-c", CRASHING_INGEST, day], cwd=REPO_ROOT, env=os.environ.copy(), timeout=120
            )
            assert crashed.returncode == 9
            assert counts() == (half, half, half)

            cursor, runs = run_sensor(instance, job, cursor)
            assert runs >= 1 and counts() == (RIDES, RIDES, RIDES)
            # A second tick finds nothing new and reports an empty backlog.
            cursor, runs = run_sensor(instance, job, cursor)
            assert runs == 0

            with platform_resources()["warehouse"].get_connection() as conn:
                stored = dict(conn.execute("SELECT id, actual_duration FROM online_predictions").fetchall())
            assert stored == {ride["id"]: pytest.approx(d) for ride, d in zip(rides, durations, strict=True)}

            # The automation retry sensor's tick: nothing failed (the automation panel's figures); the supervisor's
            # look at the service (the platform processes panel).
            automation_retry_sensor(
                dg.build_sensor_context(
                    instance=instance, resources={"pushgateway": platform_resources()["pushgateway"]}
                )
            )
            supervisor = supervise.Supervisor(settings.load(), check_seconds=1.0)
            supervisor.watched["bento"] = supervise.Watched("bento", pid=service.pid)
            supervisor.push()
            # Every panel of every dashboard shows data once Prometheus has scraped twice.
            empty = dashboard_queries(rate_interval="5s")
            deadline = time.monotonic() + 30
            while empty and time.monotonic() < deadline:
                assert requests.post(f"{url}/predict", json=rides[0], timeout=10).status_code == 200
                time.sleep(0.5)
                empty = [panel_query for panel_query in empty if not query(prometheus, panel_query.expr)]
            assert not empty, f"panels without data: {[(q.dashboard, q.panel, q.expr) for q in empty]}"
            # The last tick's push reaches Prometheus with its next scrape (every second here).
            assert scraped_value(prometheus, 'taxi_online_window_rows{window="last_5000"}', str(RIDES))
            assert scraped_value(prometheus, "taxi_ingest_records_waiting", "0")
            assert query(prometheus, 'taxi_online_rmse{window="last_5000"}')
    finally:
        service_harness.stop(service)
    assert time.monotonic() - started < 180
