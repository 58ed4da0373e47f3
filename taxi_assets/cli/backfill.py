"""Backfill from the command line and watch it: launch, show each partition's progress, exit non-zero on failures.

    taxi-backfill trip_data_job 2021-01..2021-03
    taxi-backfill monthly_job 2021-01..2021-03,2022-01
    taxi-backfill raw_trips,trips 2023-01..2023-04 --url http://127.0.0.1:3000

The target is a job of the code location or a comma-separated list of assets. The backfill is launched through
the GraphQL API of a running Dagster webserver (`make up` runs one), exactly as the UI's Materialize button does,
so it appears in the UI under Overview → Backfills and the daemon runs it with the instance's pools and limits.
Each partition goes queued → running → succeeded / failed; the tool prints every change, waits for the end, and
exits 0 when every partition succeeded, 1 when some failed (naming them and their errors), 2 when the backfill
could not be launched. Ctrl-C stops watching, not the backfill (cancel it in the UI).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from taxi_assets import settings
from taxi_assets.cli import ToolError
from taxi_assets.cli.dagster_client import FINISHED_RUN, LAUNCHED_BY_TAG, DagsterClient, default_url

_MONTH_RANGE = re.compile(r"^(\d{4})-(\d{2})\.\.(\d{4})-(\d{2})$")
EXIT_FAILED, EXIT_NOT_LAUNCHED = 1, 2
# Run statuses as the GraphQL API names them, and what the tool calls them.
_STATE = {
    "QUEUED": "queued",
    "NOT_STARTED": "queued",
    "MANAGED": "queued",
    "STARTING": "running",
    "STARTED": "running",
    "CANCELING": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "CANCELED": "canceled",
}
FINISHED_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def partitions(text: str) -> list[str]:
    """`2021-01..2021-03,2022-01` → the months in order; other keys are taken as given."""
    keys: list[str] = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        match = _MONTH_RANGE.match(part)
        if not match:
            keys.append(part)
            continue
        year, month, last_year, last_month = map(int, match.groups())
        if (year, month) > (last_year, last_month):
            raise ToolError(f"{part}: the range ends before it starts")
        while (year, month) <= (last_year, last_month):
            keys.append(f"{year:04d}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    if not keys:
        raise ToolError("no partitions given")
    return list(dict.fromkeys(keys))


def assets_of(client: DagsterClient, target: str) -> tuple[list[str], str]:
    """The asset keys a target names (a job of the workspace, or `asset,asset`), and how to call it."""
    job = client.job(target)
    if job is not None:
        keys = client.job_assets(job)
        if not keys:
            raise ToolError(f"job {target} has no assets to backfill")
        return keys, f"{target} ({', '.join(keys)})"
    if re.fullmatch(r"[\w/]+(,[\w/]+)*", target) and "_job" not in target:
        keys = target.split(",")
        return keys, ", ".join(keys)
    raise ToolError(f"{target} is neither a job of the workspace nor a list of assets")


@dataclass
class Progress:
    """Each partition's state from the backfill's runs. A run covers one partition (tag `dagster/partition`) or a
    range of them (a backfill policy's runs tag their first and last partition): within a range, a partition whose
    every asset of the run is materialized has succeeded, whatever becomes of the rest of the run."""

    keys: list[str]
    assets: list[str]

    def states(self, runs: Iterable[dict]) -> dict[str, str]:
        per_partition: dict[str, list[str]] = {key: [] for key in self.keys}
        for run in runs:
            for key, state in self.run_states(run).items():
                per_partition.setdefault(key, []).append(state)
        return {key: self.combine(states) for key, states in per_partition.items()}

    def run_states(self, run: dict) -> dict[str, str]:
        """The state of each partition `run` covers."""
        state = _STATE.get(run["status"], run["status"].lower())
        covered = self.covered({tag["key"]: tag["value"] for tag in run["tags"]})
        if state in ("succeeded", "queued"):
            return dict.fromkeys(covered, state)
        assets = {"/".join(key["path"]) for key in run.get("assetSelection") or []}
        materialized: dict[str, set[str]] = {}
        for event in run.get("assetMaterializations") or []:
            materialized.setdefault(event["partition"], set()).add("/".join(event["assetKey"]["path"]))
        done = {key for key in covered if assets and assets <= materialized.get(key, set())}
        return {key: "succeeded" if key in done else state for key in covered}

    def covered(self, tags: dict[str, str]) -> list[str]:
        if "dagster/partition" in tags:
            return [tags["dagster/partition"]]
        start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
        if start in self.keys and end in self.keys:
            return self.keys[self.keys.index(start) : self.keys.index(end) + 1]
        return []

    def all_materialized(self, runs: Iterable[dict]) -> bool:
        """Every asset materialized for every partition by the backfill's runs: nothing is left for the daemon to
        launch, so the outcome is known before the daemon marks the backfill completed (up to its interval later)."""
        done = {
            (event["partition"], "/".join(event["assetKey"]["path"]))
            for run in runs
            for event in run.get("assetMaterializations") or []
        }
        return all((key, asset) in done for key in self.keys for asset in self.assets)

    @staticmethod
    def combine(states: list[str]) -> str:
        """A partition with several runs (assets that cannot share one) is as far as its least advanced run."""
        for state in ("failed", "canceled", "running", "queued"):
            if state in states:
                return state
        return "succeeded" if states else "queued"


def watch(
    client: DagsterClient, backfill_id: str, keys: list[str], assets: list[str], poll: float, out=sys.stdout
) -> int:
    """Print every partition's changes until the backfill is over (or every asset of every partition is
    materialized); the exit status."""
    progress, started, shown = Progress(keys, assets), time.monotonic(), dict.fromkeys(keys, "")
    while True:
        backfill = client.backfill(backfill_id)
        runs = backfill["runs"]
        states = progress.states(runs)
        changes = [f"{key} {state}" for key, state in states.items() if state != shown[key]]
        if changes:
            print(f"[{time.monotonic() - started:5.0f} s] {'; '.join(changes)}", file=out, flush=True)
            shown.update(states)
        if all(run["status"] in FINISHED_RUN for run in runs) and (
            backfill["status"] in FINISHED_BACKFILL or progress.all_materialized(runs)
        ):
            break
        time.sleep(poll)

    counts = {state: list(states.values()).count(state) for state in ("succeeded", "failed", "canceled", "queued")}
    elapsed = time.monotonic() - started
    status = backfill["status"].lower() if backfill["status"] in FINISHED_BACKFILL else "materialized"
    print(
        f"backfill {backfill_id} {status} after {elapsed:.0f} s: "
        f"{counts['succeeded']} succeeded, {counts['failed']} failed, {counts['canceled']} canceled"
        + (f", {counts['queued']} never ran (upstream failed)" if counts["queued"] else ""),
        file=out,
    )
    if backfill.get("error"):
        print(f"  backfill error: {backfill['error']['message'].strip()}", file=out)
    failed_runs: dict[str, list[tuple[str, bool]]] = {}
    for run in runs:
        if run["status"] == "FAILURE":
            run_states = progress.run_states(run)
            for key, state in run_states.items():
                if state == "failed":
                    failed_runs.setdefault(key, []).append((run["runId"], len(run_states) > 1))
    errors: dict[str, list[str]] = {}
    for key, state in states.items():
        if state == "succeeded":
            continue
        print(f"FAILED {key}: {state}" if state != "queued" else f"FAILED {key}: never ran", file=out)
        for run_id, ranged in failed_runs.get(key, []):
            if run_id not in errors:
                errors[run_id] = [line for error in client.run_errors(run_id) for line in error.splitlines()]
            # A run over a range fails with one line per failed partition: those naming this one.
            lines = [line for line in errors[run_id] if key in line] if ranged else errors[run_id][:1]
            for line in lines or errors[run_id][:1]:
                print(f"  run {run_id[:8]}: {line.strip()[:500]}", file=out)
    return 0 if all(state == "succeeded" for state in states.values()) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(
        prog="taxi-backfill",
        description=__doc__.split("\n\n")[0],
        epilog="exit: 0 all partitions succeeded, 1 some failed, 2 not launched",
    )
    arguments.add_argument("target", help="a job (trip_data_job, monthly_job, …) or assets: raw_trips,trips")
    arguments.add_argument("partitions", help="months: 2021-01..2021-03,2022-01")
    arguments.add_argument("--url", default=default_url(), help="the Dagster webserver")
    # A status check is one small GraphQL query; every 2 s, the command exited up to 2 s after the backfill ended.
    arguments.add_argument("--poll", type=float, default=0.5, help="seconds between status checks")
    arguments.add_argument("--no-wait", action="store_true", help="launch and exit")
    options = arguments.parse_args(argv)
    # The platform's source when it runs on this shell's configuration (make up reads the same settings).
    print(f"backfill: {settings.trip_data_line()}", flush=True)
    client = DagsterClient(options.url)
    try:
        keys = partitions(options.partitions)
        assets, described = assets_of(client, options.target)
        backfill_id = client.launch_backfill(assets, keys, tags={LAUNCHED_BY_TAG: "taxi-backfill"})
    except ToolError as error:
        print(f"backfill: {error}", file=sys.stderr)
        return EXIT_NOT_LAUNCHED
    partitions_text = f"{len(keys)} partition{'' if len(keys) == 1 else 's'}"
    print(f"backfill {backfill_id}: {described} for {partitions_text}: {client.url}/runs/b/{backfill_id}")
    if options.no_wait:
        return 0
    try:
        return watch(client, backfill_id, keys, assets, options.poll)
    except KeyboardInterrupt:
        print(f"\nstopped watching; backfill {backfill_id} goes on: {client.url}/runs/b/{backfill_id}")
        return EXIT_FAILED
    except ToolError as error:
        print(f"backfill: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
