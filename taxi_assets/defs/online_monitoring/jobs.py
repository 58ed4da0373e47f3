"""The job the prediction-log sensor runs: one UTC day of the log into DuckDB, then the online windows."""

import dagster as dg

online_monitoring_job = dg.define_asset_job(
    "online_monitoring_job",
    selection=dg.AssetSelection.assets("prediction_logs", "online_drift"),
    description="Ingest a day of the prediction log into DuckDB and push the online drift of the latest windows.",
)
