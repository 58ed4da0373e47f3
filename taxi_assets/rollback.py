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


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m taxi_assets.rollback",
        description="Deploy the model deployed before the current one again (a run of deploy_job).",
    ).parse_args(argv)
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    from taxi_assets.definitions import defs

    with dg.DagsterInstance.get() as instance:
        result = (
            defs()
            .get_job_def("deploy_job")
            .execute_in_process(
                instance=instance,
                run_config={"ops": {"deployed_model": {"config": {"rollback": True}}}},
                raise_on_error=False,
            )
        )
    if not result.success:
        errors = [event.step_failure_data.error.message for event in result.get_step_failure_events()]
        print(f"rollback failed: {' '.join(errors)}", file=sys.stderr)
        return 1
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    print(f"deployed {metadata['source_tag'].value} again as {metadata['deployed_tag'].value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
