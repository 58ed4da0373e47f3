"""The platform runs itself: a month published at the trip-data source is loaded by the new-month sensor and
flows through scoring, drift and the report by the assets' automation conditions, with a real daemon."""

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests

from taxi_assets import settings
from taxi_assets.core.tlc import published_version
from taxi_assets.defs import automation
from taxi_assets.defs.model.assets import deployed_model, duration_model
from taxi_assets.defs.resources import Pushgateway
from taxi_assets.defs.trip_data.assets import raw_trips, taxi_zones, trip_months, trips
from taxi_assets.defs.trip_data.resources import TripDataSource
from taxi_assets.defs.trip_data.sensors import new_month_sensor
from tests.support.dagster_processes import running_daemon, step_errors
from tests.support.platform import REPO_ROOT, deploy_seed_model, platform_resources


def tick(instance: dg.DagsterInstance, source: str) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, resources={"trip_data": TripDataSource(url_template=source, cache_dir="unused")}
    )
    return new_month_sensor(context)


def mark_loaded(instance: dg.DagsterInstance, *months: str) -> None:
    for month in months:
        instance.report_runless_asset_event(dg.AssetMaterialization(trips, partition=month))


def requested(result: dg.SensorResult) -> list[tuple[str, str]]:
    return [(request.partition_key, request.run_key) for request in result.run_requests or []]


class Ticks:
    """The automation condition sensor's ticks, evaluated by Dagster over `assets` in an ephemeral instance, and
    runs with their asset selection recorded as the UI's, the jobs' and the automation's runs have (the run of
    `dg.materialize` has none, so Dagster could not tell that it also updated an input)."""

    def __init__(self, *assets: dg.AssetsDefinition) -> None:
        self.defs = dg.Definitions(assets=list(assets))
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor = None

    def materialize(self, *names: str, partition: str | None = None) -> None:
        job = self.defs.resolve_implicit_global_asset_job_def()
        selection = [dg.AssetKey(name) for name in names]
        run = job.execute_in_process(instance=self.instance, asset_selection=selection, partition_key=partition)
        assert run.success

    def requested(self) -> int:
        """Asset partitions the next tick requests."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return result.total_requested


@pytest.mark.unit
def test_an_input_written_by_a_job_around_the_run_it_requested_is_followed_by_another_run() -> None:
    """`missing_or_deps_updated`, evaluated by Dagster, on an input of `WRITTEN_BY_JOBS`: one updated just after
    the partition's run ended (both first seen on one tick), or after its request, asks for another run
    (`eager()` drops both: the months dashboard never showed the challenge that landed seconds after it); nothing
    new asks for nothing."""

    @dg.asset(name="model_challenge")
    def challenge() -> None: ...

    @dg.asset(name="monitoring_dashboard", deps=[challenge], automation_condition=automation.MISSING_OR_DEPS_UPDATED)
    def dashboard() -> None: ...

    ticks = Ticks(challenge, dashboard)
    assert ticks.requested() == 0  # its input is missing
    ticks.materialize("model_challenge")
    assert ticks.requested() == 1  # missing
    ticks.materialize("monitoring_dashboard")
    assert ticks.requested() == 0
    # the requested run ends, then the input is updated again before the next tick
    ticks.materialize("model_challenge")
    assert ticks.requested() == 1
    ticks.materialize("monitoring_dashboard")
    ticks.materialize("model_challenge")
    assert ticks.requested() == 1
    # the input is updated again after the request, before the run read it
    ticks.materialize("model_challenge")
    assert ticks.requested() == 1
    ticks.materialize("monitoring_dashboard")
    assert ticks.requested() == 0
    ticks.materialize("monitoring_dashboard")  # by hand
    assert ticks.requested() == 0


@pytest.mark.unit
def test_months_whose_chains_ran_side_by_side_ask_for_nothing_more() -> None:
    """An input the automation writes, updated in the partition's own run, was handled by that run, also once
    another month's run has updated the input since: Dagster's `executed_with_root_target()` then no longer
    recognises the run, and a reset by the request alone re-ran the month (seen in `make demo`)."""
    months = dg.StaticPartitionsDefinition(["2023-02", "2023-03"])

    @dg.asset(name="drift_metrics", partitions_def=months)
    def drift() -> None: ...

    @dg.asset(
        name="monitoring_report",
        partitions_def=months,
        deps=[drift],
        automation_condition=automation.MISSING_OR_DEPS_UPDATED,
    )
    def report() -> None: ...

    ticks = Ticks(drift, report)
    assert ticks.requested() == 0  # their inputs are missing
    for month in ("2023-02", "2023-03"):
        ticks.materialize("drift_metrics", "monitoring_report", partition=month)
    assert ticks.requested() == 0
    ticks.materialize("drift_metrics", partition="2023-02")
    assert ticks.requested() == 1


@pytest.mark.integration
def test_the_month_after_the_newest_is_requested_once_it_is_published(
    instance: dg.DagsterInstance, tmp_path: Path, tlc_dir: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    # An empty warehouse: nothing is checked, nothing downloaded.
    assert requested(tick(instance, str(source))) == []

    mark_loaded(instance, "2021-01", "2022-01")
    assert requested(tick(instance, str(source))) == []  # 2022-02 is not published yet
    (source / "green_tripdata_2021-02.parquet").symlink_to(tlc_dir / "green_tripdata_2021-02.parquet")
    assert requested(tick(instance, str(source))) == []  # an older month appearing is no new month
    shutil.copy(tlc_dir / "green_tripdata_2022-02.parquet", source / "green_tripdata_2022-02.parquet")
    ((month, run_key),) = requested(tick(instance, str(source)))
    assert month == "2022-02" and run_key.startswith("2022-02@")
    # Until it is loaded the same key comes back (Dagster skips a key it has seen); a changed file gets a new one.
    assert requested(tick(instance, str(source))) == [(month, run_key)]
    os.utime(source / "green_tripdata_2022-02.parquet", ns=(0, 10**18))
    ((_, changed_key),) = requested(tick(instance, str(source)))
    assert changed_key != run_key
    # Loaded: the sensor moves on to 2022-03, and never asks for 2022-02 again.
    mark_loaded(instance, "2022-02")
    assert requested(tick(instance, str(source))) == []
    shutil.copy(tlc_dir / "green_tripdata_2022-03.parquet", source / "green_tripdata_2022-03.parquet")
    assert [m for m, _ in requested(tick(instance, str(source)))] == ["2022-03"]


class _TlcLike(http.server.SimpleHTTPRequestHandler):
    """Files of a folder over HTTP, and 403 for a missing one, as TLC's CloudFront answers."""

    def send_error(self, code, message=None, explain=None):
        super().send_error(403 if code == 404 else code, message, explain)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_source(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "published"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *args: _TlcLike(*args, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/green_tripdata_{{month}}.parquet", folder
    server.shutdown()


@pytest.mark.integration
def test_a_remote_source_is_checked_with_a_head_request(
    instance: dg.DagsterInstance, http_source: tuple[str, Path], tlc_dir: Path
) -> None:
    template, folder = http_source
    assert published_version(template.format(month="2021-02")) is None  # TLC's 403
    mark_loaded(instance, "2021-01")
    assert requested(tick(instance, template)) == []
    shutil.copy(tlc_dir / "green_tripdata_2021-02.parquet", folder / "green_tripdata_2021-02.parquet")
    ((month, run_key),) = requested(tick(instance, template))
    size = (folder / "green_tripdata_2021-02.parquet").stat().st_size
    assert month == "2021-02" and run_key.startswith(f"2021-02@{size}-")
    # A source that cannot be reached is a skipped tick with a warning, not a failed sensor.
    unreachable = tick(instance, "http://127.0.0.1:9/green_tripdata_{month}.parquet")
    assert requested(unreachable) == [] and "unreachable" in unreachable.skip_reason.skip_message


def wait_for(instance: dg.DagsterInstance, key: dg.AssetKey, month: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if month in instance.get_materialized_partitions(key):
            return
        failed = [run for run in instance.get_runs() if run.status == dg.DagsterRunStatus.FAILURE]
        assert not failed, {run.run_id: step_errors(instance, run) for run in failed}
        time.sleep(1)
    runs = [(run.tags.get("dagster/partition"), run.asset_selection, run.status.value) for run in instance.get_runs()]
    raise TimeoutError(f"{key.to_user_string()}[{month}] not materialized within {timeout} s; runs: {runs}")


# BentoML fixes its model store once per process: the test deploys a model in a process of its own.
@pytest.mark.e2e
@pytest.mark.forked
@pytest.mark.timeout(900)
def test_a_published_month_flows_to_the_monitoring_report_with_no_manual_launch(
    platform_env: Path, tlc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    source = platform_env / "source"
    source.mkdir()
    for name in ("green_tripdata_2021-01.parquet", "green_tripdata_2021-02.parquet", "taxi_zone_lookup.csv"):
        (source / name).symlink_to(tlc_dir / name)
    monkeypatch.setenv("TAXI_TRIP_DATA_URL", str(source))
    monkeypatch.setenv("TAXI_AUTOMATION", "on")
    # The retraining loop challenges the deployed model on each new month but waits for approval: a promotion
    # would re-score every month (tested by the model's own tests), not what this test counts.
    monkeypatch.setenv("TAXI_PROMOTION", "manual")
    monkeypatch.setenv("TAXI_NEW_MONTH_CHECK_SECONDS", "2")
    monkeypatch.setenv("TAXI_AUTOMATION_CHECK_SECONDS", "2")
    settings.current.cache_clear()
    dagster_home = platform_env / "dagster_home"
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        # What a user has done by hand before: two months loaded, a model trained on the first (validated on the
        # second) and deployed.
        resources = platform_resources()
        assert dg.materialize([taxi_zones], instance=instance, resources=resources).success
        for month in ("2021-01", "2021-02"):
            assert dg.materialize([trip_months], partition_key=month, instance=instance, resources=resources)
        assert dg.materialize([duration_model], partition_key="2021-01", instance=instance, resources=resources)
        assert dg.materialize([deployed_model], instance=instance, resources=resources).success
        manual = {run.run_id for run in instance.get_runs()}

        with running_daemon(dagster_home, platform_env / "daemon.log"):
            # The months already loaded are scored and reported by themselves, then TLC "publishes" 2021-03, which
            # is loaded, scored, reported, and the deployed model challenged on it (the retraining loop).
            for month in ("2021-01", "2021-02"):
                wait_for(instance, dg.AssetKey("monitoring_report"), month, timeout=240)
            (source / "green_tripdata_2021-03.parquet").symlink_to(tlc_dir / "green_tripdata_2021-03.parquet")
            wait_for(instance, dg.AssetKey("monitoring_report"), "2021-03", timeout=240)
            wait_for(instance, dg.AssetKey("model_challenge"), "2021-03", timeout=240)
            time.sleep(5)  # a few more sensor ticks: nothing is requested twice

        runs = [run for run in instance.get_runs() if run.run_id not in manual]
        by_sensor = {(run.tags.get("dagster/sensor_name"), run.tags.get("dagster/partition")): run for run in runs}
        assert all(run.tags.get("dagster/sensor_name") for run in runs), "every run was started by a sensor"
        loads = [run for run in runs if run.tags.get("dagster/sensor_name") == "new_month_sensor"]
        assert [run.tags["dagster/partition"] for run in loads] == ["2021-03"]
        assert ("default_automation_condition_sensor", "2021-03") in by_sensor
        # 2021-01 and 2021-02 were already loaded: neither the sensor nor the automation loaded them again.
        assert instance.get_materialized_partitions(raw_trips) == {"2021-01", "2021-02", "2021-03"}
        reloaded = [
            run
            for run in runs
            if run.tags.get("dagster/partition") in ("2021-01", "2021-02") and raw_trips in (run.asset_selection or ())
        ]
        assert not reloaded
        # Each partition was computed exactly once: no run was requested twice. The new month's `trips` came from
        # the automation condition, not from the new-month run (one requester per asset: trip_data/sensors.py).
        materialized = [
            (record.asset_key.to_user_string(), record.partition_key)
            for asset in ("raw_trips", "trips", "batch_predictions", "drift_metrics", "monitoring_report")
            for record in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
        ]
        once = sorted(
            (asset, month)
            for asset in ("raw_trips", "trips", "batch_predictions", "drift_metrics", "monitoring_report")
            for month in ("2021-01", "2021-02", "2021-03")
        )
        assert sorted(materialized) == once, sorted(materialized)
        assert loads[0].asset_selection == {raw_trips}
        (new_trips,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=trips, asset_partitions=["2021-03"]), limit=1
        ).records
        requester = instance.get_run_by_id(new_trips.run_id).tags["dagster/sensor_name"]
        assert requester == "default_automation_condition_sensor"
    assert time.monotonic() - started < 480


LOADED = """
import json
from taxi_assets.definitions import defs
definitions = defs()
statuses = {s.name: s.default_status.value for s in definitions.sensors if s.name != "prediction_log_sensor"}
print(json.dumps({"statuses": statuses, "policy": definitions.resources["policy"].model_dump()}))
"""


# From the outside, as a deployment sets them: the variables reach the sensors' default status (fixed when Dagster
# loads the definitions, hence a process of its own) and the policy resource the runs and sensors use.
@pytest.mark.integration
@pytest.mark.parametrize(
    ("value", "status", "promotion", "alert_runs"),
    [("on", "RUNNING", "auto", "on"), ("off", "STOPPED", "manual", "off")],
)
def test_taxi_automation_sets_how_both_automation_sensors_start_and_the_policy_reaches_its_resource(
    value: str, status: str, promotion: str, alert_runs: str
) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED],
        env={
            **os.environ,
            "TAXI_AUTOMATION": value,
            "TAXI_PROMOTION": promotion,
            "TAXI_PROMOTION_MIN_GAIN": "0.125",
            "TAXI_DEPLOYED_MONTH": "2022-01",
            "TAXI_ALERT_RUNS": alert_runs,
        },
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    shown = json.loads(loaded.stdout)
    assert shown["statuses"] == {
        # It records alarms on their assets whatever the automation; its runs follow TAXI_ALERT_RUNS.
        "alerts_sensor": "RUNNING",
        "automation_retry_sensor": status,
        "default_automation_condition_sensor": status,
        "model_promotion_sensor": status,
        "new_month_sensor": status,
    }
    assert shown["policy"] == {
        "promotion": promotion,
        "promotion_min_gain": 0.125,
        "deployed_month": "2022-01",
        "alert_runs": alert_runs,
    }


@pytest.mark.unit
def test_a_misspelt_automation_switch_is_refused() -> None:
    with pytest.raises(ValueError, match="TAXI_AUTOMATION must be on or off"):
        assert settings.load({"TAXI_AUTOMATION": "yes"}).automation_on


def pushed(pushgateway: str, job: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{pushgateway}/metrics", timeout=5).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("job") == job and sample.name.startswith("taxi_")
    }


def automated_zone_run(instance: dg.DagsterInstance, tags: dict[str, str] | None = None) -> dg.DagsterRun:
    """taxi_zones materialized as the automation condition sensor's run would be (or its retry, by `tags`)."""
    result = dg.materialize(
        [taxi_zones],
        instance=instance,
        resources=platform_resources(),
        tags={"dagster/sensor_name": "default_automation_condition_sensor", **(tags or {})},
        raise_on_error=False,
    )
    return result.dagster_run


@pytest.mark.integration
def test_a_failed_automated_run_is_retried_with_backoff_then_given_up_with_an_alert_metric(
    instance: dg.DagsterInstance, platform_env: Path, tlc_dir: Path, pushgateway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAXI_ZONE_LOOKUP_URL", str(platform_env / "missing" / "taxi_zone_lookup.csv"))
    resources = {"pushgateway": Pushgateway(url=pushgateway)}
    failed = automated_zone_run(instance)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    ended = instance.get_run_record_by_id(failed.run_id).end_time
    (failure,) = automation.failed_automations(instance, time.time())
    assert failure.assets == (taxi_zones.key,) and failure.retries == 0
    assert failure.due == pytest.approx(ended + automation.RETRY_DELAYS_SECONDS[0])
    # Not before its delay: the tick says when, and counts it as retrying.
    result = automation.automation_retry_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert not result.run_requests and "retry 1 in" in result.skip_reason.skip_message
    assert "taxi_zones" in result.skip_reason.skip_message
    assert pushed(pushgateway, "taxi_automation") == {
        "taxi_automation_failed_for_good": 0.0,
        "taxi_automation_retrying": 1.0,
    }

    # Each retry that fails waits longer, up to the last; then the partition is failed for good.
    for number, delay in enumerate(automation.RETRY_DELAYS_SECONDS, start=1):
        (failure,) = automation.failed_automations(instance, time.time())
        assert automation.retry_requests([failure], failure.due - 1) == []
        (request,) = automation.retry_requests([failure], failure.due)
        assert request.asset_selection == [taxi_zones.key] and request.tags == {
            automation.RETRY_NUMBER_TAG: str(number),
            automation.RETRY_OF_TAG: failed.run_id,
        }
        retried = automated_zone_run(instance, {"dagster/sensor_name": automation.RETRY_SENSOR, **request.tags})
        ended = instance.get_run_record_by_id(retried.run_id).end_time
        if number < len(automation.RETRY_DELAYS_SECONDS):
            (failure,) = automation.failed_automations(instance, time.time())
            assert failure.due == pytest.approx(ended + automation.RETRY_DELAYS_SECONDS[number])
            assert automation.RETRY_DELAYS_SECONDS[number] > delay
    (given_up,) = automation.failed_automations(instance, time.time())
    assert given_up.due is None and automation.retry_requests([given_up], time.time() + 10**6) == []
    result = automation.automation_retry_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert "failed for good after 3 retries: taxi_zones" in result.skip_reason.skip_message
    assert pushed(pushgateway, "taxi_automation")["taxi_automation_failed_for_good"] == 1.0

    # Fixed by hand: nothing failed any more, and the metric says so.
    monkeypatch.setenv("TAXI_ZONE_LOOKUP_URL", str(tlc_dir / "taxi_zone_lookup.csv"))
    assert dg.materialize([taxi_zones], instance=instance, resources=platform_resources()).success
    assert automation.failed_automations(instance, time.time()) == []
    automation.automation_retry_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert pushed(pushgateway, "taxi_automation") == {
        "taxi_automation_failed_for_good": 0.0,
        "taxi_automation_retrying": 0.0,
    }


@pytest.mark.e2e
@pytest.mark.forked
@pytest.mark.timeout(900)
def test_a_zone_lookup_that_failed_once_is_retried_and_every_months_chain_completes_without_a_click(
    platform_env: Path, tlc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    source = platform_env / "source"
    source.mkdir()
    for name in ("green_tripdata_2021-01.parquet", "green_tripdata_2021-02.parquet"):
        (source / name).symlink_to(tlc_dir / name)
    # No zone lookup next to the trip files yet: the download "fails" (as TLC's did once).
    monkeypatch.setenv("TAXI_TRIP_DATA_URL", str(source))
    monkeypatch.setenv("TAXI_AUTOMATION", "on")
    monkeypatch.setenv("TAXI_PROMOTION", "manual")
    monkeypatch.setenv("TAXI_AUTOMATION_CHECK_SECONDS", "2")
    settings.current.cache_clear()
    dagster_home = platform_env / "dagster_home"
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    months = ("2021-01", "2021-02")

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        # Loaded, trained and deployed by hand (the quick seed model), as a user does first.
        deploy_seed_model(instance, platform_resources(), months[0])
        manual = {run.run_id for run in instance.get_runs()}

        with running_daemon(dagster_home, platform_env / "daemon.log"):

            def zone_runs() -> list[dg.DagsterRun]:
                return [run for run in instance.get_runs() if taxi_zones.key in (run.asset_selection or ())]

            deadline = time.monotonic() + 180
            while not any(run.status == dg.DagsterRunStatus.FAILURE for run in zone_runs()):
                assert time.monotonic() < deadline, "the automation never tried taxi_zones"
                time.sleep(1)
            (source / "taxi_zone_lookup.csv").symlink_to(tlc_dir / "taxi_zone_lookup.csv")
            fixed_at = time.monotonic()
            deadline = time.monotonic() + 300
            chain = ("drift_metrics", "monitoring_report", "monitoring_dashboard")
            while not all(set(months) <= instance.get_materialized_partitions(dg.AssetKey(asset)) for asset in chain):
                assert time.monotonic() < deadline, {
                    asset: instance.get_materialized_partitions(dg.AssetKey(asset)) for asset in chain
                }
                time.sleep(1)
            recovered = time.monotonic() - fixed_at
            print(f"\nzone lookup back -> every month's chain complete {recovered:.1f} s later")

        runs = [run for run in instance.get_runs() if run.run_id not in manual]
        assert all(run.tags.get("dagster/sensor_name") for run in runs), "every run was started by a sensor"
        failed, retried = sorted(zone_runs(), key=lambda run: run.tags.get(automation.RETRY_NUMBER_TAG, "0"))
        assert failed.status == dg.DagsterRunStatus.FAILURE and "dagster/sensor_name" in failed.tags
        assert retried.status == dg.DagsterRunStatus.SUCCESS
        assert retried.tags[automation.RETRY_NUMBER_TAG] == "1"
        assert retried.tags[automation.RETRY_OF_TAG] == failed.run_id
        assert retried.tags["dagster/sensor_name"] == automation.RETRY_SENSOR
    assert time.monotonic() - started < 420
