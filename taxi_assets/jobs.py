"""Jobs: what the command line backfills (`dagster job backfill -j …`) and what the sensor runs.

The UI backfills any asset selection directly; these name the usual ones.
"""

import dagster as dg

from taxi_assets.assets.online_monitoring import online_drift, prediction_logs

trip_data_job = dg.define_asset_job(
    "trip_data_job",
    selection=dg.AssetSelection.assets("raw_trips", "trips"),
    description="Load TLC months into DuckDB: raw_trips and the cleaned trips table.",
)

# deployed_model is left out: it is not monthly, and every month is scored by the one already deployed.
monthly_job = dg.define_asset_job(
    "monthly_job",
    selection=dg.AssetSelection.assets(
        "raw_trips", "trips", "duration_model", "batch_predictions", "drift_metrics", "monitoring_report"
    ),
    description="The whole monthly graph for a month: trip data, that month's model, scoring, drift and report.",
)

online_monitoring_job = dg.define_asset_job(
    "online_monitoring_job",
    selection=dg.AssetSelection.assets(prediction_logs, online_drift),
    description="Ingest a day of the prediction log into DuckDB and push the online drift of the latest windows.",
)
