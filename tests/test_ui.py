"""The Dagster UI as a user opens it: a real dagster-webserver, pages rendered by headless Chromium."""

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from taxi_assets.cli.dagster_client import DagsterClient
from taxi_assets.defs.trip_data.assets import trip_months
from tests.support import chromium
from tests.support.dagster_processes import running_webserver
from tests.support.platform import platform_resources

pytestmark = pytest.mark.e2e


@pytest.fixture
def webserver(instance: dg.DagsterInstance, platform_env: Path) -> Iterator[str]:
    with running_webserver(platform_env / "dagster_home", platform_env / "webserver.log") as url:
        yield url


def test_the_ui_shows_assets_their_descriptions_lineage_and_metadata(webserver, instance, platform_env):
    dg.materialize([trip_months], partition_key="2021-01", instance=instance, resources=platform_resources())

    catalog = chromium.dom(f"{webserver}/assets", platform_env / "chromium-catalog")
    for asset in ("raw_trips", "trips", "duration_model", "deployed_model", "batch_predictions", "monitoring_report"):
        assert asset in catalog

    page = chromium.dom(f"{webserver}/assets/trips", platform_env / "chromium-trips")
    assert "The modelling table for one month" in page  # the docstring, as the asset's description
    assert "73,908" in page or "73908" in page  # rows of 2021-01, from the materialization metadata
    assert "raw_trips" in page  # its upstream asset


RESOURCE_DETAILS = """
query($selector: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $selector) {
    __typename
    ... on ResourceDetailsList {
      results { name description configuredValues { key value type } }
    }
  }
}
"""


def test_resource_details_name_deployment_variables_and_never_show_their_secrets(
    platform_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "S3cret-Pw-7421"
    monkeypatch.setenv("TAXI_PREDLOG_URI", f"mongodb://monitor:{secret}@127.0.0.1:9/taxi")
    monkeypatch.setenv("TAXI_PUSHGATEWAY_URL", f"http://push:{secret}@127.0.0.1:9")
    with running_webserver(platform_env / "dagster_home", platform_env / "webserver.log") as url:
        selector = {"repositoryLocationName": "taxi_assets", "repositoryName": "__repository__"}
        answer = DagsterClient(url).query(RESOURCE_DETAILS, {"selector": selector})
    details = answer["allTopLevelResourceDetailsOrError"]
    assert details["__typename"] == "ResourceDetailsList", details
    values = {
        (resource["name"], value["key"]): (value["type"], value["value"])
        for resource in details["results"]
        for value in resource["configuredValues"]
    }
    assert values[("prediction_log", "uri")] == ("ENV_VAR", "TAXI_PREDLOG_URI")
    assert values[("pushgateway", "url")] == ("ENV_VAR", "TAXI_PUSHGATEWAY_URL")
    assert secret not in json.dumps(answer)
