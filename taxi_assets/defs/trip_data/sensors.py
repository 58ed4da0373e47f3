"""The new-month sensor: TLC publishes a month about two months after it ends; when the month after the newest one
loaded appears at the trip-data source, it is loaded, and the assets' automation conditions carry it on to
scoring, drift and the report.

A tick costs one HTTP HEAD (or a stat of a local file) and two queries to the Dagster instance; it never opens
DuckDB.
"""

import dagster as dg

from taxi_assets import settings
from taxi_assets.core.tlc import published_version, source_location
from taxi_assets.defs.automation import AUTOMATION_STATUS
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.trip_data.assets import raw_trips, trips
from taxi_assets.defs.trip_data.jobs import trip_data_job
from taxi_assets.defs.trip_data.resources import TripDataSource


def next_month(loaded: set[str]) -> str | None:
    """The month after the newest loaded one, if it is a partition yet (months end before they are published)."""
    if not loaded:
        return None
    return monthly_partitions.get_next_partition_key(max(loaded))


@dg.sensor(
    job=trip_data_job,
    minimum_interval_seconds=settings.current().new_month_check_seconds,
    default_status=AUTOMATION_STATUS,
)
def new_month_sensor(context: dg.SensorEvaluationContext, trip_data: TripDataSource) -> dg.SensorResult:
    """Checks the trip-data source (TAXI_TRIP_DATA_URL) for the month after the newest month of `trips` and
    requests `raw_trips` for it once it is there; `trips` follows by its automation condition, like everything
    downstream.

    A month already loaded is never requested again; a month whose file changes after a failed load is requested
    again (the run key carries the file's size and modification time, or its ETag). On an empty warehouse it
    waits for a first month to be loaded by hand (a backfill of the months wanted), so that a fresh platform never
    starts downloading years of data on its own.
    """
    loaded = context.instance.get_materialized_partitions(trips)
    month = next_month(loaded)
    if month is None:
        why = "no month of trips loaded yet" if not loaded else f"{max(loaded)} is the newest month there can be"
        return dg.SensorResult(skip_reason=dg.SkipReason(f"{why}: nothing to check"))
    location = source_location(settings.resolve(trip_data.url_template), month)
    try:
        version = published_version(location)
    except OSError as error:
        context.log.warning(f"{month}: could not check the trip-data source: {settings.redact(str(error))}")
        return dg.SensorResult(skip_reason=dg.SkipReason(f"{month}: source unreachable"))
    if version is None:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"{month} is not published yet at {location}"))
    context.log.info(f"{month} is published at {location}: loading it")
    # `raw_trips` alone: `trips` has one requester, its automation condition. When this run also built `trips`,
    # the condition sensor could read the run as ended before it read the new `trips` as materialized, and request
    # it a second time (seen in one of two fresh-clone runs on 2026-12-02); the price is one condition tick.
    request = dg.RunRequest(
        run_key=f"{month}@{version}",
        partition_key=month,
        asset_selection=[raw_trips],
        tags={"taxi/source": location},
    )
    return dg.SensorResult(run_requests=[request])
