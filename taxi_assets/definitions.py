"""The platform's Dagster definitions: what `workspace.yaml`, the webserver and the daemon load."""

import dagster as dg

from taxi_assets.assets import batch_monitoring, models, trips
from taxi_assets.jobs import trip_data_job
from taxi_assets.resources import build_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([trips, models, batch_monitoring]),
    jobs=[trip_data_job],
    resources=build_resources(),
    # Steps share the warehouse one at a time anyway; running them inside the run's process saves a
    # Python start-up and a code load per step.
    executor=dg.in_process_executor,
)
