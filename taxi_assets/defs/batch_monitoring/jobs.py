"""The whole monthly graph as one job, for command-line backfills (`dagster job backfill -j monthly_job …`)."""

import dagster as dg

# deployed_model is left out: it is not monthly, and every month is scored by the one already deployed.
monthly_job = dg.define_asset_job(
    "monthly_job",
    selection=dg.AssetSelection.assets(
        "raw_trips", "trips", "duration_model", "batch_predictions", "drift_metrics", "monitoring_report"
    ),
    description="The whole monthly graph for a month: trip data, that month's model, scoring, drift and report.",
)
