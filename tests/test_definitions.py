"""The loaded Dagster definitions as a reviewed snapshot, and the import contract between pure logic and glue.

An accidental change to the graph (an asset, a dependency, a partitioning, a backfill policy, a check, a pool, a job
or a sensor) fails `test_definitions_match_the_snapshot`; an intended one is recorded with
`UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_definitions.py` and shows in review as a diff of
tests/snapshots/definitions.json.
"""

import ast
import gc
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from taxi_assets.definitions import defs
from taxi_assets.defs import automation
from tests.support.platform import REPO_ROOT, imported_modules

pytestmark = pytest.mark.unit

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _partitions(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    return None if partitions_def is None else str(partitions_def)


def _configured(value: object) -> object:
    """A resource field as the UI shows it: an environment variable by name, never its value."""
    return f"env:{value.env_var_name}" if isinstance(value, dg.EnvVar) else value


def snapshot(definitions: dg.Definitions) -> dict:
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node, assets_def = graph.get(key), definitions.resolve_assets_def(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": _partitions(node.partitions_def),
            "backfill_policy": None if node.backfill_policy is None else str(node.backfill_policy),
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "kinds": sorted(node.kinds),
            "pool": assets_def.op.pool,
            "resources": sorted(assets_def.required_resource_keys),
            "automation_condition": None
            if node.automation_condition is None
            else node.automation_condition.get_label() or node.automation_condition.name,
            "checks": sorted(
                f"{spec.name}{' (blocking)' if spec.blocking else ''}"
                for spec in assets_def.check_specs
                if spec.asset_key == key
            ),
        }
    return {
        "assets": assets,
        "jobs": {
            job.name: {
                "assets": sorted(key.to_user_string() for key in job.asset_layer.selected_asset_keys),
                "partitions": _partitions(job.partitions_def),
                "tags": dict(sorted(job.tags.items())),
            }
            for job in sorted(definitions.resolve_all_job_defs(), key=lambda j: j.name)
            if not job.name.startswith("__")
        },
        "sensors": {
            sensor.name: {
                "jobs": sorted(target.job_name for target in sensor.targets),
                "default_status": sensor.default_status.value,
                "minimum_interval_seconds": sensor.minimum_interval_seconds,
            }
            for sensor in sorted(definitions.sensors or [], key=lambda s: s.name)
        },
        "schedules": sorted(schedule.name for schedule in definitions.schedules or []),
        "resources": {
            name: {field: _configured(getattr(resource, field)) for field in sorted(type(resource).model_fields)}
            for name, resource in sorted(definitions.resources.items())
        },
    }


def test_definitions_load_and_match_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    # The snapshot is of the embedded defaults: no deployment variable from the caller's shell.
    for variable in [name for name in os.environ if name.startswith(("TAXI_", "BENTOML_HOME"))]:
        monkeypatch.delenv(variable)
    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    current = snapshot(definitions)
    if os.getenv("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), "definitions changed: review, then UPDATE_SNAPSHOTS=1"


def test_deployment_settings_reach_resources_as_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_uri = "mongodb://monitor:s3cret-pw@mongo.example:27017/taxi"
    monkeypatch.setenv("TAXI_PREDLOG_URI", secret_uri)
    monkeypatch.setenv("TAXI_PUSHGATEWAY_URL", "http://push:s3cret-pw@gateway.example:9091")
    monkeypatch.setenv("TAXI_ALERTMANAGER_URL", "http://alerts:s3cret-pw@alertmanager.example:9093")
    resources = snapshot(defs())["resources"]
    assert resources["alertmanager"]["url"] == "env:TAXI_ALERTMANAGER_URL"
    assert resources["prediction_log"]["uri"] == "env:TAXI_PREDLOG_URI"
    assert resources["pushgateway"]["url"] == "env:TAXI_PUSHGATEWAY_URL"
    assert "s3cret-pw" not in json.dumps(resources)


def test_every_asset_is_described_and_the_duckdb_pool_is_the_warehouse_users() -> None:
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assets_def = definitions.resolve_assets_def(key)
        assert (assets_def.descriptions_by_key.get(key) or "").strip(), f"{key.to_user_string()} has no description"
        uses_warehouse = "warehouse" in assets_def.required_resource_keys
        # Both ways: the warehouse resource records the process of a run Dagster's own in-process executor runs
        # (dg.materialize), so that its death frees the duckdb slot; a duckdb step without it would record nothing.
        assert uses_warehouse == (assets_def.op.pool == "duckdb"), (
            f"{key.to_user_string()}: warehouse {uses_warehouse}, pool {assets_def.op.pool}"
        )


def test_the_inputs_written_by_jobs_never_run_with_what_follows_them() -> None:
    """`automation.WRITTEN_BY_JOBS` count until the automation requests what follows them (module docstring of
    taxi_assets/defs/automation.py), which is right only if their updates are never that asset's own run: no
    automation condition requests them, and no job selects one of them with an asset that depends on it."""
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    written_by_jobs = automation.WRITTEN_BY_JOBS.resolve(graph)
    assert written_by_jobs
    for key in written_by_jobs:
        assert graph.get(key).automation_condition is None, key
    jobs = {job.name for job in definitions.jobs or ()}
    assert {"deploy_job", "model_challenge_job"} <= jobs
    for name in jobs:
        selected = definitions.resolve_job_def(name).asset_layer.selected_asset_keys
        for key in written_by_jobs & selected:
            together = graph.get(key).child_keys & selected
            assert not together, f"{name} runs {key.to_user_string()} with {together}"


def _parsed(path: Path) -> ast.Module:
    """`path`'s syntax tree, parsed with the garbage collector paused. CPython 3.11 before 3.11.8 keeps the depth
    of the tree being built in one shared counter (python/cpython#106905): a collection during the build can run a
    finalizer that formats a traceback (SQLAlchemy's pool logs one for each SQLite connection a Dagster instance
    left behind), and 3.11's tracebacks parse source to place their carets, so the nested parse spoils the outer
    one: "SystemError: AST constructor recursion depth mismatch", seen here after other tests on one xdist worker."""
    source = path.read_text()
    collecting = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if collecting:
            gc.enable()


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    modules = set()
    for node in ast.walk(_parsed(path)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        # Pure logic: shared by the Dagster side, the service and the tools.
        ("taxi_assets/core", ("dagster", "bentoml", "taxi_assets.defs")),
        ("taxi_assets/settings.py", ("dagster", "bentoml", "taxi_assets.defs")),
        # Command-line clients of the service, and the trip files they share with the Dagster side: no orchestrator,
        # no service framework.
        ("taxi_assets/cli/replay.py", ("dagster", "bentoml", "taxi_assets.defs")),
        ("taxi_assets/replay", ("dagster", "bentoml", "taxi_assets.defs")),
        ("taxi_assets/trip_files.py", ("dagster", "bentoml", "taxi_assets.defs")),
        ("taxi_assets/alert_receiver.py", ("dagster", "bentoml", "taxi_assets.defs")),
        # The service: a lean image with neither the orchestrator nor the report library.
        ("bento_service", ("dagster", "evidently", "taxi_assets.defs", "duckdb")),
    ],
)
def test_import_contract(folder: str, forbidden: tuple[str, ...]) -> None:
    root = REPO_ROOT / folder
    for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
        offending = {m for m in _imported_modules(path) if m.split(".")[0] in forbidden or m.startswith(forbidden)}
        assert not offending, f"{path.relative_to(REPO_ROOT)} imports {sorted(offending)}"


def test_loading_the_code_location_imports_neither_pandas_nor_scikit_learn_nor_evidently() -> None:
    """Every run's process, the daemon's code server and the webserver load the definitions before anything else.
    pandas (about 0.6 s of CPU), scikit-learn (about a second) and Evidently (seconds) are imported by the functions
    that use them, so a run that only loads TLC months into DuckDB (a backfill of `trip_data_job`) never pays for
    them. One module importing one of them at its top fails this test."""
    heavy = ("pandas", "pyarrow", "sklearn", "scipy", "evidently")
    assert imported_modules("import taxi_assets.definitions as d; d.defs()", heavy) == []
