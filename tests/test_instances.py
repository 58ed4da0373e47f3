"""The two Dagster instances the project ships, running the same work through a real webserver and daemon: the
local one (`make up`: dagster_home/dagster.yaml, SQLite) and compose's (docker/dagster.yaml: PostgreSQL, here a
real cluster of its own, with the variables compose sets). Backfills from the UI and the command line at once,
with the prediction-log sensor's ingest and drift run among them, give the same results on both, with no DuckDB
lock error."""

import datetime as dt
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from taxi_assets import settings
from taxi_assets.core import predlog
from taxi_assets.defs.online_monitoring.assets import OnlineDriftConfig
from taxi_assets.defs.online_monitoring.jobs import ONLINE_PRIORITY
from tests.support.dagster_processes import (
    COMPOSE_INSTANCE,
    LOCAL_INSTANCE,
    backfill_from_cli,
    backfill_from_ui,
    running_daemon,
    running_webserver,
    step_errors,
)
from tests.support.platform import MANIFEST_ROWS, deploy_seed_model, platform_resources
from tests.support.postgres import running_postgres

TABLES = [dg.AssetKey("raw_trips"), dg.AssetKey("trips")]
PREDICTIONS, FEEDBACK = 200, 50
WINDOW = OnlineDriftConfig().last_n  # the sensor's runs use the default window
SENSOR = "prediction_log_sensor"


@pytest.mark.unit
def test_the_compose_instance_differs_from_the_local_one_in_storage_only() -> None:
    local, compose = (yaml.safe_load(path.read_text()) for path in (LOCAL_INSTANCE, COMPOSE_INSTANCE))
    assert "storage" not in local and "postgres" in compose["storage"]
    for section in ("concurrency", "run_coordinator", "run_monitoring", "run_launcher", "telemetry"):
        assert compose.get(section) == local.get(section), section


DOCKER_LAUNCHER_INSTANCE = COMPOSE_INSTANCE.with_name("dagster.docker-launcher.yaml")


@pytest.mark.unit
def test_the_docker_launcher_instance_is_the_compose_one_with_runs_in_containers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config_schema
    from dagster_docker import DockerRunLauncher

    compose = yaml.safe_load((COMPOSE_INSTANCE.parent.parent / "compose.yaml").read_text())
    for variable, value in compose["x-dagster-env"].items():
        monkeypatch.setenv(variable, value)
    config = yaml.safe_load(DOCKER_LAUNCHER_INSTANCE.read_text())
    launcher = config.pop("run_launcher")
    assert config == {k: v for k, v in yaml.safe_load(COMPOSE_INSTANCE.read_text()).items() if k != "run_launcher"}
    # Valid for Dagster's instance schema, and the launcher's config for dagster-docker's own schema and class.
    assert process_config(dagster_instance_config_schema(), {**config, "run_launcher": launcher}).success
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", DockerRunLauncher.__name__)
    checked = process_config(DockerRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors
    built = DockerRunLauncher.from_config_value(None, checked.value)
    assert built.image == compose["x-platform"]["image"] and built.networks == [f"{compose['name']}_default"]
    # Every run container gets the variables the daemon has, and the volume holding the warehouse.
    assert set(built.env_vars) == set(compose["x-dagster-env"])
    assert built.container_kwargs["volumes"] == [f"{compose['name']}_platform-data:/app/data"]
    assert "platform-data:/app/data" in compose["x-platform"]["volumes"]


def deploy_a_model_and_log_predictions(instance: dg.DagsterInstance) -> str:
    """What the platform holds before the daemon starts: a deployed model and a day of served predictions, some
    with their actual duration."""
    tag = deploy_seed_model(instance, platform_resources())
    now = dt.datetime.now(dt.timezone.utc)
    records = []
    for i in range(PREDICTIONS):
        ride = {"id": f"ride-{i}", "PULocationID": 74, "DOLocationID": 42 + i % 7, "trip_distance": 1.0 + i % 9}
        ride["pickup_datetime"] = "2021-01-15T08:15:00"
        records.append(predlog.prediction_record(ride, 10.0 + i % 5, tag, ts=now.isoformat()))
        if i < FEEDBACK:
            records.append(predlog.feedback_record(f"ride-{i}", 11.0, ts=now.isoformat()))
    current = settings.load()
    writer = predlog.open_writer(current.predlog_uri, current.predlog_spool_dir)
    assert writer.append(records)
    writer.close()
    return now.date().isoformat()


def run_the_platform(folder: Path, instance_yaml: Path) -> dict:
    """Backfills from the UI (ranged runs) and the CLI (a run per month) while the sensor ingests a day of
    predictions and computes its drift; what came of it, as a dict comparable across instances."""
    dagster_home = folder / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(instance_yaml.read_text())
    months = sorted(MANIFEST_ROWS)
    from_ui = [month for month in months if not month.startswith("2022")] + ["2021-04"]
    from_cli = [month for month in months if month.startswith("2022")] + ["2022-04"]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        day = deploy_a_model_and_log_predictions(instance)
        with running_webserver(dagster_home, folder / "webserver.log", instance_yaml) as webserver:
            backfill_from_ui(webserver, ["raw_trips", "trips"], from_ui)
            with running_daemon(dagster_home, folder / "daemon.log", instance_yaml):
                backfill_from_cli(dagster_home, "trip_data_job", from_cli)
                # 2 ranged UI runs, 4 CLI runs, and the prediction-log sensor's ingest + drift run of the day (the
                # model-promotion sensor's runs come and go among them; stopping the daemon ends any still running).
                runs = _finished_runs(instance, lambda run: run.tags.get("dagster/backfill"), 6)
                runs += _finished_runs(instance, lambda run: run.tags.get("dagster/sensor_name") == SENSOR, 1)
        errors = {run.run_id: step_errors(instance, run) for run in runs}
        (sensor_run,) = [run for run in runs if run.tags.get("dagster/sensor_name") == SENSOR]
        (drift,) = [
            event.asset_materialization
            for event in instance.all_logs(sensor_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            if event.asset_materialization.asset_key == dg.AssetKey("online_drift")
        ]
        outcome = {
            "storage": type(instance.run_storage).__name__,
            "materialized": {key.to_user_string(): instance.get_materialized_partitions(key) for key in TABLES},
            "failures": sorted(line for messages in errors.values() for m in messages for line in m.splitlines()[:4]),
            # the queue's priority too: an ingest goes before monthly runs queued earlier
            "sensor_run": (
                sensor_run.tags["dagster/partition"] == day,
                sensor_run.status,
                sensor_run.tags.get("dagster/priority"),
            ),
            "drift_rows": {k: drift.metadata[f"last_{WINDOW}/{k}"].value for k in ("rows", "feedback_rows")},
        }
    with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as conn:
        outcome["raw_rows"] = dict(conn.execute("SELECT month, count(*) FROM raw_trips GROUP BY month").fetchall())
        outcome["log_rows"] = conn.execute(
            "SELECT (SELECT count(*) FROM prediction_log WHERE day = $d),"
            " (SELECT count(*) FROM prediction_feedback WHERE day = $d)",
            {"d": day},
        ).fetchone()
    return outcome


def _finished_runs(instance: dg.DagsterInstance, belongs, count: int, timeout: float = 400) -> list[dg.DagsterRun]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [run for run in instance.get_runs() if belongs(run)]
        if len(runs) >= count and all(run.is_finished for run in runs):
            return runs
        time.sleep(0.5)
    raise TimeoutError(f"{count} finished runs not there after {timeout} s")


EXPECTED = {
    "materialized": {key.to_user_string(): set(MANIFEST_ROWS) for key in TABLES},
    "sensor_run": (True, dg.DagsterRunStatus.SUCCESS, ONLINE_PRIORITY),
    "drift_rows": {"rows": min(PREDICTIONS, WINDOW), "feedback_rows": FEEDBACK},
    "raw_rows": MANIFEST_ROWS,
    "log_rows": (PREDICTIONS, FEEDBACK),
}


# BentoML fixes its model store once per process: the test deploys a model in a process of its own.
@pytest.mark.e2e
@pytest.mark.forked
@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_backfills_and_the_sensor_give_the_same_results_on_either_instance(
    storage: str, platform_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if storage == "sqlite":
        outcome = run_the_platform(platform_env, LOCAL_INSTANCE)
        assert outcome.pop("storage") == "SqliteRunStorage"
    else:
        with running_postgres("dagster", "dagster", platform_env / "postgres.log") as database:
            for variable, value in database.environment().items():
                monkeypatch.setenv(variable, value)
            outcome = run_the_platform(platform_env, COMPOSE_INSTANCE)
        assert outcome.pop("storage") == "PostgresRunStorage"

    failures = outcome.pop("failures")
    assert outcome == EXPECTED
    # The two absent months fail with their own message, and nothing else fails: no DuckDB lock error anywhere.
    assert sorted(line.split("Failure: ")[-1].split(" no file at")[0] for line in failures if "no file at" in line) == [
        "raw_trips[2021-04]: 2021-04:",
        "raw_trips[2022-04]: 2022-04:",
    ]
    assert not [line for line in failures if "lock" in line.lower()]
