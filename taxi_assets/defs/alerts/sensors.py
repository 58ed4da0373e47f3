"""alerts_sensor: every alert that starts or resolves in Alertmanager becomes an observation of the asset it is
about (its `asset` annotation; a month's partition, or the prediction-log day), with its labels, summary,
description and runbook link, so the asset's page in the Dagster UI shows its alarm history beside its
materializations. With TAXI_ALERT_RUNS=on, an actionable alert whose runbook names a run requests it once per
episode (taxi_assets.core.alerts.ALERT_RUNS).

The sensor reads Alertmanager's API and the Dagster instance, never DuckDB. Alertmanager unreachable: the tick is
skipped and says so, and the known alerts stay known (none is recorded as resolved because nobody could look).
"""

import json
import time

import dagster as dg
import requests

from taxi_assets import settings
from taxi_assets.core.alerts import ALERT_RUNS, FIRING, AlertEvent, describe, diff, event_metadata, parse_alerts
from taxi_assets.core.alerts import partition_of as alert_partition
from taxi_assets.defs.alerts.resources import Alertmanager
from taxi_assets.defs.model.jobs import model_challenge_job
from taxi_assets.defs.partitions import monthly_partitions, prediction_days
from taxi_assets.defs.resources import AutomationPolicy
from taxi_assets.defs.trip_data.assets import trips

ALERT_TAG = "taxi/alert"
JOBS = {model_challenge_job.name: model_challenge_job}


def _partitioning(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    if partitions_def == monthly_partitions:
        return "month"
    if partitions_def == prediction_days:
        return "day"
    return None


def _metadata_value(name: str, value: object) -> dg.MetadataValue:
    if isinstance(value, dict):
        return dg.MetadataValue.json(value)
    if isinstance(value, float):
        return dg.MetadataValue.timestamp(value) if name.endswith("_at") else dg.MetadataValue.float(value)
    if name.endswith("_url") and isinstance(value, str):
        # Runbook links in alerts.yml are paths in this repository (docs/runbooks.md#section).
        return dg.MetadataValue.url(value) if "://" in value else dg.MetadataValue.path(value)
    return dg.MetadataValue.text(str(value))


def observation(
    context: dg.SensorEvaluationContext, event: AlertEvent
) -> tuple[dg.AssetObservation | None, str | None]:
    """The observation recording `event` on its asset, or None and why not."""
    alert = event.alert
    if not alert.asset:
        return None, f"{alert.name} names no asset (annotation `asset`)"
    key = dg.AssetKey.from_user_string(alert.asset)
    graph = context.repository_def.asset_graph
    if not graph.has(key):
        return None, f"{alert.name} names an asset this code location does not have: {alert.asset}"
    partitions_def = graph.get(key).partitions_def
    partition = alert_partition(alert, _partitioning(partitions_def))
    if partitions_def is not None and (partition is None or not partitions_def.has_partition_key(partition)):
        partition = None  # still recorded, on the asset as a whole
    metadata = {name: _metadata_value(name, value) for name, value in event_metadata(event).items()}
    return dg.AssetObservation(key, description=describe(event), metadata=metadata, partition=partition), None


def run_request(context: dg.SensorEvaluationContext, event: AlertEvent) -> dg.RunRequest | None:
    """The run the alert's runbook names, for an actionable alert that has just started; None otherwise."""
    alert = event.alert
    job_name = ALERT_RUNS.get(alert.name)
    if event.status != FIRING or job_name is None or not alert.actionable:
        return None
    months = sorted(context.instance.get_materialized_partitions(trips))
    if not months:
        context.log.info(f"{alert.name}: no month of trips is loaded, so {job_name} has nothing to run on")
        return None
    return dg.RunRequest(
        job_name=job_name,
        partition_key=months[-1],
        run_key=f"alert {alert.episode}: {job_name} {months[-1]}",
        tags={ALERT_TAG: alert.name},
    )


@dg.sensor(
    jobs=list(JOBS.values()),
    minimum_interval_seconds=30,
    # Recording what happened is monitoring, not automation: it runs whatever TAXI_AUTOMATION says (runs it
    # requests follow TAXI_ALERT_RUNS).
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def alerts_sensor(
    context: dg.SensorEvaluationContext, alertmanager: Alertmanager, policy: AutomationPolicy
) -> dg.SensorResult | dg.SkipReason:
    """Records every alert that starts or resolves in Alertmanager (TAXI_ALERTMANAGER_URL) as an observation of the
    asset it is about, and requests the run an actionable alert's runbook names (TAXI_ALERT_RUNS=on).

    Cursor: the alert episodes (fingerprint and start) seen firing at the last tick, with what the history needs to
    record their resolution."""
    if not alertmanager.enabled:
        return dg.SkipReason("TAXI_ALERTMANAGER_URL is not set: no alerts are read")
    now = time.time()
    try:
        alerts = parse_alerts(alertmanager.alerts())
        uptime = alertmanager.uptime_seconds(now)
    except (requests.RequestException, ValueError, KeyError) as error:
        return dg.SkipReason(
            f"Alertmanager at {alertmanager.address} could not be read ({settings.redact(str(error))}): the "
            f"alerts known so far stay as they were"
        )
    known = json.loads(context.cursor) if context.cursor else {}
    can_resolve = uptime >= alertmanager.restart_grace_seconds
    events, known = diff(known, alerts, now, can_resolve)
    observations, run_requests = [], []
    for event in events:
        recorded, reason = observation(context, event)
        if recorded is None:
            context.log.warning(f"{event.alert.name} {event.status} is not recorded: {reason}")
        else:
            observations.append(recorded)
        if policy.alert_runs == "on" and (request := run_request(context, event)):
            run_requests.append(request)
    if events:
        context.log.info("; ".join(describe(event) for event in events))
    return dg.SensorResult(
        asset_events=observations,
        run_requests=run_requests,
        cursor=json.dumps(known, separators=(",", ":"), sort_keys=True),
    )
