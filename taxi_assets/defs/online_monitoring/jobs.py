"""The job the prediction-log sensor runs: one UTC day of the log into DuckDB, then the online windows."""

import dagster as dg

# Dagster's run queue launches higher priorities first, and a pool hands its freed slot to the highest priority
# waiting: an ingest no longer queues behind a backfill's or the automation's monthly runs (seen in `make demo`: the
# control phase's ingest waited 67 s for three monthly chains). Those runs take seconds each; an online window
# that waits for them is an alarm raised that much later.
ONLINE_PRIORITY = "1"

online_monitoring_job = dg.define_asset_job(
    "online_monitoring_job",
    selection=dg.AssetSelection.assets("prediction_logs", "online_drift"),
    description="Ingest a day of the prediction log into DuckDB and push the online drift of the latest windows.",
    tags={"dagster/priority": ONLINE_PRIORITY},
)
