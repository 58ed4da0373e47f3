"""Backfills launched from the UI and from the command line, run by a real daemon: the UI's backfill takes ranges
of months per run, the command line one run per month; DuckDB is never locked, every month succeeds or fails on
its own, and a retry re-runs only what failed."""

import contextlib
import shutil
import time
from pathlib import Path

import dagster as dg
import duckdb
import psutil
import pytest

from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.trip_data.assets import trip_months
from tests.support.dagster_processes import (
    backfill_from_cli,
    backfill_from_ui,
    backfill_runs,
    retry_backfill_from_ui,
    run_partitions,
    running_daemon,
    running_webserver,
    settled_backfill,
    step_errors,
    wait_for_daemon,
    wait_for_runs,
)
from tests.support.platform import MANIFEST_ROWS, platform_resources

pytestmark = pytest.mark.e2e

TABLES = [dg.AssetKey("raw_trips"), dg.AssetKey("trips")]


def month_rows(folder: Path) -> dict[str, int]:
    with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as conn:
        return dict(conn.execute("SELECT month, count(*) FROM raw_trips GROUP BY month").fetchall())


def test_backfills_of_every_local_month_with_zero_lock_errors(platform_env: Path):
    dagster_home = platform_env / "dagster_home"
    months = sorted(MANIFEST_ROWS)
    # 2021-04 and 2022-04 were never published (the mirror holds three months of 2021 and 2022).
    from_ui = [month for month in months if not month.startswith("2022")] + ["2021-04"]
    from_cli = [month for month in months if month.startswith("2022")] + ["2022-04"]
    with running_webserver(dagster_home, platform_env / "webserver.log") as webserver:
        backfill_from_ui(webserver, ["raw_trips", "trips"], from_ui)
        with running_daemon(dagster_home, platform_env / "daemon.log"):
            backfill_from_cli(dagster_home, "trip_data_job", from_cli)
            with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
                # The UI's two ranges (2021-01..04, 2023-01..04) are a run each; the command line runs each month.
                runs = wait_for_runs(instance, 2 + len(from_cli), timeout=300)
                covered = {tuple(run_partitions(run, monthly_partitions)): run for run in runs}
                errors = {partitions: step_errors(instance, run) for partitions, run in covered.items()}
                materialized = {key: instance.get_materialized_partitions(key) for key in TABLES}

    assert len({run.tags["dagster/backfill"] for run in runs}) == 2
    assert sorted(covered) == sorted(
        [("2021-01", "2021-02", "2021-03", "2021-04"), ("2023-01", "2023-02", "2023-03", "2023-04")]
        + [(month,) for month in from_cli]
    )
    assert materialized == dict.fromkeys(TABLES, set(months))
    # The range holding 2021-04 fails naming that month alone; 2022-04's own run fails the same way.
    (ranged_error,) = errors[("2021-01", "2021-02", "2021-03", "2021-04")]
    assert "1 of 4 partitions failed" in ranged_error and "raw_trips[2021-04]: 2021-04: no file at" in ranged_error
    assert covered[("2022-04",)].status == dg.DagsterRunStatus.FAILURE
    assert len(errors[("2022-04",)]) == 1 and "raw_trips[2022-04]: 2022-04: no file at" in errors[("2022-04",)][0]
    assert not [error for messages in errors.values() for error in messages if "lock" in error.lower()]
    assert month_rows(platform_env) == MANIFEST_ROWS


def test_a_ui_backfill_starts_its_first_run_within_five_seconds(platform_env: Path):
    """Dagster's backfill daemon looks for new backfills every 30 s; the platform's run queue makes it every 0.5 s
    (taxi_assets/execution.py), so a click on Materialize is a queued run within seconds."""
    dagster_home = platform_env / "dagster_home"
    with (
        running_webserver(dagster_home, platform_env / "webserver.log") as webserver,
        running_daemon(dagster_home, platform_env / "daemon.log"),
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
    ):
        wait_for_daemon(instance)  # its first backfill iteration is behind it: the next is one interval away
        submitted = time.time()
        backfill = backfill_from_ui(webserver, ["raw_trips", "trips"], ["2021-01"])
        (run,) = backfill_runs(instance, backfill, 1, timeout=180)
        queued = instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp()
        # The daemon launched the run through its code server's warm process; the webserver's has none to start.
        warm = {name: warm_processes(name) for name in ("dagster-daemon", "dagster-webserver")}

    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert queued - submitted < 5, f"first run queued {queued - submitted:.1f} s after the backfill was submitted"
    assert warm["dagster-daemon"] >= 1 and warm["dagster-webserver"] == 0, warm


def warm_processes(command: str) -> int:
    """The warm processes (taxi_assets.execution) beside the code servers of this test's `command` process."""
    (started,) = [child for child in psutil.Process().children() if command in " ".join(child.cmdline()[:2])]
    warm = 0
    for code_server in started.children():
        for child in code_server.children():
            with contextlib.suppress(psutil.NoSuchProcess):  # a code server being replaced
                warm += "from multiprocessing.forkserver import main" in " ".join(child.cmdline())
    return warm


def test_a_ranged_backfill_lands_its_good_months_and_its_retry_reruns_only_the_bad_ones(
    platform_env: Path, tlc_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    dagster_home = platform_env / "dagster_home"
    source = platform_env / "source"
    source.mkdir()
    for month in ("2021-01", "2021-03"):
        shutil.copy(tlc_dir / f"green_tripdata_{month}.parquet", source)
    # 2021-02 was loaded earlier from 300 of its rides; its file has turned corrupt since. 2021-04 is missing.
    february = source / "green_tripdata_2021-02.parquet"
    duckdb.sql(
        f"COPY (SELECT * FROM read_parquet('{tlc_dir / february.name}') USING SAMPLE 300 ROWS (reservoir, 7)) "
        f"TO '{february}' (FORMAT parquet)"
    )
    monkeypatch.setenv("TAXI_TRIP_DATA_URL", str(source))
    with dg.instance_for_test() as scratch:
        assert dg.materialize([trip_months], partition_key="2021-02", instance=scratch, resources=platform_resources())
    february.write_bytes(february.read_bytes()[:1000])
    months = ["2021-01", "2021-02", "2021-03", "2021-04"]

    with running_webserver(dagster_home, platform_env / "webserver.log") as webserver:
        first = backfill_from_ui(webserver, ["raw_trips", "trips"], months)
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            # A daemon runs a backfill's iteration when it starts, then every 0.5 s: each daemon below sees the
            # backfill at a known stage.
            with running_daemon(dagster_home, platform_env / "daemon.log"):
                (run,) = backfill_runs(instance, first, 1, timeout=180)
            with running_daemon(dagster_home, platform_env / "daemon-2.log"):
                data = settled_backfill(instance, first, timeout=120).asset_backfill_data
            rows_after_first = month_rows(platform_env)

            shutil.copy(tlc_dir / february.name, source)  # the source is repaired
            retry = retry_backfill_from_ui(webserver, first)
            with running_daemon(dagster_home, platform_env / "daemon-3.log"):
                retry_runs = backfill_runs(instance, retry, 2, timeout=180)
            (error,) = step_errors(instance, run)
            retry_outcome = {tuple(run_partitions(r, monthly_partitions)): r.status for r in retry_runs}

    assert run_partitions(run, monthly_partitions) == months and run.status == dg.DagsterRunStatus.FAILURE
    for key in TABLES:
        assert set(data.materialized_subset.get_partitions_subset(key).get_partition_keys()) == {"2021-01", "2021-03"}
        assert set(data.failed_and_downstream_subset.get_partitions_subset(key).get_partition_keys()) == {
            "2021-02",
            "2021-04",
        }
    assert "raw_trips[2021-02]: 2021-02: " in error and "is not a readable parquet file" in error
    assert "raw_trips[2021-04]: 2021-04: no file at" in error
    assert rows_after_first == {
        "2021-01": MANIFEST_ROWS["2021-01"],
        "2021-02": 300,
        "2021-03": MANIFEST_ROWS["2021-03"],
    }
    # The retry takes only the two failed months: the repaired one lands, the missing one fails again.
    assert retry_outcome == {("2021-02",): dg.DagsterRunStatus.SUCCESS, ("2021-04",): dg.DagsterRunStatus.FAILURE}
    assert month_rows(platform_env) == {month: MANIFEST_ROWS[month] for month in months[:3]}
