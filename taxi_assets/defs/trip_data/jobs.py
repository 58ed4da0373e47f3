"""What the command line backfills for trip data (`dagster job backfill -j trip_data_job …`); the UI backfills
any asset selection directly."""

import dagster as dg

trip_data_job = dg.define_asset_job(
    "trip_data_job",
    selection=dg.AssetSelection.assets("raw_trips", "trips"),
    description="Load TLC months into DuckDB: raw_trips and the cleaned trips table.",
)
