"""The platform's Dagster definitions: what `workspace.yaml`, `dg`, the webserver and the daemon load.

Everything under `taxi_assets/defs/` is discovered; the executor is set here, once.
"""

import functools
import os
import warnings
from pathlib import Path

import dagster as dg

from taxi_assets import settings
from taxi_assets.execution import executor

# monthly_job spans the whole monthly graph, mixing the trip tables' ranged backfill policy
# (taxi_assets.defs.partitions) with assets that take one month per run; Dagster then takes one month per run for
# that job, as intended, but would say so on every code load (the defs folder is imported with warnings reset, so
# the filter lives here).
warnings.filterwarnings("ignore", message=r"Asset job \S+ materializes assets with varying BackfillPolicies")


@dg.definitions
def defs() -> dg.Definitions:
    # Dagster builds the definitions twice in every run's process (for the run's job, then for the run's selection
    # of it), each build half a second of CPU while the backfill's other runs load their months. The resources take
    # their values from the settings' variables at build time (tests point them elsewhere), so a build is reused
    # only while those variables are the same.
    return _built_for(tuple(os.environ.get(setting.env) for setting in settings.SETTINGS.values()))


@functools.lru_cache(maxsize=1)
def _built_for(settings_environment: tuple[str | None, ...]) -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # Steps share the warehouse one at a time anyway; running them inside the run's process saves a
        # Python start-up and a code load per step. The executor is Dagster's in-process one, except that a step
        # waiting for its DuckDB slot sleeps and stops on SIGTERM (see taxi_assets.execution).
        dg.Definitions(executor=executor),
    )
