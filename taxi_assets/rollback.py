"""Roll the deployed model back to the one deployed before it, as a run of `deploy_job` in the Dagster instance
of DAGSTER_HOME (`dagster_home/` when unset, as under `make up`; the UI lists it with the other deployments):

    python -m taxi_assets.rollback

Same as materializing `deployed_model` with config `rollback: true`. A model rolled back from is not promoted
again automatically.
"""

import argparse
import os
import sys

import dagster as dg

from taxi_assets.settings import PROJECT_ROOT


def _failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """Each failed step's reason: a `dg.Failure`'s own description, or the error's message without its class."""
    reasons = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        reasons.append(described or data.error.message.strip().split(": ", 1)[-1])
    return reasons


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m taxi_assets.rollback",
        description="Deploy the model deployed before the current one again (a run of deploy_job).",
    ).parse_args(argv)
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    from taxi_assets.definitions import defs

    # The run is in the instance (the UI shows its events); the terminal gets one line, not the console log.
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    with dg.DagsterInstance.get() as instance:
        result = (
            defs()
            .resolve_job_def("deploy_job")
            .execute_in_process(
                instance=instance,
                run_config={**quiet, "ops": {"deployed_model": {"config": {"rollback": True}}}},
                raise_on_error=False,
            )
        )
    if not result.success:
        print(f"rollback: {'; '.join(_failures(result)) or 'the deploy_job run failed'}", file=sys.stderr)
        return 1
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    print(f"deployed {metadata['source_tag'].value} again as {metadata['deployed_tag'].value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
