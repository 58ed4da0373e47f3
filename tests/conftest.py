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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test is in exactly one layer: one outside them would escape `make test-fast`, one in two would run
    slow work in the fast layer."""
    misplaced = [item.nodeid for item in items if sum(any(item.iter_markers(layer)) for layer in LAYERS) != 1]
    if misplaced:
        raise pytest.UsageError(f"tests not in exactly one layer ({', '.join(LAYERS)}): {misplaced}")


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
