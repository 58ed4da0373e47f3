"""What the code server's warm process imports (taxi_assets.execution): the definitions, built once there, so that
each run's process, forked from it, starts with Dagster imported and the definitions built. Building them is the
same call Dagster makes in the run's process, with the same environment, so a run finds them in the cache."""

import contextlib

# Code changed on disk since the code server loaded it may no longer build. Raised here, the error would kill the
# warm process and every launch would fail with a broken pipe; suppressed, each run builds the code itself and
# fails with the error in the UI, as before.
with contextlib.suppress(Exception):
    from taxi_assets.definitions import defs

    defs().get_repository_def()
