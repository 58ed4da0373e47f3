"""TLC trip data in DuckDB: the raw months as published, the zone lookup, and the cleaned modelling table."""

import dagster as dg
import duckdb

from taxi_assets.core.tlc import (
    RAW_COLUMNS,
    TRIPS_DROP_REASONS_SQL,
    TRIPS_SELECT_SQL,
    ZONE_COLUMNS,
    TripDataError,
    raw_select_sql,
)
from taxi_assets.core.warehouse import RAW_TRIPS_DDL, TRIPS_DDL, replace_partition
from taxi_assets.defs.automation import MISSING_OR_DEPS_UPDATED
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.resources import DUCKDB_POOL, Warehouse
from taxi_assets.defs.trip_data.checks import quality_check_results, quality_check_specs
from taxi_assets.defs.trip_data.resources import TripDataSource

_RAW_SCHEMA_CHECK = {"tlc_schema": "raw_trips has the 20 TLC green columns with the normalised types (ERROR)."}
_TRIPS_DURATION_CHECK = {"duration_in_range": "Every trip lasts 1 to 60 minutes, the seed filter (ERROR)."}


@dg.asset(
    partitions_def=monthly_partitions,
    pool=DUCKDB_POOL,
    kinds={"duckdb", "parquet"},
    group_name="trip_data",
    check_specs=quality_check_specs("raw_trips", _RAW_SCHEMA_CHECK),
)
def raw_trips(
    context: dg.AssetExecutionContext, warehouse: Warehouse, trip_data: TripDataSource
) -> dg.MaterializeResult:
    """NYC TLC green-taxi trips of one month as published, in one table schema across the years.

    Fetched from TLC's trip-data address (or a local mirror), checked to be a TLC green parquet file, then
    loaded by DuckDB itself, replacing exactly that month in one transaction.
    """
    month = context.partition_key
    path, source, summary = trip_data.trip_file(month, context.log)
    with warehouse.get_connection() as conn:
        conn.execute(RAW_TRIPS_DDL)
        try:
            rows = replace_partition(conn, "month", month, {"raw_trips": raw_select_sql(str(path))})["raw_trips"]
        except duckdb.Error as error:
            raise TripDataError(f"{month}: DuckDB could not load {source} ({error})") from error
        (outside,) = conn.execute(
            "SELECT count(*) FROM raw_trips WHERE month = $month AND strftime(lpep_pickup_datetime, '%Y-%m') <> month",
            {"month": month},
        ).fetchone()
        types = dict(conn.execute("SELECT column_name, column_type FROM (DESCRIBE raw_trips)").fetchall())
        checks = quality_check_results(conn, "raw_trips", month, "lpep_pickup_datetime", "lpep_dropoff_datetime")
    wrong_types = {name: types.get(name) for name, sql_type in RAW_COLUMNS.items() if types.get(name) != sql_type}
    checks.append(
        dg.AssetCheckResult(
            check_name="tlc_schema",
            passed=not wrong_types and rows == summary.rows,
            metadata={"wrong_types": str(wrong_types), "file_rows": summary.rows, "loaded_rows": rows},
        )
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "bytes": summary.bytes,
            "source": dg.MetadataValue.url(source) if "://" in source else dg.MetadataValue.path(source),
            "pickups_outside_month_share": float(outside / rows) if rows else 0.0,
        },
        check_results=checks,
    )


@dg.asset(
    pool=DUCKDB_POOL,
    kinds={"duckdb", "csv"},
    group_name="trip_data",
    automation_condition=MISSING_OR_DEPS_UPDATED,
)
def taxi_zones(
    context: dg.AssetExecutionContext, warehouse: Warehouse, trip_data: TripDataSource
) -> dg.MaterializeResult:
    """TLC taxi zones (LocationID, Borough, Zone, service_zone): the names behind the location IDs."""
    path, source = trip_data.zone_lookup(context.log)
    with warehouse.get_connection() as conn:
        try:
            header = [
                name
                for name, *_ in conn.execute("DESCRIBE SELECT * FROM read_csv($path)", {"path": str(path)}).fetchall()
            ]
        except duckdb.Error as error:
            raise TripDataError(f"zone lookup: {source} is not a readable CSV ({error})") from error
        if header != ZONE_COLUMNS:
            raise TripDataError(f"zone lookup: {source} has columns {header}, expected {ZONE_COLUMNS}")
        conn.execute(
            "CREATE OR REPLACE TABLE taxi_zones AS SELECT CAST(LocationID AS INTEGER) AS LocationID, "
            "Borough, Zone, service_zone FROM read_csv($path)",
            {"path": str(path)},
        )
        boroughs = conn.execute("SELECT Borough, count(*) FROM taxi_zones GROUP BY ALL ORDER BY 2 DESC").fetchall()
    zones = sum(count for _, count in boroughs)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": zones,
            "source": dg.MetadataValue.url(source) if "://" in source else dg.MetadataValue.path(source),
            "zones_per_borough": dg.MetadataValue.md(
                "| borough | zones |\n|---|---:|\n" + "\n".join(f"| {b} | {n} |" for b, n in boroughs)
            ),
        }
    )


@dg.asset(
    partitions_def=monthly_partitions,
    deps=[raw_trips],
    pool=DUCKDB_POOL,
    kinds={"duckdb"},
    group_name="trip_data",
    automation_condition=MISSING_OR_DEPS_UPDATED,
    check_specs=quality_check_specs("trips", _TRIPS_DURATION_CHECK),
)
def trips(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """The modelling table for one month: ride fields, fares and `duration` in minutes, kept when 1 ≤ duration ≤ 60.

    This is the course model's seed filter; nothing else is dropped, so its RMSE reproduces exactly.
    """
    month = context.partition_key
    with warehouse.get_connection() as conn:
        conn.execute(TRIPS_DDL)
        missing_timestamps, too_short, too_long = conn.execute(TRIPS_DROP_REASONS_SQL, {"month": month}).fetchone()
        (raw_rows,) = conn.execute("SELECT count(*) FROM raw_trips WHERE month = $month", {"month": month}).fetchone()
        if raw_rows == 0:
            raise TripDataError(f"{month}: raw_trips holds no rows for this month; materialize raw_trips first")
        kept = replace_partition(conn, "month", month, {"trips": TRIPS_SELECT_SQL})["trips"]
        checks = quality_check_results(conn, "trips", month, "pickup_datetime", "dropoff_datetime")
        (out_of_range,) = conn.execute(
            "SELECT count(*) FROM trips WHERE month = $month AND NOT duration BETWEEN 1 AND 60", {"month": month}
        ).fetchone()
    checks.append(
        dg.AssetCheckResult(
            check_name="duration_in_range", passed=out_of_range == 0, metadata={"offending_rows": out_of_range}
        )
    )
    dropped = raw_rows - kept
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": kept,
            "rows_dropped": dropped,
            "kept_share": float(kept / raw_rows),
            "dropped_by_reason": dg.MetadataValue.md(
                "| reason | rows |\n|---|---:|\n"
                f"| duration < 1 min | {too_short} |\n| duration > 60 min | {too_long} |\n"
                f"| missing pickup/dropoff time | {missing_timestamps} |"
            ),
        },
        check_results=checks,
    )
