"""A real `dagster-daemon` and `dagster-webserver` on a temporary DAGSTER_HOME with the repository's dagster.yaml.

Shared by the backfill and UI tests and `bench/`: runs launch as their own processes, exactly as from the UI.
"""

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from taxi_assets.cli.dagster_client import DagsterClient
from tests.support.platform import REPO_ROOT, free_port, wait_http

DAGSTER = REPO_ROOT / ".venv" / "bin" / "dagster"
WORKSPACE = REPO_ROOT / "workspace.yaml"
# The instance `make up` runs (SQLite in DAGSTER_HOME) and the one compose runs (PostgreSQL, from DAGSTER_PG_*).
# TAXI_TEST_DAGSTER_YAML stands in for the first: bench/bench_granularity.py runs tests/test_recovery.py on a
# variant of it with `granularity: run`.
LOCAL_INSTANCE = Path(os.getenv("TAXI_TEST_DAGSTER_YAML") or REPO_ROOT / "dagster_home" / "dagster.yaml")
COMPOSE_INSTANCE = REPO_ROOT / "docker" / "dagster.yaml"


def prepare_dagster_home(dagster_home: Path, instance: Path | None = None) -> None:
    """The project's instance settings (`instance`: one of its dagster.yaml files, the local one by default) in
    `dagster_home`, its storage created before any process can race for it.

    Two processes that create a fresh SQLite instance at once can stamp two alembic heads, after which nothing
    opens it again: set-up creates it first (`dagster instance migrate`, see scripts/setup.sh), and so does this,
    in this process (the same storage creation, without a second Python start-up).
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(instance or LOCAL_INSTANCE, dagster_home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(dagster_home)):
        pass


@contextmanager
def _running(
    args: list[str], dagster_home: Path, log_path: Path, instance: Path = LOCAL_INSTANCE
) -> Iterator[subprocess.Popen]:
    """Start a Dagster process with the project's instance settings (`instance`: one of the project's
    dagster.yaml files); stop it and everything it started."""
    prepare_dagster_home(dagster_home, instance)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except ProcessLookupError:  # already gone: a test killed it
            process.wait()
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def running_daemon(dagster_home: Path, log_path: Path, instance: Path = LOCAL_INSTANCE):
    """`dagster-daemon run`: the run queue, the backfill daemon and the sensors."""
    args = [str(DAGSTER.with_name("dagster-daemon")), "run", "-w", str(WORKSPACE)]
    return _running(args, dagster_home, log_path, instance)


def wait_for_daemon(instance: dg.DagsterInstance, timeout: float = 120) -> None:
    """Until every daemon has sent a heartbeat: the workspace is loaded, as on a running platform."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = instance.get_daemon_statuses()
        if statuses and all(status.last_heartbeat is not None for status in statuses.values()):
            return
        time.sleep(0.2)
    raise TimeoutError("the daemon did not come up")


@contextmanager
def running_webserver(dagster_home: Path, log_path: Path, instance: Path = LOCAL_INSTANCE) -> Iterator[str]:
    """`dagster-webserver` on a free loopback port; yields its URL once it answers."""
    port = free_port()
    args = [str(DAGSTER.with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE)]
    with _running(args, dagster_home, log_path, instance) as process:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/server_info", timeout=90, process=process)
        yield url


def backfill_from_ui(webserver: str, assets: list[str], partitions: list[str]) -> str:
    """What the UI's Materialize button sends for an asset selection and partitions; returns the backfill id."""
    return DagsterClient(webserver).launch_backfill(assets, partitions)


def retry_backfill_from_ui(webserver: str, backfill_id: str) -> str:
    """The UI's "Re-execute from failure" on a finished backfill: a new backfill of what it did not materialize."""
    return DagsterClient(webserver).reexecute_backfill(backfill_id)


def backfill_from_cli(dagster_home: Path, job: str, partitions: list[str]) -> None:
    """What a user types: `dagster job backfill -j JOB --partitions …`."""
    launched = subprocess.run(
        [str(DAGSTER), "job", "backfill", "-w", str(WORKSPACE), "-j", job, "--partitions", ",".join(partitions)]
        + ["--noprompt"],
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
        capture_output=True,
        text=True,
    )
    if launched.returncode != 0:
        raise RuntimeError(f"dagster job backfill failed:\n{launched.stdout[-3000:]}\n{launched.stderr[-3000:]}")


def launch_run(dagster_home: Path, job: str, partition: str) -> None:
    """`dagster job launch` of one partition: queued, then started by the daemon like a run from the UI."""
    launched = subprocess.run(
        [str(DAGSTER), "job", "launch", "-w", str(WORKSPACE), "-j", job]
        + ["--tags", json.dumps({"dagster/partition": partition})],
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
        capture_output=True,
        text=True,
    )
    if launched.returncode != 0:
        raise RuntimeError(f"dagster job launch failed:\n{launched.stdout[-3000:]}\n{launched.stderr[-3000:]}")


def wait_for_runs(instance: dg.DagsterInstance, count: int, timeout: float) -> list[dg.DagsterRun]:
    """Wait until `count` runs exist and all have finished; return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs()
        if len(runs) >= count and all(run.is_finished for run in runs):
            return runs
        time.sleep(0.5)
    states = [(run.tags.get("dagster/partition"), run.status.value) for run in instance.get_runs()]
    raise TimeoutError(f"runs not finished after {timeout} s: {states}")


def backfill_runs(instance: dg.DagsterInstance, backfill_id: str, count: int, timeout: float) -> list[dg.DagsterRun]:
    """Wait until backfill `backfill_id` has `count` runs and all have finished; return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        if len(runs) >= count and all(run.is_finished for run in runs):
            return runs
        time.sleep(0.5)
    raise TimeoutError(f"backfill {backfill_id}: {count} finished runs not there after {timeout} s")


def settled_backfill(instance: dg.DagsterInstance, backfill_id: str, timeout: float):
    """Wait until the daemon has closed backfill `backfill_id` (every partition materialized or failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backfill = instance.get_backfill(backfill_id)
        if backfill.status.value.startswith(("COMPLETED", "FAILED", "CANCELED")):
            return backfill
        time.sleep(0.5)
    raise TimeoutError(f"backfill {backfill_id} still {instance.get_backfill(backfill_id).status} after {timeout} s")


def run_partitions(run: dg.DagsterRun, partitions_def: dg.PartitionsDefinition) -> list[str]:
    """The partitions one run covered: its partition, or every partition of its range."""
    if "dagster/partition" in run.tags:
        return [run.tags["dagster/partition"]]
    return partitions_def.get_partition_keys_in_range(
        dg.PartitionKeyRange(
            run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]
        )
    )


def step_errors(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return [str(record.dagster_event.step_failure_data.error) for record in failures]
