"""A tool that waits names what it waits for and why it is not done, and stops as soon as something it needs has
failed for good: `make demo`'s wait for the automation, against a real webserver over a real instance."""

import argparse
import time
from pathlib import Path

import dagster as dg
import pytest

from taxi_assets.cli import ToolError
from taxi_assets.cli.dagster_client import DagsterClient
from taxi_assets.cli.demo import Demo
from taxi_assets.defs import automation
from taxi_assets.defs.trip_data.assets import taxi_zones
from tests.support.dagster_processes import prepare_dagster_home, running_webserver
from tests.support.platform import platform_resources

pytestmark = pytest.mark.e2e


def failed_zone_run(instance: dg.DagsterInstance, retries: int) -> dg.DagsterRun:
    """taxi_zones failed (no zone lookup) in the automation's run, or in its retry number `retries`."""
    tags = {"dagster/sensor_name": automation.automation_condition_sensor.name}
    if retries:
        tags = {"dagster/sensor_name": automation.RETRY_SENSOR, automation.RETRY_NUMBER_TAG: str(retries)}
    result = dg.materialize(
        [taxi_zones], instance=instance, resources=platform_resources(), tags=tags, raise_on_error=False
    )
    assert not result.success
    return result.dagster_run


def test_the_demo_names_what_it_waits_for_and_stops_once_a_need_failed_for_good(
    platform_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAXI_ZONE_LOOKUP_URL", str(platform_env / "nowhere" / "taxi_zone_lookup.csv"))
    dagster_home = platform_env / "dagster_home"
    prepare_dagster_home(dagster_home)
    needs = [("taxi_zones", None), ("monitoring_report", "2021-01")]
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        running_webserver(dagster_home, platform_env / "webserver.log") as url,
    ):
        demo = Demo(argparse.Namespace())
        demo.dagster = DagsterClient(url)
        # A retry is still to come: the wait goes on, and its timeout says what it waited for (what is pending,
        # as the wait reads it then) and why.
        retrying = failed_zone_run(instance, retries=1)
        with pytest.raises(ToolError) as waited:
            pending = "the automation (monthly reports of 2021-01)"
            demo.wait(lambda: pending, lambda: False, timeout=3, every=0.5, needs=lambda: needs)
        message = str(waited.value)
        assert message.startswith("the automation (monthly reports of 2021-01): not done after 3 s; waiting "), message
        assert f"taxi_zones: last run {retrying.run_id} failure (retry 2 of 3 to come): taxi_zones: " in message
        assert "zone lookup: no file at" in message, message
        assert "monitoring_report[2021-01]: no run yet" in message, message

        # Its last retry failed: the wait stops at once (not at its timeout), naming the asset, run and error.
        given_up = failed_zone_run(instance, retries=len(automation.RETRY_DELAYS_SECONDS))
        started = time.monotonic()
        with pytest.raises(ToolError) as stopped:
            demo.wait("the automation", lambda: False, timeout=600, every=0.5, needs=lambda: needs)
        assert time.monotonic() - started < 30
        message = str(stopped.value)
        assert "a step it needs failed for good" in message, message
        assert f"taxi_zones: last run {given_up.run_id} failure (no retry left): taxi_zones: " in message, message
        assert "zone lookup: no file at" in message and "monitoring_report" not in message, message
