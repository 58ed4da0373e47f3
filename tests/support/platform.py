"""Real TLC files, an isolated platform folder per test, loopback ports and process helpers."""

import json
import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
TLC_DIR = Path(os.getenv("TAXI_TEST_TLC_DIR", REPO_ROOT.parent / "shared" / "data" / "tlc"))

# Row counts from ../shared/data/tlc/MANIFEST.md (parquet metadata).
MANIFEST_ROWS = {
    "2021-01": 76518,
    "2021-02": 64572,
    "2021-03": 83827,
    "2022-01": 62495,
    "2022-02": 69399,
    "2022-03": 78537,
    "2023-01": 68211,
    "2023-02": 64809,
    "2023-03": 72044,
    "2023-04": 65392,
}

# Settings whose embedded default (TLC's address, or nothing pushed) must not leak in from the caller's shell.
UNSET = ("TAXI_PUSHGATEWAY_URL", "TAXI_ALERTMANAGER_URL", "TAXI_ZONE_LOOKUP_URL")


def platform_environment(folder: Path, tlc_dir: Path = TLC_DIR) -> dict[str, str]:
    """Every store under `folder`, the trip-data source at the local TLC mirror, and automation off."""
    return {
        "TAXI_DUCKDB_PATH": str(folder / "warehouse.duckdb"),
        "TAXI_TRIP_DATA_URL": str(tlc_dir),
        "TAXI_CACHE_DIR": str(folder / "cache"),
        "TAXI_REPORTS_DIR": str(folder / "reports"),
        "TAXI_EVIDENTLY_WORKSPACE": str(folder / "evidently"),
        "TAXI_PREDLOG_URI": str(folder / "prediction_logs"),
        "BENTOML_HOME": str(folder / "bentoml"),
        "DAGSTER_HOME": str(folder / "dagster_home"),
        # A test's daemon runs only what the test launches; tests of the automation switch it on.
        "TAXI_AUTOMATION": "off",
    }


MAKE_UP_PORTS = (
    "DAGSTER_PORT",
    "TAXI_SERVICE_PORT",
    "TAXI_PROMETHEUS_PORT",
    "TAXI_PUSHGATEWAY_PORT",
    "TAXI_EVIDENTLY_PORT",
    "TAXI_ALERTMANAGER_PORT",
    "TAXI_ALERT_RECEIVER_PORT",
)


def make_up_environment(
    folder: Path, tlc_dir: Path = TLC_DIR, **overrides: str
) -> tuple[dict[str, str], dict[str, int]]:
    """The environment of a `make up` (or `make demo`) of its own under `folder`, on free ports; and the ports."""
    ports = {name: free_port() for name in MAKE_UP_PORTS}
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith(("TAXI_", "DAGSTER_", "BENTOML"))},
        **platform_environment(folder, tlc_dir),
        **{name: str(port) for name, port in ports.items()},
        "TAXI_RUN_DIR": str(folder / "run"),
        "TAXI_LOGS_DIR": str(folder / "logs"),
        "TAXI_ALERT_NOTIFICATIONS": str(folder / "alerts" / "notifications.jsonl"),
        **overrides,
    }
    return env, ports


def enter_platform_environment(folder: Path) -> None:
    """Point this process at a fresh platform under `folder`: for the benchmarks, which run outside pytest."""
    os.environ.update(platform_environment(folder))
    for name in UNSET:
        os.environ.pop(name, None)
    (folder / "dagster_home").mkdir(parents=True, exist_ok=True)


def platform_resources() -> dict:
    """The platform's resources as the code location defines them, initialised for the current environment:
    their `dg.EnvVar`s resolved, so a test can also use one directly (a warehouse connection, the registry)."""
    from taxi_assets.definitions import defs

    return {name: resource.process_config_and_initialize() for name, resource in defs().resources.items()}


def automation_policy(**overrides):
    """The embedded automation policy (the settings' defaults) with `overrides`: what a run's config sets under
    `resources.policy`, or a sensor's resources in a test."""
    from taxi_assets import settings
    from taxi_assets.defs.resources import AutomationPolicy

    return AutomationPolicy(**{**AutomationPolicy.from_settings(settings.load({})).model_dump(), **overrides})


def deploy_seed_model(instance, resources: dict, month: str = "2021-01") -> str:
    """The model of `month` deployed with its reference profile, in `instance`: the month and the next one loaded
    (a model is validated on the month after its training month), the quick `seed` recipe (when the model is not
    what is under test). Returns the deployed model's tag."""
    import dagster as dg

    from taxi_assets.defs.model.assets import deployed_model, duration_model
    from taxi_assets.defs.model.profile import reference_profile
    from taxi_assets.defs.partitions import monthly_partitions
    from taxi_assets.defs.trip_data.assets import trip_months

    seed = {"config": {"recipe": "seed"}}
    for loaded in (month, monthly_partitions.get_next_partition_key(month)):
        assert dg.materialize([trip_months], partition_key=loaded, instance=instance, resources=resources)
    assert dg.materialize(
        [duration_model],
        partition_key=month,
        instance=instance,
        resources=resources,
        run_config={"ops": {"duration_model": seed}},
    )
    assert dg.materialize(
        [deployed_model], instance=instance, resources=resources, run_config={"ops": {"deployed_model": seed}}
    )
    assert dg.materialize([reference_profile], instance=instance, resources=resources)
    return resources["model_registry"].deployed()["tag"]


def imported_modules(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The top-level packages among `prefixes` that a fresh interpreter of the project has imported after running
    `code`: what a new process pays for at start."""
    found = f"sorted({{m.split('.')[0] for m in sys.modules if m.startswith({prefixes!r})}})"
    listing = f"import json, sys; print(json.dumps({found}))"
    done = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "python"), "-c", f"{code}\n{listing}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# The ports tests hand to the processes they start: below Linux's ephemeral range (32768-60999), which the kernel
# hands out for a bind to port 0, so a port chosen here is never given meanwhile to a process choosing its own
# (Dagster's code servers, BentoML's internals); and a slice per pytest-xdist worker, so two workers never choose
# the same one between the check and the process binding it.
TEST_PORTS = range(20000, 32000)


def _ports() -> Iterator[int]:
    """This process's slice of `TEST_PORTS` from a random start, each port once."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = len(TEST_PORTS) // workers
    ports = TEST_PORTS[worker * size : (worker + 1) * size]
    start = random.randrange(len(ports))
    yield from (ports[(start + i) % len(ports)] for i in range(len(ports)))


_free_ports = _ports()


def free_port() -> int:
    """A loopback port nothing listens on, not handed out before by this process (see `TEST_PORTS`)."""
    for port in _free_ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port left in {TEST_PORTS}")


def wait_until(condition, timeout: float, what: str, interval: float = 0.25):
    """The first truthy value of `condition()` within `timeout` seconds; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout} s")


def wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Wait until `url` answers 200, failing early when the process behind it has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start_process(args: list[str], url: str, log_path: Path, timeout: float = 30.0) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(url, timeout=timeout, process=process)
    except Exception:
        process.kill()
        raise RuntimeError(f"{args[0]} did not start: {log_path.read_text()[-2000:]}") from None
    return process


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
