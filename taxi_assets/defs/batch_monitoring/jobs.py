"""The whole monthly graph as one job, for command-line backfills (`dagster job backfill -j monthly_job …`)."""

import dagster as dg

# deployed_model is left out: it is not monthly, and every month is scored by the one already deployed.
# duration_model and model_challenge are left out too: a month's model is validated on the following loaded
# month, which a run of one month cannot promise; model_promotion_sensor (or duration_model_job) trains them.
monthly_job = dg.define_asset_job(
    "monthly_job",
    selection=dg.AssetSelection.assets("raw_trips", "trips", "batch_predictions", "drift_metrics", "monitoring_report"),
    description="The whole monthly graph for a month: trip data, scoring with the deployed model, drift and report.",
)
