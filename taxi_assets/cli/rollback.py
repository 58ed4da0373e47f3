"""Roll the deployed model back to the one deployed before it: a run of `deploy_job` with config `rollback: true`,
launched through the Dagster webserver (`make up` runs one) like any run from the UI, which lists it with the
other deployments:

    taxi-rollback [--url http://127.0.0.1:3000]

Prints one line: the model deployed again, or why the run failed (exit status 1). A model rolled back from is not
promoted again automatically.
"""

import argparse
import sys
import time

from taxi_assets.cli import ToolError, answer
from taxi_assets.cli.dagster_client import FINISHED_RUN, LAUNCHED_BY_TAG, DagsterClient, default_url

JOB, ASSET = "deploy_job", "deployed_model"
TIMEOUT_SECONDS = 600


def rollback(client: DagsterClient, poll: float = 1.0) -> str:
    """Run the rollback and wait for it: what was deployed again, as one line."""
    job = client.job(JOB)
    if job is None:
        raise ToolError(f"no {JOB} in the workspace at {client.url}")
    run_id = client.submit(
        job, {"ops": {ASSET: {"config": {"rollback": True}}}}, tags={LAUNCHED_BY_TAG: "taxi-rollback"}
    )
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while (status := client.run_status(run_id)) not in FINISHED_RUN:
        if time.monotonic() > deadline:
            raise ToolError(
                f"run {run_id} still {status.lower()} after {TIMEOUT_SECONDS} s: {client.url}/runs/{run_id}"
            )
        time.sleep(poll)
    if status != "SUCCESS":
        reasons = client.run_errors(run_id, described=True)
        raise ToolError("; ".join(reasons) or f"the {JOB} run {run_id} {status.lower()}: {client.url}/runs/{run_id}")
    (deployed,) = [event.metadata for event in client.materializations(ASSET, limit=20) if event.run_id == run_id]
    return f"deployed {deployed['source_tag']} again as {deployed['deployed_tag']}"


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(
        prog="taxi-rollback",
        description="Deploy the model deployed before the current one again (a run of deploy_job).",
    )
    arguments.add_argument("--url", default=default_url(), help="the Dagster webserver")
    options = arguments.parse_args(argv)
    return answer("rollback", lambda: rollback(DagsterClient(options.url)))


if __name__ == "__main__":
    sys.exit(main())
