"""A real `dagster-daemon` on a temporary DAGSTER_HOME that uses the repository's dagster.yaml.

Shared by the backfill tests and `bench/`: runs launch as their own processes, exactly as from the UI.
"""

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGSTER = REPO_ROOT / ".venv" / "bin" / "dagster"
WORKSPACE = REPO_ROOT / "workspace.yaml"


@contextmanager
def running_daemon(dagster_home: Path, log_path: Path) -> Iterator[subprocess.Popen]:
    """Start `dagster-daemon run` with the project's instance settings; stop it and its runs afterwards."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [str(DAGSTER.with_name("dagster-daemon")), "run", "-w", str(WORKSPACE)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield daemon
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)


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


def step_errors(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return [str(record.dagster_event.step_failure_data.error) for record in failures]
