"""Backfills launched from the UI and from the command line at once, run by a real daemon: months side by side,
DuckDB never locked, absent months failing on their own."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from tests.support.dagster_processes import (
    backfill_from_cli,
    backfill_from_ui,
    running_daemon,
    running_webserver,
    step_errors,
    wait_for_runs,
)
from tests.support.platform import MANIFEST_ROWS

pytestmark = pytest.mark.e2e

ABSENT = ["2021-04", "2022-04"]


def test_backfills_of_every_local_month_with_zero_lock_errors(platform_env: Path):
    dagster_home = platform_env / "dagster_home"
    months = sorted(MANIFEST_ROWS)
    from_ui, from_cli = months[::2], months[1::2] + ABSENT
    with running_webserver(dagster_home, platform_env / "webserver.log") as webserver:
        backfill_from_ui(webserver, ["raw_trips", "trips"], from_ui)
        with running_daemon(dagster_home, platform_env / "daemon.log"):
            backfill_from_cli(dagster_home, "trip_data_job", from_cli)
            with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
                runs = wait_for_runs(instance, len(months) + len(ABSENT), timeout=300)
                outcome = {run.tags["dagster/partition"]: run.status for run in runs}
                errors = {run.tags["dagster/partition"]: step_errors(instance, run) for run in runs}
                backfills = {run.tags["dagster/backfill"] for run in runs}

    assert len(backfills) == 2
    assert {month: outcome[month] for month in months} == dict.fromkeys(months, dg.DagsterRunStatus.SUCCESS)
    for month in ABSENT:
        assert outcome[month] == dg.DagsterRunStatus.FAILURE
        assert len(errors[month]) == 1 and f"{month}: no file at" in errors[month][0]
    assert not [error for messages in errors.values() for error in messages if "lock" in error.lower()]
    with duckdb.connect(str(platform_env / "warehouse.duckdb"), read_only=True) as conn:
        loaded = dict(conn.execute("SELECT month, count(*) FROM raw_trips GROUP BY month").fetchall())
    assert loaded == MANIFEST_ROWS
