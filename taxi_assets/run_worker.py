"""What the code server's warm process imports (taxi_assets.execution): the definitions, built once there, so that
each run's process, forked from it, starts with Dagster imported and the definitions built. Building them is the
same call Dagster makes in the run's process, with the same environment, so a run finds them in the cache."""

from taxi_assets.definitions import defs

defs().get_repository_def()
