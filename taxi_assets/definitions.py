"""The platform's Dagster definitions: what `workspace.yaml`, the webserver and the daemon load."""

import dagster as dg

from taxi_assets.assets import batch_monitoring, models, online_monitoring, trips
from taxi_assets.jobs import monthly_job, online_monitoring_job, trip_data_job
from taxi_assets.resources import build_resources
from taxi_assets.sensors import prediction_log_sensor

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([trips, models, batch_monitoring, online_monitoring]),
    jobs=[trip_data_job, monthly_job, online_monitoring_job],
    sensors=[prediction_log_sensor],
    resources=build_resources(),
    # Steps share the warehouse one at a time anyway; running them inside the run's process saves a
    # Python start-up and a code load per step.
    executor=dg.in_process_executor,
)
