"""The one way the command-line tools, the tests and the benchmarks talk to a Dagster webserver.

Runs are submitted and followed with dagster-graphql's `DagsterGraphQLClient`, Dagster's supported Python client.
It imports the whole of Dagster (about a second of a command's start), so only the methods that use it import it:
`taxi-backfill` starts in a quarter of a second. What that client does not cover (the workspace's jobs and their
assets, partition backfills, a run's errors, materializations and latest runs) is the small set of GraphQL queries
below, sent to the same `/graphql` endpoint. Every failure is a `ToolError` whose message says what went wrong,
never a traceback.
"""

from __future__ import annotations

import functools
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests

from taxi_assets import settings
from taxi_assets.cli import ToolError

if TYPE_CHECKING:
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

# Run statuses as the GraphQL API names them: those a run does not leave.
FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
TIMEOUT_SECONDS = 60
# The tag of every backfill and run a tool launches (a filter of the UI), with the tool's name as its value.
LAUNCHED_BY_TAG = "taxi/launched_by"

WORKSPACE = """
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

# What both ways of launching a backfill answer.
BACKFILL_LAUNCHED = """
fragment launched on LaunchBackfillResult {
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
"""

LAUNCH_BACKFILL = (
    "mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) { ...launched } }"
    + BACKFILL_LAUNCHED
)

REEXECUTE_BACKFILL = (
    "mutation($params: ReexecutionParams!) { reexecutePartitionBackfill(reexecutionParams: $params) { ...launched } }"
    + BACKFILL_LAUNCHED
)

BACKFILL = """
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

RUN_FAILURES = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      eventConnection(limit: 1000) {
        events {
          __typename
          ... on ExecutionStepFailureEvent {
            stepKey
            failureMetadata { description }
            error { className message cause { className message cause { className message } } }
          }
          ... on RunFailureEvent { message }
        }
      }
    }
  }
}
"""

RUN_CREATED = """
query($runId: ID!) { runOrError(runId: $runId) { ... on Run { creationTime } } }
"""

MATERIALIZATIONS = """
query($path: [String!]!, $partitions: [String!], $limit: Int!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: $limit) {
        partition timestamp runId
        metadataEntries {
          label
          ... on TextMetadataEntry { text }
          ... on FloatMetadataEntry { floatValue }
          ... on IntMetadataEntry { intValue }
          ... on UrlMetadataEntry { url }
        }
      }
    }
  }
}
"""

LATEST_RUN_FOR_PARTITION = """
query($path: [String!]!, $partition: String!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode { latestRunForPartition(partition: $partition) { runId status tags { key value } } }
  }
}
"""

LATEST_RUN = """
query($path: [String!]!) {
  assetsLatestInfo(assetKeys: [{path: $path}]) { latestRun { runId status tags { key value } } }
}
"""


def default_url() -> str:
    """The webserver `make up` starts, on this shell's DAGSTER_PORT."""
    return f"http://127.0.0.1:{settings.current().dagster_port}"


@dataclass(frozen=True)
class Job:
    name: str
    location: str
    repository: str


@dataclass(frozen=True)
class Materialization:
    partition: str | None
    timestamp: float  # unix time, seconds
    run_id: str
    metadata: dict  # label → text, number or URL


def root_cause(error: dict) -> str:
    """The innermost error of a chain: Dagster wraps the asset's own exception in a step execution error."""
    while error.get("cause"):
        error = error["cause"]
    return f"{error.get('className') or 'Error'}: {error['message'].strip()}"


class DagsterClient:
    """A Dagster webserver at `url`, as the tools use it."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    @functools.cached_property
    def _graphql_client(self) -> DagsterGraphQLClient:
        """Built once: its first query fetches the server's schema, which polling must not repeat."""
        from dagster_graphql import DagsterGraphQLClient

        parts = urllib.parse.urlsplit(self.url)
        return DagsterGraphQLClient(
            parts.hostname or "",
            port_number=parts.port,
            use_https=parts.scheme == "https",
            path_prefix=parts.path,
            timeout=TIMEOUT_SECONDS,
        )

    # --- through dagster-graphql's client

    def submit(self, job: Job, run_config: dict | None = None, tags: dict[str, str] | None = None) -> str:
        """Launch a run of `job` (queued, then started by the daemon, as from the UI); its run id."""
        from dagster_graphql import DagsterGraphQLClientError

        try:
            return self._graphql_client.submit_job_execution(
                job.name,
                repository_location_name=job.location,
                repository_name=job.repository,
                run_config=run_config or {},
                tags=tags,
            )
        except DagsterGraphQLClientError as error:
            raise self._failed(error, f"{job.name} was not launched") from error

    def run_status(self, run_id: str) -> str:
        """QUEUED, STARTED, SUCCESS, FAILURE, … (DagsterRunStatus's names)."""
        from dagster_graphql import DagsterGraphQLClientError

        try:
            return self._graphql_client.get_run_status(run_id).value
        except DagsterGraphQLClientError as error:
            raise self._failed(error, f"run {run_id}") from error

    def run_created(self, run_id: str) -> float | None:
        """When the run was created (unix time), None for a run the instance does not have."""
        return self.query(RUN_CREATED, {"runId": run_id})["runOrError"].get("creationTime")

    def _failed(self, error: DagsterGraphQLClientError, what: str) -> ToolError:
        """The client's error as one line: its own message quotes the whole query when the transport failed."""
        cause = error.__cause__
        while cause is not None and not isinstance(cause, requests.exceptions.ConnectionError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            return self._unreachable(cause)
        if error.__cause__ is not None:
            return ToolError(f"{what}: {error.__cause__}")
        kind, *detail = error.args or ("error",)
        return ToolError(f"{what}: {kind}{f': {detail[0]}' if detail else ''}")

    def _unreachable(self, error: Exception) -> ToolError:
        # requests nests the socket's reason ("[Errno 111] Connection refused") deep in its message
        reason = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(error))
        return ToolError(
            f"no Dagster webserver at {self.url} ({reason.group(1) if reason else error.__class__.__name__}): start "
            "the platform with `make up`, or pass --url"
        )

    # --- the rest: GraphQL queries of our own

    def query(self, query: str, variables: dict | None = None) -> dict:
        """The `data` of a GraphQL query."""
        try:
            response = requests.post(
                f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=TIMEOUT_SECONDS
            )
            response.raise_for_status()
            answer = response.json()
        except requests.exceptions.ConnectionError as error:
            raise self._unreachable(error) from error
        except (requests.exceptions.RequestException, ValueError) as error:
            raise ToolError(f"the webserver at {self.url} did not answer the query: {error}") from error
        if answer.get("errors"):
            raise ToolError(f"the webserver refused the query: {answer['errors'][0].get('message')}")
        return answer["data"]

    def version(self) -> str:
        """Dagster's version: fails early, and clearly, when no webserver answers."""
        return self.query("query { version }")["version"]

    def workspace(self, timeout: float = 180.0) -> list[dict]:
        """The workspace's code locations, once every one has loaded (a webserver answers before its code has)."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.query(WORKSPACE)["workspaceOrError"]
            if data["__typename"] != "Workspace":
                raise ToolError(f"the webserver has no workspace: {data}")
            entries = data["locationEntries"]
            if entries and all(entry["locationOrLoadError"] for entry in entries):
                return entries
            if time.monotonic() > deadline:
                raise ToolError(f"the code locations did not load within {timeout:.0f} s")
            time.sleep(1)

    def job(self, name: str) -> Job | None:
        """The job `name` of the workspace and where it lives, None when no code location has one."""
        for entry in self.workspace():
            location = entry["locationOrLoadError"]
            if location["__typename"] == "PythonError":
                raise ToolError(f"code location {entry['name']} does not load: {location['message']}")
            for repository in location.get("repositories", []):
                if name in {job["name"] for job in repository["pipelines"]}:
                    return Job(name, entry["name"], repository["name"])
        return None

    def job_assets(self, job: Job) -> list[str]:
        """The keys (`a/b`) of the assets `job` materializes."""
        selector = {"pipelineName": job.name, "repositoryName": job.repository, "repositoryLocationName": job.location}
        nodes = self.query(JOB_ASSETS, {"selector": selector})["assetNodes"]
        return ["/".join(node["assetKey"]["path"]) for node in nodes]

    def launch_backfill(self, assets: list[str], partitions: list[str], tags: dict[str, str] | None = None) -> str:
        """What the UI's Materialize button sends for assets (`a/b` keys) and partitions; the backfill id."""
        params = {
            "assetSelection": [{"path": asset.split("/")} for asset in assets],
            "partitionNames": partitions,
            "tags": [{"key": key, "value": value} for key, value in (tags or {}).items()],
        }
        return self._backfill_id(self.query(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"])

    def reexecute_backfill(self, backfill_id: str) -> str:
        """The UI's "Re-execute from failure" on a finished backfill: a new backfill of what it did not
        materialize; its id."""
        params = {"parentRunId": backfill_id, "strategy": "FROM_FAILURE"}
        return self._backfill_id(self.query(REEXECUTE_BACKFILL, {"params": params})["reexecutePartitionBackfill"])

    @staticmethod
    def _backfill_id(answer: dict) -> str:
        if answer["__typename"] != "LaunchBackfillSuccess":
            detail = answer.get("message") or next(iter(answer.values()))
            raise ToolError(f"the backfill was not launched: {answer['__typename']}: {detail}")
        return answer["backfillId"]

    def backfill(self, backfill_id: str) -> dict:
        """A backfill's status, error and runs (each with its status, tags, asset selection and materializations)."""
        backfill = self.query(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["__typename"] != "PartitionBackfill":
            raise ToolError(f"backfill {backfill_id}: {backfill.get('message', backfill['__typename'])}")
        return backfill

    def run_errors(self, run_id: str, described: bool = False) -> list[str]:
        """Why a run failed: each failed step's innermost error (`step: Class: message`) or, `described`, the
        reason a `dg.Failure` gives (else the innermost message alone); without failed steps, the run's failure."""
        run = self.query(RUN_FAILURES, {"runId": run_id})["runOrError"]
        events = (run or {}).get("eventConnection", {}).get("events", [])
        errors = []
        for event in events:
            if event["__typename"] != "ExecutionStepFailureEvent" or not event.get("error"):
                continue
            error = root_cause(event["error"])
            if described:
                errors.append((event.get("failureMetadata") or {}).get("description") or error.split(": ", 1)[-1])
            else:
                errors.append(f"{event['stepKey']}: {error}")
        return errors or [event["message"] for event in events if event["__typename"] == "RunFailureEvent"]

    def materializations(
        self, asset: str, partitions: list[str] | None = None, limit: int = 1000
    ) -> list[Materialization]:
        """The latest `limit` materializations of `asset` (`a/b`), newest first, of `partitions` only when given."""
        variables = {"path": asset.split("/"), "partitions": partitions, "limit": limit}
        answer = self.query(MATERIALIZATIONS, variables)["assetOrError"] or {}
        return [
            Materialization(
                partition=event["partition"],
                timestamp=float(event["timestamp"]) / 1000,
                run_id=event["runId"],
                metadata={
                    entry["label"]: next(
                        (entry[field] for field in ("text", "floatValue", "intValue", "url") if field in entry), None
                    )
                    for entry in event["metadataEntries"]
                },
            )
            for event in answer.get("assetMaterializations", [])
        ]

    def latest_materialization(self, asset: str, partition: str | None = None) -> Materialization | None:
        """The latest materialization of `asset`'s `partition` (None: an unpartitioned asset); the webserver lists
        them newest first."""
        latest = self.materializations(asset, [partition] if partition else None, limit=1)
        return latest[0] if latest else None

    def latest_run(self, asset: str, partition: str | None = None) -> dict | None:
        """The latest run (id, status, tags) of `asset`'s `partition` (None: an unpartitioned asset)."""
        if partition:
            node = self.query(LATEST_RUN_FOR_PARTITION, {"path": asset.split("/"), "partition": partition})
            return (node["assetNodeOrError"] or {}).get("latestRunForPartition")
        infos = self.query(LATEST_RUN, {"path": asset.split("/")})["assetsLatestInfo"]
        return infos[0]["latestRun"] if infos else None
