"""The platform's Dagster definitions: what `workspace.yaml`, the webserver and the daemon load."""

import dagster as dg

from taxi_assets.assets import batch_monitoring, models, trips
from taxi_assets.resources import build_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([trips, models, batch_monitoring]),
    resources=build_resources(),
)
