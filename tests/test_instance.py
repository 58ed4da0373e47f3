"""The Dagster instance is created once, by set-up, before anything can start two Dagster processes on it.

Two commands creating a fresh SQLite instance at once stamp two alembic heads (or a stale one) in 6 of 8 attempts
on a 2-core machine, after which every command fails; too irregular to pin as a test, so the guarantee pinned here
is the other side: once set-up has initialised the home, concurrent first commands both succeed.
"""

import os
import sqlite3
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from taxi_assets.defs.resources import DUCKDB_POOL
from tests.support.dagster_processes import DAGSTER
from tests.support.platform import REPO_ROOT
from tests.support.postgres import running_postgres

INIT = REPO_ROOT / "scripts" / "init_dagster_home.sh"
LOCAL_AND_COMPOSE = ("dagster_home/dagster.yaml", "docker/dagster.yaml")


def materialize(month: str, dagster_home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(DAGSTER), "asset", "materialize", "-m", "taxi_assets.definitions", "--select", "raw_trips"]
        + ["--partition", month],
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.e2e
def test_two_first_commands_at_once_on_a_home_set_up_by_setup_both_succeed(platform_env: Path) -> None:
    dagster_home = platform_env / "dagster_home"
    subprocess.run([str(INIT)], env={**os.environ, "DAGSTER_HOME": str(dagster_home)}, check=True)
    assert (dagster_home / "dagster.yaml").read_text() == (REPO_ROOT / "dagster_home" / "dagster.yaml").read_text()

    commands = [materialize(month, dagster_home) for month in ("2021-01", "2021-02")]
    outputs = [command.communicate(timeout=180)[0] for command in commands]

    assert [command.returncode for command in commands] == [0, 0], "\n".join(output[-2000:] for output in outputs)
    with sqlite3.connect(dagster_home / "history" / "runs.db") as conn:
        assert len(conn.execute("SELECT version_num FROM alembic_version").fetchall()) == 1
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert [run.status for run in instance.get_runs()] == [dg.DagsterRunStatus.SUCCESS] * 2
    # Idempotent, and quick once done: nothing to migrate.
    again = subprocess.run(
        [str(INIT)], env={**os.environ, "DAGSTER_HOME": str(dagster_home)}, capture_output=True, text=True
    )
    assert again.returncode == 0 and again.stdout == ""


@pytest.mark.integration
def test_set_up_creates_the_duckdb_pool_before_any_run(tmp_path: Path) -> None:
    """Dagster creates a pool's slots on the pool's first claim: two first runs at once each added one, two slots
    for a limit of one, and both opened DuckDB (this file's e2e test, once). Set-up creates the one slot first."""
    home = tmp_path / "dagster_home"
    subprocess.run([str(INIT)], env={**os.environ, "DAGSTER_HOME": str(home)}, check=True, capture_output=True)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).slot_count == 1


@pytest.mark.e2e
def test_compose_set_up_creates_the_duckdb_pool_before_any_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose's `dagster-init` command, as compose runs it (its shell, the image's PATH, the repository as working
    folder), on compose's instance (docker/dagster.yaml) over a real PostgreSQL cluster: the schema and the one
    slot, also when run again (a `docker compose up` after the first)."""
    command = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())["services"]["dagster-init"]["command"]
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / LOCAL_AND_COMPOSE[1]).read_text())
    with running_postgres("dagster", "dagster", tmp_path / "postgres.log") as database:
        for variable, value in database.environment().items():
            monkeypatch.setenv(variable, value)
        env = {**os.environ, "DAGSTER_HOME": str(home), "PATH": f"{DAGSTER.parent}:{os.environ['PATH']}"}
        for _ in range(2):
            init = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
            assert init.returncode == 0, init.stdout + init.stderr
            with dg.DagsterInstance.from_config(str(home)) as instance:
                assert type(instance.run_storage).__name__ == "PostgresRunStorage"
                assert instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).slot_count == 1


@pytest.mark.unit
@pytest.mark.parametrize("script", ["setup.sh", "up.sh"])
def test_setup_and_up_initialise_the_instance_before_starting_dagster(script: str) -> None:
    text = (REPO_ROOT / "scripts" / script).read_text()
    assert "./scripts/init_dagster_home.sh" in text
    for process in ("dagster-daemon", "dagster-webserver"):
        if process in text:
            assert text.index("./scripts/init_dagster_home.sh") < text.index(process), f"{script}: {process} first"


@pytest.mark.unit
def test_compose_instance_recovers_like_the_local_one() -> None:
    """Both instances fail a dead run and free its DuckDB slot the same way (tests/test_recovery.py)."""
    local, compose = (yaml.safe_load((REPO_ROOT / path).read_text()) for path in LOCAL_AND_COMPOSE)
    for section in ("concurrency", "run_monitoring", "run_launcher"):
        assert compose[section] == local[section], section
    assert local["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert local["run_launcher"] == {"module": "taxi_assets.execution", "class": "LocalRunLauncher"}
