"""Resources, each configured from environment variables with embedded defaults under `data/`."""

import os

from taxi_assets.core.predlog import is_mongo_uri
from taxi_assets.core.tlc import TLC_TRIP_DATA_URL, is_remote
from taxi_assets.paths import env_path, resolve
from taxi_assets.resources.model_registry import ModelRegistry
from taxi_assets.resources.prediction_log import PredictionLogStore
from taxi_assets.resources.pushgateway import Pushgateway
from taxi_assets.resources.trip_source import TripDataSource
from taxi_assets.resources.warehouse import DUCKDB_POOL, Warehouse

__all__ = [
    "DUCKDB_POOL",
    "ModelRegistry",
    "PredictionLogStore",
    "Pushgateway",
    "TripDataSource",
    "Warehouse",
    "build_resources",
]


def build_resources() -> dict[str, object]:
    """The resources for the current environment; read at call time so tests can point them elsewhere."""
    return {
        "duckdb": Warehouse(database=env_path("TAXI_DUCKDB_PATH", "warehouse.duckdb")),
        "trip_data": TripDataSource(
            url_template=_trip_data_location(os.getenv("TAXI_TRIP_DATA_URL") or TLC_TRIP_DATA_URL),
            zone_lookup_url=os.getenv("TAXI_ZONE_LOOKUP_URL", ""),
            cache_dir=env_path("TAXI_CACHE_DIR", "cache"),
        ),
        "model_registry": ModelRegistry(home=env_path("BENTOML_HOME", "bentoml")),
        "pushgateway": Pushgateway(url=os.getenv("TAXI_PUSHGATEWAY_URL", "")),
        "prediction_log": PredictionLogStore(uri=_predlog_uri()),
    }


def _trip_data_location(location: str) -> str:
    return location if is_remote(location) or location.startswith("file://") else resolve(location)


def _predlog_uri() -> str:
    uri = os.getenv("TAXI_PREDLOG_URI", "")
    return uri if is_mongo_uri(uri) else env_path("TAXI_PREDLOG_URI", "prediction_logs")
