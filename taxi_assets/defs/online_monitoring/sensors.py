"""The prediction-log sensor: new records in the store start an ingest of their days, and the ingest backlog is
pushed to the Pushgateway on every tick.

It talks to the store and the Dagster instance only, never to DuckDB: a tick costs a directory listing (or two
MongoDB queries) and must not wait for, or block, the runs holding the warehouse.
"""

import datetime as dt
import time

import dagster as dg

from taxi_assets.core.ingest_cursor import IngestCursor, LastRun, new_requests
from taxi_assets.core.metrics import INGEST_JOB
from taxi_assets.core.online import ingest_samples
from taxi_assets.defs.materializations import latest_materialization
from taxi_assets.defs.model.profile import reference_profile
from taxi_assets.defs.online_monitoring.assets import online_drift, prediction_logs
from taxi_assets.defs.online_monitoring.jobs import online_monitoring_job
from taxi_assets.defs.online_monitoring.resources import PredictionLogStore
from taxi_assets.defs.partitions import prediction_days
from taxi_assets.defs.resources import Pushgateway

BATCH_TAG = "taxi/predlog_watermark"


def _ingested_at(instance: dg.DagsterInstance, day: str) -> float | None:
    """When the run of the latest materialization of prediction_logs[day] was created (unix time): that run holds
    every record the store had then."""
    record = latest_materialization(instance, prediction_logs.key, day)
    if record is None:
        return None
    run = instance.get_run_record_by_id(record.run_id)
    return None if run is None else run.create_timestamp.timestamp()


def _last_ingest_run(instance: dg.DagsterInstance, day: str) -> LastRun | None:
    records = instance.get_run_records(
        dg.RunsFilter(job_name=online_monitoring_job.name, tags={"dagster/partition": day}), limit=1
    )
    if not records:
        return None
    record = records[0]
    return LastRun(record.create_timestamp.timestamp(), record.end_time, record.dagster_run.is_finished)


def _rejudge_request(instance: dg.DagsterInstance, logs: dg.EventLogRecord | None) -> dg.RunRequest | None:
    """An ingest run of the day last ingested, once more, when that ingest ended without judging the windows (its
    online_drift skipped while the deployed model's profile was being built, or failed without one) and a profile
    has been stored since: when traffic stops meanwhile, no next ingest would judge it. One per such ingest run
    (its run key); ingesting a day again is idempotent. `logs`: the latest prediction_logs materialization."""
    if logs is None:
        return None
    drift = latest_materialization(instance, online_drift.key)
    built = latest_materialization(instance, reference_profile.key)
    if (drift is not None and drift.timestamp >= logs.timestamp) or built is None or built.timestamp <= logs.timestamp:
        return None
    run = instance.get_run_by_id(logs.run_id)
    if run is None or not run.is_finished:
        return None
    return dg.RunRequest(run_key=f"rejudge-{logs.run_id}", partition_key=logs.partition_key)


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
    ended without landing in DuckDB, and once more the last ingested day when its windows were not judged for want
    of a profile that has since been stored (`_rejudge_request`); pushes the ingest backlog (job `taxi_ingest`).

    Cursor and backoff: taxi_assets.core.ingest_cursor. A batch stays open until every one of its days is
    confirmed, however old the day gets.
    """
    cursor = IngestCursor.parse(context.cursor)
    ingested_at = {day: _ingested_at(context.instance, day) for day in sorted(cursor.open_days())}
    cursor = cursor.confirmed(ingested_at)
    now = time.time()
    unconfirmed = cursor.unconfirmed(ingested_at)
    last_runs = {day: _last_ingest_run(context.instance, day) for day in sorted(unconfirmed)}
    retries, cursor = cursor.retried(unconfirmed, last_runs, now)
    if retries:
        context.log.warning(f"ingests that did not land are requested again: {[r.run_key for r in retries]}")

    reader = prediction_log.reader()
    changes = reader.changes(cursor.store)
    days = [day for day in changes.days if prediction_days.has_partition_key(day)]
    if skipped := sorted(set(changes.days) - set(days)):
        context.log.warning(f"log days outside the prediction_logs partitions are not ingested: {skipped}")
    run_requests = [
        dg.RunRequest(run_key=request.run_key, partition_key=request.day, tags={BATCH_TAG: request.mark})
        for request in new_requests(changes.cursor, days, retries)
    ]
    cursor = cursor.requested(changes.cursor, days, now)
    # The latest ingest, read once a tick: the day to judge again, and the last success pushed below.
    logs = latest_materialization(context.instance, prediction_logs.key)
    if rejudge := _rejudge_request(context.instance, logs):
        run_requests.append(rejudge)

    pending = reader.pending(cursor.ingested)
    oldest_age = 0.0
    if pending.oldest_ts is not None:
        oldest_age = max(0.0, time.time() - dt.datetime.fromisoformat(pending.oldest_ts).timestamp())
    pushgateway.push(
        INGEST_JOB, {}, ingest_samples(pending.count, oldest_age, logs.timestamp if logs else None), context.log
    )
    return dg.SensorResult(run_requests=run_requests, cursor=cursor.serialize())
