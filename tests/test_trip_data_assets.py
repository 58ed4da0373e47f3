"""The trip-data assets' work called directly, as functions (a month of each table; `taxi_zones` with
`dg.build_asset_context`) on small resources: a sample of a real TLC month in a temporary folder and a temporary
DuckDB file. Seconds, no Dagster run."""

import logging
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from taxi_assets.core.tlc import TripDataError
from taxi_assets.core.warehouse import RAW_TRIPS_DDL
from taxi_assets.defs.resources import Warehouse
from taxi_assets.defs.trip_data.assets import build_trips_month, load_raw_month, taxi_zones
from taxi_assets.defs.trip_data.resources import TripDataSource

pytestmark = pytest.mark.unit

SAMPLE_ROWS = 300


@pytest.fixture
def source(tmp_path: Path, tlc_dir: Path) -> TripDataSource:
    """A local mirror holding 300 real rides of 2021-01 and the real zone lookup."""
    folder = tmp_path / "tlc"
    folder.mkdir()
    duckdb.sql(
        f"COPY (SELECT * FROM read_parquet('{tlc_dir / 'green_tripdata_2021-01.parquet'}') "
        f"USING SAMPLE {SAMPLE_ROWS} ROWS (reservoir, 7)) TO '{folder / 'green_tripdata_2021-01.parquet'}' "
        "(FORMAT parquet)"
    )
    (folder / "taxi_zone_lookup.csv").write_bytes((tlc_dir / "taxi_zone_lookup.csv").read_bytes())
    return TripDataSource(url_template=str(folder), cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(database=str(tmp_path / "warehouse.duckdb"))


def test_raw_trips_loads_the_sample_with_its_checks(source: TripDataSource, warehouse: Warehouse) -> None:
    with warehouse.get_connection() as conn:
        result = load_raw_month(conn, "2021-01", source, logging.getLogger(__name__))

    assert result.metadata["dagster/row_count"] == SAMPLE_ROWS
    assert isinstance(result.metadata["pickups_outside_month_share"], float)
    assert {check.check_name: check.passed for check in result.checks}["tlc_schema"]
    with warehouse.get_connection() as conn:
        assert conn.execute("SELECT count(*), min(month), max(month) FROM raw_trips").fetchone() == (
            SAMPLE_ROWS,
            "2021-01",
            "2021-01",
        )


def test_trips_keeps_rides_of_one_to_sixty_minutes_and_says_why_others_went(warehouse: Warehouse) -> None:
    minutes = {"too short": 0.5, "kept": 12.0, "kept too": 60.0, "too long": 61.0}
    with warehouse.get_connection() as conn:
        conn.execute(RAW_TRIPS_DDL)
        for duration in minutes.values():
            conn.execute(
                "INSERT INTO raw_trips (month, lpep_pickup_datetime, lpep_dropoff_datetime, PULocationID, "
                "DOLocationID, trip_distance, fare_amount) VALUES ('2021-01', TIMESTAMP '2021-01-05 08:00:00', "
                "TIMESTAMP '2021-01-05 08:00:00' + to_microseconds(CAST($us AS BIGINT)), 74, 75, 1.5, 8.0)",
                {"us": duration * 60e6},
            )

    with warehouse.get_connection() as conn:
        result = build_trips_month(conn, "2021-01")

    assert result.metadata["dagster/row_count"] == 2
    assert result.metadata["rows_dropped"] == 2
    assert result.metadata["kept_share"] == 0.5
    assert "| duration < 1 min | 1 |" in result.metadata["dropped_by_reason"].value
    assert "| duration > 60 min | 1 |" in result.metadata["dropped_by_reason"].value


def test_trips_of_a_month_without_raw_rows_fail_naming_the_month(warehouse: Warehouse) -> None:
    with warehouse.get_connection() as conn, pytest.raises(TripDataError, match="2021-02: raw_trips holds no rows"):
        build_trips_month(conn, "2021-02")


def test_taxi_zones_refuse_a_lookup_with_other_columns(
    source: TripDataSource, warehouse: Warehouse, tmp_path: Path
) -> None:
    zones = taxi_zones(dg.build_asset_context(), warehouse=warehouse, trip_data=source)
    assert zones.metadata["dagster/row_count"] == 265

    wrong = tmp_path / "zones.csv"
    wrong.write_text("id,borough\n1,EWR\n")
    with pytest.raises(TripDataError, match="has columns"):
        taxi_zones(
            dg.build_asset_context(),
            warehouse=warehouse,
            trip_data=TripDataSource(
                url_template=source.url_template, zone_lookup_url=str(wrong), cache_dir=source.cache_dir
            ),
        )
