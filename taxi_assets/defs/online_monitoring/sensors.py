"""The prediction-log sensor: new records in the store start an ingest of their days, and the ingest backlog is
pushed to the Pushgateway on every tick.

It talks to the store and the Dagster instance only, never to DuckDB: a tick costs a directory listing (or two
MongoDB queries) and must not wait for, or block, the runs holding the warehouse.
"""

import datetime as dt
import hashlib
import json
import time

import dagster as dg

from taxi_assets.core.metrics import INGEST_JOB
from taxi_assets.core.online import ingest_samples
from taxi_assets.defs.online_monitoring.assets import prediction_logs
from taxi_assets.defs.online_monitoring.jobs import online_monitoring_job
from taxi_assets.defs.online_monitoring.resources import PredictionLogStore
from taxi_assets.defs.partitions import prediction_days
from taxi_assets.defs.resources import Pushgateway

BATCH_TAG = "taxi/predlog_watermark"
# Requested batches not yet confirmed by a materialization; past this many (ingest is failing) the two oldest are
# merged, which keeps the cursor small and only delays the confirmation of the older one.
MAX_OPEN_BATCHES = 50
# A day whose requested ingest ended without confirming it (the warehouse was locked, the run was killed) is
# requested again: at the next tick, then 1, 2, 4 … minutes after each further failed attempt, at most every 30.
FIRST_BACKOFF_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 1800.0


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the end of the last failed ingest of a day before requesting it again."""
    return 0.0 if attempts == 0 else min(FIRST_BACKOFF_SECONDS * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)


def watermark(store_cursor: dict) -> str:
    """Short name of a store state: the same records seen from the same cursor give the same run keys."""
    return hashlib.sha1(json.dumps(store_cursor, sort_keys=True).encode()).hexdigest()[:12]


def _ingested_since(instance: dg.DagsterInstance, day: str, since: float) -> bool:
    """Whether prediction_logs[day] was materialized by a run created at or after `since` (unix time), hence
    holding every record the store had then."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=prediction_logs.key, asset_partitions=[day]), limit=1
    ).records
    if not records:
        return False
    run = instance.get_run_record_by_id(records[0].run_id)
    return run is not None and run.create_timestamp.timestamp() >= since


def _last_ingest_run(instance: dg.DagsterInstance, day: str) -> dg.RunRecord | None:
    records = instance.get_run_records(
        dg.RunsFilter(job_name=online_monitoring_job.name, tags={"dagster/partition": day}), limit=1
    )
    return records[0] if records else None


def _retries(
    instance: dg.DagsterInstance, open_batches: list[dict], attempts: dict[str, int], now: float
) -> list[dg.RunRequest]:
    """Requests for the days of open batches whose last ingest ended without confirming them, once their backoff
    has passed. A day with a run queued or in progress waits for it; `attempts` counts the retries per day."""
    unconfirmed: dict[str, dict] = {}
    for batch in open_batches:
        for day in batch["days"]:
            if day not in unconfirmed and not _ingested_since(instance, day, batch["at"]):
                unconfirmed[day] = batch
    retries = []
    for day, batch in sorted(unconfirmed.items()):
        last, tries = _last_ingest_run(instance, day), attempts.get(day, 0)
        if last is not None and not last.dagster_run.is_finished:
            continue
        if last is None or last.create_timestamp.timestamp() < batch["at"] or last.end_time is None:
            # No run since the request (not created yet, or deleted): give the daemon a backoff period first.
            due = batch["at"] + retry_delay(tries + 1)
        else:
            due = last.end_time + retry_delay(tries)
        if now < due:
            continue
        attempts[day] = attempts.get(day, 0) + 1
        mark = watermark(batch["cursor"])
        retries.append(
            dg.RunRequest(run_key=f"{day}@{mark}/retry-{attempts[day]}", partition_key=day, tags={BATCH_TAG: mark})
        )
    for day in set(attempts) - set(unconfirmed):
        del attempts[day]
    return retries


def _last_success(instance: dg.DagsterInstance) -> float | None:
    records = instance.fetch_materializations(prediction_logs.key, limit=1).records
    return records[0].timestamp if records else None


@dg.sensor(
    job=online_monitoring_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def prediction_log_sensor(
    context: dg.SensorEvaluationContext, prediction_log: PredictionLogStore, pushgateway: Pushgateway
) -> dg.SensorResult:
    """Requests a `prediction_logs` run (with `online_drift`) for every UTC day with new records in the
    prediction-log store, keyed by day and store watermark, requests again (with backoff) every day whose ingest
    ended without landing in DuckDB, and pushes the ingest backlog (job `taxi_ingest`).

    Cursor: the store cursor last requested (`store`), the store cursor known to be in DuckDB (`ingested`), the
    requested batches not yet confirmed by a materialization (`open`), and the retries per unconfirmed day
    (`retries`). A batch stays open until every one of its days is confirmed, however old the day gets.
    """
    state = json.loads(context.cursor) if context.cursor else {}
    ingested, open_batches = state.get("ingested"), state.get("open", [])
    attempts: dict[str, int] = state.get("retries", {})
    while open_batches and all(
        _ingested_since(context.instance, d, open_batches[0]["at"]) for d in open_batches[0]["days"]
    ):
        ingested = open_batches.pop(0)["cursor"]
    now = time.time()
    retries = _retries(context.instance, open_batches, attempts, now)
    if retries:
        context.log.warning(f"ingests that did not land are requested again: {[r.run_key for r in retries]}")

    reader = prediction_log.reader()
    changes = reader.changes(state.get("store"))
    days = [day for day in changes.days if prediction_days.has_partition_key(day)]
    if skipped := sorted(set(changes.days) - set(days)):
        context.log.warning(f"log days outside the prediction_logs partitions are not ingested: {skipped}")
    mark = watermark(changes.cursor)
    retried = {request.partition_key for request in retries}
    run_requests = retries + [
        dg.RunRequest(run_key=f"{day}@{mark}", partition_key=day, tags={BATCH_TAG: mark})
        for day in days
        if day not in retried
    ]
    if days:
        open_batches = [*open_batches, {"at": now, "days": days, "cursor": changes.cursor}]
    if len(open_batches) > MAX_OPEN_BATCHES:
        older, newer, *rest = open_batches
        open_batches = [{**newer, "days": sorted(set(older["days"]) | set(newer["days"]))}, *rest]

    pending = reader.pending(ingested)
    oldest_age = 0.0
    if pending.oldest_ts is not None:
        oldest_age = max(0.0, time.time() - dt.datetime.fromisoformat(pending.oldest_ts).timestamp())
    pushgateway.push(
        INGEST_JOB, {}, ingest_samples(pending.count, oldest_age, _last_success(context.instance)), context.log
    )
    cursor = {"store": changes.cursor, "ingested": ingested, "open": open_batches, "retries": attempts}
    return dg.SensorResult(run_requests=run_requests, cursor=json.dumps(cursor, separators=(",", ":")))
