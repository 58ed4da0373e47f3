"""`taxi-backfill`: launches a backfill through a real webserver, follows every partition as a real
daemon runs it, and names the failed partitions with their errors."""

import re
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from taxi_assets.cli import ToolError
from taxi_assets.cli.backfill import FINISHED_BACKFILL, Progress, partitions
from taxi_assets.cli.dagster_client import DagsterClient
from tests.support import chromium
from tests.support.dagster_processes import running_daemon, running_webserver
from tests.support.platform import MANIFEST_ROWS, REPO_ROOT, imported_modules

TAXI_BACKFILL = REPO_ROOT / ".venv" / "bin" / "taxi-backfill"


@pytest.mark.e2e
def test_a_backfill_is_followed_to_the_end_and_failed_months_are_named(platform_env: Path) -> None:
    dagster_home = platform_env / "dagster_home"
    with (
        running_webserver(dagster_home, platform_env / "webserver.log") as webserver,
        running_daemon(dagster_home, platform_env / "daemon.log"),
    ):
        done = subprocess.run(
            [str(TAXI_BACKFILL), "trip_data_job", "2021-02..2021-04", "--url", webserver] + ["--poll", "0.5"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        backfill_id = re.search(r"^backfill (\w+):", done.stdout, re.MULTILINE).group(1)
        chromium.readme_screenshot(
            "partition_backfill", f"{webserver}/runs/b/{backfill_id}", platform_env, size="1440,600", budget_ms=60000
        )
        # --no-wait: the backfill is launched, named, and left to the daemon; the command does not follow it.
        launched = subprocess.run(
            [str(TAXI_BACKFILL), "trip_data_job", "2021-03", "--url", webserver, "--no-wait"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert launched.returncode == 0, launched.stdout + launched.stderr
        assert re.fullmatch(
            r"backfill: trip data from .+\nbackfill \w+: trip_data_job \(raw_trips, trips\) for 1 partition: \S+\n",
            launched.stdout,
        ), launched.stdout
        left_alone_id = re.search(r"^backfill (\w+):", launched.stdout, re.MULTILINE).group(1)
        client, deadline = DagsterClient(webserver), time.monotonic() + 180
        while client.backfill(left_alone_id)["status"] not in FINISHED_BACKFILL and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.backfill(left_alone_id)["status"] == "COMPLETED_SUCCESS"
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert lines[0].startswith("backfill: trip data from ")  # which source, first
    assert lines[1].startswith("backfill ") and "trip_data_job (raw_trips, trips) for 3 partitions" in lines[1]
    # Progress: each month is seen succeeding or failing along the way.
    progress = "\n".join(lines[2:])
    for month, state in (("2021-02", "succeeded"), ("2021-03", "succeeded"), ("2021-04", "failed")):
        assert f"{month} {state}" in progress
    assert "2 succeeded, 1 failed" in progress
    (failed,) = [line for line in lines if line.startswith("FAILED")]
    assert failed == "FAILED 2021-04: failed"
    error = lines[lines.index(failed) + 1]
    assert "raw_trips" in error and "2021-04: no file at" in error
    with duckdb.connect(str(platform_env / "warehouse.duckdb"), read_only=True) as conn:
        loaded = dict(conn.execute("SELECT month, count(*) FROM raw_trips GROUP BY month").fetchall())
    assert loaded == {month: MANIFEST_ROWS[month] for month in ("2021-02", "2021-03")}


@pytest.mark.unit
def test_month_ranges_and_lists() -> None:
    assert partitions("2021-11..2022-02,2023-01") == ["2021-11", "2021-12", "2022-01", "2022-02", "2023-01"]
    assert partitions("2021-01,2021-01") == ["2021-01"]
    with pytest.raises(ToolError, match="ends before it starts"):
        partitions("2021-03..2021-01")


@pytest.mark.unit
def test_a_partition_is_as_far_as_its_least_advanced_run() -> None:
    keys, assets = ["2021-01", "2021-02", "2021-03"], ["raw_trips", "trips"]
    runs = [
        {"status": "SUCCESS", "tags": [{"key": "dagster/partition", "value": "2021-01"}]},
        {"status": "STARTED", "tags": [{"key": "dagster/partition", "value": "2021-01"}]},
        # a single run over a range of partitions
        {
            "status": "FAILURE",
            "tags": [
                {"key": "dagster/asset_partition_range_start", "value": "2021-02"},
                {"key": "dagster/asset_partition_range_end", "value": "2021-03"},
            ],
        },
    ]
    assert Progress(keys, assets).states(runs) == {"2021-01": "running", "2021-02": "failed", "2021-03": "failed"}
    assert Progress(keys, assets).states([]) == dict.fromkeys(keys, "queued")
    # Within a failed run over a range, the months whose every asset was materialized have succeeded.
    ranged = {
        **runs[2],
        "assetSelection": [{"path": ["raw_trips"]}, {"path": ["trips"]}],
        "assetMaterializations": [
            {"partition": "2021-02", "assetKey": {"path": ["raw_trips"]}},
            {"partition": "2021-02", "assetKey": {"path": ["trips"]}},
            {"partition": "2021-03", "assetKey": {"path": ["raw_trips"]}},
        ],
    }
    assert Progress(keys, assets).states([ranged]) == {"2021-01": "queued", "2021-02": "succeeded", "2021-03": "failed"}


@pytest.mark.unit
def test_the_outcome_is_known_once_every_asset_of_every_partition_is_materialized() -> None:
    """The command exits without waiting for the daemon to mark the backfill completed only when nothing is left
    for the daemon to launch: every asset of every partition materialized by the backfill's runs."""
    progress = Progress(["2021-01", "2021-02"], ["raw_trips", "trips"])

    def run(*materialized: tuple[str, str]) -> dict:
        events = [{"partition": month, "assetKey": {"path": [asset]}} for month, asset in materialized]
        return {"status": "SUCCESS", "tags": [], "assetMaterializations": events}

    # A backfill whose downstream asset runs in a later run: its first run's success is not the end.
    assert not progress.all_materialized([run(("2021-01", "raw_trips"), ("2021-02", "raw_trips"))])
    assert not progress.all_materialized([run(("2021-01", "raw_trips"), ("2021-01", "trips"))])
    assert not progress.all_materialized([])
    assert progress.all_materialized(
        [run(("2021-01", "raw_trips"), ("2021-01", "trips")), run(("2021-02", "raw_trips"), ("2021-02", "trips"))]
    )


@pytest.mark.unit
def test_the_command_starts_without_importing_dagster() -> None:
    """Importing Dagster is about a second of the command's start: only submitting a run needs its client."""
    assert imported_modules("import taxi_assets.cli.backfill", ("dagster",)) == []
