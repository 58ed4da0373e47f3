"""Fixtures shared by the whole suite; helpers the benchmarks use too live in tests/support/.

Every test belongs to exactly one layer, marked in its module (`pytestmark`): `unit` (pure logic on small data, no
processes; the whole layer in seconds), `integration` (whole real months through the models and statistics, Dagster
materializations and DuckDB in this process), `service` (a real `bentoml serve`), `e2e` (daemon, webserver,
Prometheus, Pushgateway, Chromium). `make test-fast` runs the unit layer.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from taxi_assets import settings
from tests.support.platform import TLC_DIR, UNSET, platform_environment
from tests.support.prometheus_harness import start_pushgateway

LAYERS = ("unit", "integration", "service", "e2e")
# The longest files, longest first (one worker, CI of 2026-12-03: the demo 343 s, the README's commands 296 s, the
# automation's two longest tests 264 s, the two instances 133 s): under xdist each starts first on a worker of its own.
LONGEST = ("test_demo.py", "test_readme.py", "test_automation.py", "test_instances.py")


def layer(item: pytest.Item) -> int:
    return next(rank for rank, name in enumerate(LAYERS) if any(item.iter_markers(name)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test is in exactly one layer: one outside them would escape `make test-fast`, one in two would run
    slow work in the fast layer.

    Run by pytest-xdist's workers (`make test`: whole files to two workers, in collection order with
    `--no-loadscope-reorder`), the `LONGEST` files come first, then the other files of the slowest layer, each
    file's tests in their order: the long files are spread between the workers first and the short ones fill in at
    the end, instead of one worker finishing the demo alone (by xdist's default order, files with the most tests
    first, the demo started 17 minutes into a 28-minute run and ended it)."""
    misplaced = [item.nodeid for item in items if sum(any(item.iter_markers(name)) for name in LAYERS) != 1]
    if misplaced:
        raise pytest.UsageError(f"tests not in exactly one layer ({', '.join(LAYERS)}): {misplaced}")
    if hasattr(config, "workerinput"):
        slowest: dict[Path, int] = {}
        for item in items:
            slowest[item.path] = max(slowest.get(item.path, 0), layer(item))
        first = {name: rank for rank, name in enumerate(LONGEST)}
        # stable: files stay whole, and in their order within a layer
        items.sort(key=lambda item: (first.get(item.path.name, len(LONGEST)), -slowest[item.path]))


@pytest.fixture(scope="session")
def tlc_dir() -> Path:
    assert (TLC_DIR / "green_tripdata_2021-01.parquet").exists(), f"TLC files not found in {TLC_DIR}"
    return TLC_DIR


@pytest.fixture
def platform_env(tmp_path: Path, tlc_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every store at a fresh temporary folder and the trip-data source at the local TLC mirror."""
    for name, value in platform_environment(tmp_path, tlc_dir).items():
        monkeypatch.setenv(name, value)
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "dagster_home").mkdir()
    settings.current.cache_clear()
    yield tmp_path
    settings.current.cache_clear()


@pytest.fixture
def instance(platform_env: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(platform_env / "dagster_home")) as dagster_instance:
        yield dagster_instance


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus Pushgateway on a free loopback port, its series in memory only; yields its URL."""
    with start_pushgateway(tmp_path) as url:
        yield url
