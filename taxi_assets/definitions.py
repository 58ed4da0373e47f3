"""The platform's Dagster definitions: what `workspace.yaml`, `dg`, the webserver and the daemon load.

Everything under `taxi_assets/defs/` is discovered; the executor is set here, once.
"""

from pathlib import Path

import dagster as dg

from taxi_assets.execution import executor


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # Steps share the warehouse one at a time anyway; running them inside the run's process saves a
        # Python start-up and a code load per step. The executor is Dagster's in-process one, except that a step
        # waiting for its DuckDB slot sleeps and stops on SIGTERM (see taxi_assets.execution).
        dg.Definitions(executor=executor),
    )
