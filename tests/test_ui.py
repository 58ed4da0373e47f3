"""The Dagster UI as a user opens it: a real dagster-webserver, pages rendered by headless Chromium."""

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from taxi_assets.assets.trips import raw_trips, trips
from taxi_assets.resources import build_resources

from tests.dagster_processes import running_webserver

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",
]


def render(url: str, profile: Path) -> str:
    """The page's DOM once its scripts have run and its GraphQL answers have arrived."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run `make setup`"
    page = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return page.stdout


@pytest.fixture
def webserver(instance: dg.DagsterInstance, platform_env: Path) -> Iterator[str]:
    with running_webserver(platform_env / "dagster_home", platform_env / "webserver.log") as url:
        yield url


def test_the_ui_shows_assets_their_descriptions_lineage_and_metadata(webserver, instance, platform_env):
    dg.materialize([raw_trips, trips], partition_key="2021-01", instance=instance, resources=build_resources())

    catalog = render(f"{webserver}/assets", platform_env / "chromium-catalog")
    for asset in ("raw_trips", "trips", "duration_model", "deployed_model", "batch_predictions", "monitoring_report"):
        assert asset in catalog

    page = render(f"{webserver}/assets/trips", platform_env / "chromium-trips")
    assert "The modelling table for one month" in page  # the docstring, as the asset's description
    assert "73,908" in page or "73908" in page  # rows of 2021-01, from the materialization metadata
    assert "raw_trips" in page  # its upstream asset
