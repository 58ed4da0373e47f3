"""Backfill from the command line and watch it: launch, show each partition's progress, exit non-zero on failures.

    python -m taxi_assets.backfill trip_data_job 2021-01..2021-03
    python -m taxi_assets.backfill monthly_job 2021-01..2021-03,2022-01
    python -m taxi_assets.backfill raw_trips,trips 2023-01..2023-04 --url http://127.0.0.1:3000

The target is a job of the code location or a comma-separated list of assets. The backfill is launched through
the GraphQL API of a running Dagster webserver (`make up` runs one), exactly as the UI's Materialize button does,
so it appears in the UI under Overview → Backfills and the daemon runs it with the instance's pools and limits.
Each partition goes queued → running → succeeded / failed; the tool prints every change, waits for the end, and
exits 0 when every partition succeeded, 1 when some failed (naming them and their errors), 2 when the backfill
could not be launched. Ctrl-C stops watching, not the backfill (cancel it in the UI).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

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
FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}


class BackfillError(Exception):
    """The backfill could not be launched or watched: the message says why."""


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
            raise BackfillError(f"{part}: the range ends before it starts")
        while (year, month) <= (last_year, last_month):
            keys.append(f"{year:04d}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    if not keys:
        raise BackfillError("no partitions given")
    return list(dict.fromkeys(keys))


class Webserver:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def query(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.load(response)
        except urllib.error.URLError as error:
            raise BackfillError(
                f"no Dagster webserver at {self.url} ({getattr(error, 'reason', error)}): start the platform with "
                "`make up`, or pass --url"
            ) from error
        if answer.get("errors"):
            raise BackfillError(f"the webserver refused the query: {answer['errors'][0].get('message')}")
        return answer["data"]


JOBS = """
query {
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name locationOrLoadError {
      __typename
      ... on RepositoryLocation { repositories { name pipelines { name } } }
      ... on PythonError { message }
    } } }
  }
}
"""

JOB_ASSETS = """
query($selector: PipelineSelector!) { assetNodes(pipeline: $selector) { assetKey { path } } }
"""

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on NoModeProvidedError { message }
  }
}
"""

STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      error { message }
      runs {
        runId status tags { key value } assetSelection { path }
        assetMaterializations { partition assetKey { path } }
      }
    }
    ... on PythonError { message }
    ... on BackfillNotFoundError { message }
  }
}
"""

RUN_ERRORS = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      eventConnection(limit: 1000) {
        events {
          __typename
          ... on ExecutionStepFailureEvent {
            stepKey
            error { className message cause { className message cause { className message } } }
          }
          ... on RunFailureEvent { message }
        }
      }
    }
  }
}
"""


def workspace(server: Webserver, timeout: float = 180.0) -> list[dict]:
    """The workspace's code locations, once every one has loaded (a webserver answers before its code has)."""
    deadline = time.monotonic() + timeout
    while True:
        data = server.query(JOBS)["workspaceOrError"]
        if data["__typename"] != "Workspace":
            raise BackfillError(f"the webserver has no workspace: {data}")
        entries = data["locationEntries"]
        if entries and all(entry["locationOrLoadError"] for entry in entries):
            return entries
        if time.monotonic() > deadline:
            raise BackfillError(f"the code locations did not load within {timeout:.0f} s")
        time.sleep(1)


def assets_of(server: Webserver, target: str) -> tuple[list[str], str]:
    """The asset keys a target names (a job of the workspace, or `asset,asset`), and how to call it."""
    for entry in workspace(server):
        location = entry["locationOrLoadError"] or {}
        if location.get("__typename") == "PythonError":
            raise BackfillError(f"code location {entry['name']} does not load: {location['message']}")
        for repository in location.get("repositories", []):
            if target in {job["name"] for job in repository["pipelines"]}:
                selector = {
                    "pipelineName": target,
                    "repositoryName": repository["name"],
                    "repositoryLocationName": entry["name"],
                }
                nodes = server.query(JOB_ASSETS, {"selector": selector})["assetNodes"]
                keys = ["/".join(node["assetKey"]["path"]) for node in nodes]
                if not keys:
                    raise BackfillError(f"job {target} has no assets to backfill")
                return keys, f"{target} ({', '.join(keys)})"
    if re.fullmatch(r"[\w/]+(,[\w/]+)*", target) and "_job" not in target:
        keys = target.split(",")
        return keys, ", ".join(keys)
    raise BackfillError(f"{target} is neither a job of the workspace nor a list of assets")


def launch(server: Webserver, assets: list[str], keys: list[str]) -> str:
    params = {
        "assetSelection": [{"path": asset.split("/")} for asset in assets],
        "partitionNames": keys,
        "tags": [{"key": "taxi/launched_by", "value": "taxi_assets.backfill"}],
    }
    answer = server.query(LAUNCH, {"params": params})["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        detail = answer.get("message") or next(iter(answer.values()))
        raise BackfillError(f"the backfill was not launched: {answer['__typename']}: {detail}")
    return answer["backfillId"]


@dataclass
class Progress:
    """Each partition's state from the backfill's runs. A run covers one partition (tag `dagster/partition`) or a
    range of them (a backfill policy's runs tag their first and last partition): within a range, a partition whose
    every asset of the run is materialized has succeeded, whatever becomes of the rest of the run."""

    keys: list[str]

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

    @staticmethod
    def combine(states: list[str]) -> str:
        """A partition with several runs (assets that cannot share one) is as far as its least advanced run."""
        for state in ("failed", "canceled", "running", "queued"):
            if state in states:
                return state
        return "succeeded" if states else "queued"


def root_cause(error: dict) -> str:
    """The innermost error of a chain: Dagster wraps the asset's own exception in a step execution error."""
    while error.get("cause"):
        error = error["cause"]
    return f"{error.get('className') or 'Error'}: {error['message'].strip()}"


def run_errors(server: Webserver, run_id: str) -> list[str]:
    run = server.query(RUN_ERRORS, {"runId": run_id})["runOrError"]
    events = (run or {}).get("eventConnection", {}).get("events", [])
    errors = [
        f"{event['stepKey']}: {root_cause(event['error'])}"
        for event in events
        if event["__typename"] == "ExecutionStepFailureEvent" and event.get("error")
    ]
    return errors or [event["message"] for event in events if event["__typename"] == "RunFailureEvent"]


def watch(server: Webserver, backfill_id: str, keys: list[str], poll: float, out=sys.stdout) -> int:
    """Print every partition's changes until the backfill is over; the exit status."""
    progress, started, shown = Progress(keys), time.monotonic(), dict.fromkeys(keys, "")
    while True:
        backfill = server.query(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["__typename"] != "PartitionBackfill":
            raise BackfillError(f"backfill {backfill_id}: {backfill.get('message', backfill['__typename'])}")
        runs = backfill["runs"]
        states = progress.states(runs)
        changes = [f"{key} {state}" for key, state in states.items() if state != shown[key]]
        if changes:
            print(f"[{time.monotonic() - started:5.0f} s] {'; '.join(changes)}", file=out, flush=True)
            shown.update(states)
        if backfill["status"] in FINISHED_BACKFILL and all(run["status"] in FINISHED_RUN for run in runs):
            break
        time.sleep(poll)

    counts = {state: list(states.values()).count(state) for state in ("succeeded", "failed", "canceled", "queued")}
    elapsed = time.monotonic() - started
    print(
        f"backfill {backfill_id} {backfill['status'].lower()} after {elapsed:.0f} s: "
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
                errors[run_id] = [line for error in run_errors(server, run_id) for line in error.splitlines()]
            # A run over a range fails with one line per failed partition: those naming this one.
            lines = [line for line in errors[run_id] if key in line] if ranged else errors[run_id][:1]
            for line in lines or errors[run_id][:1]:
                print(f"  run {run_id[:8]}: {line.strip()[:500]}", file=out)
    return 0 if all(state == "succeeded" for state in states.values()) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    from taxi_assets import settings

    arguments = argparse.ArgumentParser(
        prog="python -m taxi_assets.backfill",
        description=__doc__.split("\n\n")[0],
        epilog="exit: 0 all partitions succeeded, 1 some failed, 2 not launched",
    )
    arguments.add_argument("target", help="a job (trip_data_job, monthly_job, …) or assets: raw_trips,trips")
    arguments.add_argument("partitions", help="months: 2021-01..2021-03,2022-01")
    arguments.add_argument(
        "--url", default=f"http://127.0.0.1:{settings.current().dagster_port}", help="the Dagster webserver"
    )
    arguments.add_argument("--poll", type=float, default=2.0, help="seconds between status checks")
    arguments.add_argument("--no-wait", action="store_true", help="launch and exit")
    options = arguments.parse_args(argv)
    # The platform's source when it runs on this shell's configuration (make up reads the same settings).
    print(f"backfill: {settings.trip_data_line()}", flush=True)
    server = Webserver(options.url)
    try:
        keys = partitions(options.partitions)
        assets, described = assets_of(server, options.target)
        backfill_id = launch(server, assets, keys)
    except BackfillError as error:
        print(f"backfill: {error}", file=sys.stderr)
        return EXIT_NOT_LAUNCHED
    print(f"backfill {backfill_id}: {described} for {len(keys)} partitions: {server.url}/runs/b/{backfill_id}")
    if options.no_wait:
        return 0
    try:
        return watch(server, backfill_id, keys, options.poll)
    except KeyboardInterrupt:
        print(f"\nstopped watching; backfill {backfill_id} goes on: {server.url}/runs/b/{backfill_id}")
        return EXIT_FAILED
    except BackfillError as error:
        print(f"backfill: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
