"""Jobs for the command line (`dagster job backfill -j …`); the UI backfills any asset selection directly."""

import dagster as dg

from taxi_assets.partitions import monthly_partitions

trip_data_job = dg.define_asset_job(
    "trip_data_job",
    selection=dg.AssetSelection.assets("raw_trips", "trips"),
    partitions_def=monthly_partitions,
    description="Load TLC months into DuckDB: raw_trips and the cleaned trips table.",
)
