"""TLC trip data in DuckDB: the raw months as published, the zone lookup, and the cleaned modelling table."""

import logging

import dagster as dg
import duckdb

from taxi_assets import execution
from taxi_assets.core.tlc import (
    PICKUP_MONTHS_SQL,
    RAW_COLUMNS,
    TRIPS_DROP_REASONS_SQL,
    TRIPS_SELECT_SQL,
    ZONE_COLUMNS,
    TripDataError,
    check_pickups_in_month,
    raw_select_sql,
)
from taxi_assets.core.warehouse import RAW_TRIPS_DDL, TRIPS_DDL, replace_partition
from taxi_assets.defs.automation import MISSING_OR_DEPS_UPDATED
from taxi_assets.defs.partitions import (
    PartitionResult,
    materialize_partitions,
    monthly_backfill_policy,
    monthly_partitions,
)
from taxi_assets.defs.resources import DUCKDB_POOL, Warehouse
from taxi_assets.defs.trip_data.checks import quality_check_results, quality_check_specs
from taxi_assets.defs.trip_data.resources import TripDataSource

# The two monthly tables are materialized by one multi-asset (`trip_months`, below); other capabilities depend on
# them by key (`deps=[trips]`), and runs select them by name.
raw_trips = dg.AssetKey("raw_trips")
trips = dg.AssetKey("trips")

_RAW_SCHEMA_CHECK = {"tlc_schema": "raw_trips has the 20 TLC green columns with the normalised types (ERROR)."}
_TRIPS_DURATION_CHECK = {"duration_in_range": "Every trip lasts 1 to 60 minutes, the seed filter (ERROR)."}


def load_raw_month(
    conn: duckdb.DuckDBPyConnection, month: str, trip_data: TripDataSource, log: logging.Logger
) -> PartitionResult:
    """Fetch and check the TLC file of `month`, read and cast it whole, refuse it when most of its pickups fall
    outside the month (another month's file under this month's name), then swap it in for exactly that month of
    `raw_trips` in one transaction. A refused file leaves the month's previous rows, and stays out of the download
    cache."""
    # The file reaches the download cache only if this whole block succeeds.
    with trip_data.trip_file(month, log) as trip_file:
        source = trip_file.source
        conn.execute(RAW_TRIPS_DDL)
        # Read and cast every row before touching raw_trips: a type that does not cast or a corrupt page fails here.
        try:
            conn.execute(
                f"CREATE OR REPLACE TEMP TABLE month_file AS {raw_select_sql(str(trip_file.path))}", {"month": month}
            )
        except duckdb.Error as error:
            raise TripDataError(f"{month}: DuckDB could not load {source} ({error})") from error
        try:
            inside_share = check_pickups_in_month(
                month, source, *conn.execute(PICKUP_MONTHS_SQL.format(table="month_file"), {"month": month}).fetchone()
            )
            swapped = replace_partition(
                conn, "month", month, {"raw_trips": "SELECT * FROM month_file WHERE month = $month"}
            )
        finally:
            # The connection serves the run's next months: the file's copy goes now, not with the connection.
            conn.execute("DROP TABLE IF EXISTS month_file")
        rows = swapped["raw_trips"]
        types = dict(conn.execute("SELECT column_name, column_type FROM (DESCRIBE raw_trips)").fetchall())
        checks = quality_check_results(conn, "raw_trips", month, "lpep_pickup_datetime", "lpep_dropoff_datetime")
    summary = trip_file.summary
    wrong_types = {name: types.get(name) for name, sql_type in RAW_COLUMNS.items() if types.get(name) != sql_type}
    checks.append(
        dg.AssetCheckResult(
            check_name="tlc_schema",
            passed=not wrong_types and rows == summary.rows,
            metadata={"wrong_types": str(wrong_types), "file_rows": summary.rows, "loaded_rows": rows},
        )
    )
    return PartitionResult(
        metadata={
            "dagster/row_count": rows,
            "bytes": summary.bytes,
            "source": dg.MetadataValue.url(source) if "://" in source else dg.MetadataValue.path(source),
            "pickups_outside_month_share": 1.0 - inside_share,
        },
        checks=checks,
    )


def build_trips_month(conn: duckdb.DuckDBPyConnection, month: str) -> PartitionResult:
    """Replace `month` of `trips` with the rides of `raw_trips` that pass the seed filter, in one transaction."""
    conn.execute(TRIPS_DDL)
    conn.execute(RAW_TRIPS_DDL)
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
    return PartitionResult(
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
        checks=checks,
    )


@dg.multi_asset(
    name="trip_months",
    specs=[
        dg.AssetSpec(
            raw_trips,
            description="NYC TLC green-taxi trips of one month as published, in one table schema across the years.\n\n"
            "Fetched from TLC's trip-data address (or a local mirror), checked to be a TLC green parquet file, read "
            "and cast whole by DuckDB, refused when most of its pickups fall outside the month (another month's "
            "file under this month's name), then swapped in for exactly that month in one transaction. A refused "
            "file leaves the month's previous rows, and stays out of the download cache.",
            kinds={"duckdb", "parquet"},
            group_name="trip_data",
        ),
        dg.AssetSpec(
            trips,
            deps=[raw_trips],
            description="The modelling table for one month: ride fields, fares and `duration` in minutes, kept "
            "when 1 ≤ duration ≤ 60.\n\nThis is the course model's seed filter; nothing else is dropped, so its "
            "RMSE reproduces exactly.",
            kinds={"duckdb"},
            group_name="trip_data",
            automation_condition=MISSING_OR_DEPS_UPDATED,
        ),
    ],
    check_specs=[
        *quality_check_specs("raw_trips", _RAW_SCHEMA_CHECK),
        *quality_check_specs("trips", _TRIPS_DURATION_CHECK),
    ],
    partitions_def=monthly_partitions,
    backfill_policy=monthly_backfill_policy,
    pool=DUCKDB_POOL,
    can_subset=True,
)
def trip_months(context: dg.AssetExecutionContext, warehouse: Warehouse, trip_data: TripDataSource):
    """Load TLC months into `raw_trips` and rebuild them in `trips`, month by month: one run of a backfill takes a
    range of months, and each month of each table commits, succeeds or fails on its own (a bad month names its
    problem and keeps its previous rows; the other months land)."""
    with warehouse.get_connection() as conn:
        outcome = materialize_partitions(
            context,
            {
                raw_trips: lambda month: load_raw_month(conn, month, trip_data, context.log),
                trips: lambda month: build_trips_month(conn, month),
            },
        )
    # The warehouse is closed: the next run of a backfill takes it while this one records its events.
    execution.release_pool_slot(context)
    yield from outcome.events()


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
    # The lookup reaches the download cache only if this whole block succeeds.
    with trip_data.zone_lookup(context.log) as (path, source), warehouse.get_connection() as conn:
        try:
            header = [
                name
                for name, *_ in conn.execute("DESCRIBE SELECT * FROM read_csv($path)", {"path": str(path)}).fetchall()
            ]
        except duckdb.Error as error:
            raise TripDataError(f"zone lookup: {source} is not a readable CSV ({error})") from error
        if header != ZONE_COLUMNS:
            raise TripDataError(f"zone lookup: {source} has columns {header}, expected {ZONE_COLUMNS}")
        try:
            conn.execute(
                "CREATE OR REPLACE TABLE taxi_zones AS SELECT CAST(LocationID AS INTEGER) AS LocationID, "
                "Borough, Zone, service_zone FROM read_csv($path)",
                {"path": str(path)},
            )
        except duckdb.Error as error:
            raise TripDataError(f"zone lookup: DuckDB could not load {source} ({error})") from error
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
