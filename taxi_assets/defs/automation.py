"""What runs by itself: the automation condition of the assets downstream of the trip data, and the sensor that
evaluates it.

`MISSING_OR_DEPS_UPDATED` is `AutomationCondition.eager()` for every month: an asset partition is requested once
all its upstream partitions exist, when it is missing or an upstream partition has been updated since it was last
requested or materialized, and never while it or an upstream is still running. Unlike `eager()` it is not limited
to the latest partition (TLC months arrive two months late, and a backfilled month is rarely the newest one), and
partitions already missing when automation first looks count too. So every loaded month gets its `trips`,
`batch_predictions`, `drift_metrics` and `monitoring_report` (and `taxi_zones` is loaded once), and they are
redone when their inputs change: a newly deployed model re-scores every loaded month (batch predictions are per
model). A failed partition is not requested again by its condition; the retry sensor below requests it again with
backoff, a bounded number of times, and then raises an alert.
`deployed_model` has no condition: promoting a model is a decision, made by the model's own assets.

The inputs only jobs and sensors write (`WRITTEN_BY_JOBS`: the deployed model, the challenge) count until the
automation has requested the partition, not until it is materialized. Dagster 1.13 resets `eager()`'s `since`
when the partition's own materialization and an input's update are first seen on one tick (it keeps no times
through `|` and `&`), and when its run was running as the input landed: the partition then kept what its run had
read before. Seen in `make demo`: the months dashboard of the challenged month ran from the drift figures, the
challenge landed seconds later, and the dashboard never showed it. The inputs the automation itself writes keep
`eager()`'s reset: they are often updated in the partition's own run, which Dagster's
`executed_with_root_target()` recognises only while no other partition of the input has been updated since, so a
request-only reset re-ran chains of months scored side by side. An input of `WRITTEN_BY_JOBS` materialized by
hand in one run with the partition costs one more run.

The trigger is the transition to missing, not the state: a state-based `missing()` can read a materialization
that has just landed as still missing while its run no longer counts as in progress, and request it twice.

`TAXI_AUTOMATION=off` starts the evaluating sensor stopped, and the new-month sensor (trip_data/sensors.py) and
the retraining loop's promotion sensor (model/sensors.py) too; the toggles in the UI's Automation tab turn each
on or off at any time. That switch and the sensors' intervals are read here, when the definitions load, because
Dagster fixes a sensor's default status and interval then; what the runs and ticks decide at run time (promotion
mode, minimum gain, first deployed month, alert runs) is the `policy` resource (taxi_assets.defs.resources).
"""

import dataclasses
import datetime as dt
import time

import dagster as dg

from taxi_assets import settings
from taxi_assets.core.metrics import AUTOMATION_JOB, automation_samples
from taxi_assets.defs.materializations import latest_materialization
from taxi_assets.defs.resources import Pushgateway

_CURRENT = settings.current()
AC = dg.AutomationCondition

# How the sensors that make the platform run by itself start: the new-month sensor, the retraining loop's
# promotion sensor and the automation condition sensor (the prediction-log ingest always runs).
AUTOMATION_STATUS = dg.DefaultSensorStatus.RUNNING if _CURRENT.automation_on else dg.DefaultSensorStatus.STOPPED


# The inputs no automated run writes: deploy_job and the retraining loop's model_challenge_job, never in a run with
# the partitions that follow them (tests/test_definitions.py checks the definitions against it).
WRITTEN_BY_JOBS = dg.AssetSelection.assets("deployed_model", "model_challenge")


def since_requested(updated: dg.AutomationCondition) -> dg.AutomationCondition:
    """`updated` (an input's update) since the automation last requested the target on a tick that saw no newer
    update: handled by the request, not by the target's own materialization (module docstring)."""
    return updated.since(AC.newly_requested() & ~updated)


def missing_or_deps_updated(
    ignore: dg.AssetSelection | None = None, missing_allowed: dg.AssetSelection | None = None
) -> dg.AutomationCondition:
    """The condition of the assets that follow their inputs, described above. `ignore`: upstream assets whose
    state plays no part (neither their updates nor their absence); `missing_allowed`: upstream assets that may be
    missing (their updates still count)."""
    missing = AC.any_deps_missing()
    updated, in_progress = AC.any_deps_updated(), AC.any_deps_in_progress()
    by_jobs = AC.any_deps_match(AC.newly_updated()).allow(WRITTEN_BY_JOBS)
    if ignore is not None:
        missing, updated, in_progress = missing.ignore(ignore), updated.ignore(ignore), in_progress.ignore(ignore)
        by_jobs = by_jobs.ignore(ignore)
    if missing_allowed is not None:
        missing = missing.ignore(missing_allowed)
    eager = (AC.missing().newly_true() | updated).since(AC.newly_requested() | AC.newly_updated())
    return ((eager | since_requested(by_jobs)) & ~missing & ~in_progress & ~AC.in_progress()).with_label(
        "missing_or_deps_updated"
    )


MISSING_OR_DEPS_UPDATED = missing_or_deps_updated()

# The name Dagster gives the sensor it creates for conditions; defined here so that it runs by default (Dagster's
# own starts stopped) and at the configured interval.
automation_condition_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=AUTOMATION_STATUS,
    minimum_interval_seconds=_CURRENT.automation_check_seconds,
    # Runs, not backfills: a request for several months as a backfill waits for the backfill daemon's next 30 s
    # pass, at every step of the chain (trips -> scores -> drift and report -> dashboard: 30 s each, measured).
    emit_backfills=False,
    description="Evaluates the assets' automation conditions (taxi_assets/defs/automation.py) and requests the "
    "runs they call for.",
)


# Failed automated runs. The conditions above request a partition when it goes missing or its inputs change, not
# when its run fails: one failure (the zone lookup could not be downloaded once) would leave the partition, and
# everything downstream of it, missing until someone clicked. The retry sensor requests the failed assets of such a
# run again after each delay, then gives up and says so (the alert `TaxiAutomationFailedForGood`).
RETRY_DELAYS_SECONDS = (30.0, 120.0, 480.0)
RETRY_NUMBER_TAG = "taxi/retry_number"
RETRY_OF_TAG = "taxi/retry_of"
RETRY_SENSOR = "automation_retry_sensor"
# The runs retried: those the automation condition sensor requested, and the retries themselves.
RETRIED_SENSORS = frozenset({automation_condition_sensor.name, RETRY_SENSOR})
# How far back failed runs are looked at: longer than the whole retry schedule.
RETRY_HORIZON_SECONDS = 24 * 3600.0
RETRY_LOOKBACK_RUNS = 2000


@dataclasses.dataclass(frozen=True)
class FailedAutomation:
    """Assets of a failed automated run (one partition) not materialized since: retried when `due`, or given up."""

    run: dg.DagsterRun
    assets: tuple[dg.AssetKey, ...]
    partition: str | None
    retries: int
    due: float | None  # unix time of the next retry; None: given up

    def describe(self) -> str:
        what = ", ".join(key.to_user_string() for key in self.assets)
        return f"{what}{f'[{self.partition}]' if self.partition else ''} (run {self.run.run_id})"


def _materialized_after(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None, since: float) -> bool:
    record = latest_materialization(instance, key, partition)
    return record is not None and record.timestamp >= since


def _assets_of(instance: dg.DagsterInstance, run: dg.DagsterRun) -> frozenset[dg.AssetKey]:
    """The assets a run was to materialize: its selection, or (a whole job's run) those it planned, for the runs
    retried here only (a query per run)."""
    if run.asset_selection or run.tags.get("dagster/sensor_name") not in RETRIED_SENSORS:
        return run.asset_selection or frozenset()
    planned = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    return frozenset(record.dagster_event.asset_key for record in planned)


def failed_automations(instance: dg.DagsterInstance, now: float) -> list[FailedAutomation]:
    """Every asset partition whose latest run was an automated run that failed, grouped by that run, with its
    retry schedule; a partition materialized since, or with a later run (in progress), is not failed (any more)."""
    records = instance.get_run_records(
        dg.RunsFilter(updated_after=dt.datetime.fromtimestamp(now - RETRY_HORIZON_SECONDS, dt.timezone.utc)),
        limit=RETRY_LOOKBACK_RUNS,
    )
    latest: dict[tuple[dg.AssetKey, str | None], dg.RunRecord] = {}
    for record in sorted(records, key=lambda r: r.create_timestamp):  # oldest first: the latest run wins
        run = record.dagster_run
        for key in _assets_of(instance, run):
            latest[(key, run.tags.get("dagster/partition"))] = record
    failed: dict[str, list[dg.AssetKey]] = {}
    by_run: dict[str, dg.RunRecord] = {}
    for (key, partition), record in latest.items():
        run = record.dagster_run
        if run.status != dg.DagsterRunStatus.FAILURE or run.tags.get("dagster/sensor_name") not in RETRIED_SENSORS:
            continue
        if _materialized_after(instance, key, partition, record.create_timestamp.timestamp()):
            continue
        failed.setdefault(run.run_id, []).append(key)
        by_run[run.run_id] = record
    result = []
    for run_id, keys in failed.items():
        record = by_run[run_id]
        run = record.dagster_run
        retries = int(run.tags.get(RETRY_NUMBER_TAG, "0"))
        ended = record.end_time or record.update_timestamp.timestamp()
        due = ended + RETRY_DELAYS_SECONDS[retries] if retries < len(RETRY_DELAYS_SECONDS) else None
        result.append(FailedAutomation(run, tuple(sorted(keys)), run.tags.get("dagster/partition"), retries, due))
    return result


def retry_requests(failures: list[FailedAutomation], now: float) -> list[dg.RunRequest]:
    """The retries due at `now`: each a run of the failed assets of one failed run, tagged with its number."""
    requests = []
    for failure in failures:
        if failure.due is None or now < failure.due:
            continue
        number = failure.retries + 1
        requests.append(
            dg.RunRequest(
                run_key=f"retry {number} of {len(RETRY_DELAYS_SECONDS)} after run {failure.run.run_id}",
                asset_selection=list(failure.assets),
                partition_key=failure.partition,
                tags={
                    RETRY_NUMBER_TAG: str(number),
                    RETRY_OF_TAG: failure.run.tags.get(RETRY_OF_TAG, failure.run.run_id),
                },
            )
        )
    return requests


@dg.sensor(
    name=RETRY_SENSOR,
    # Every asset an automated run can fail on: a sensor's job has one partitioning, and prediction_logs (daily) is
    # retried by its own sensor (online_monitoring/sensors.py).
    target=dg.AssetSelection.all() - dg.AssetSelection.assets("prediction_logs"),
    minimum_interval_seconds=_CURRENT.automation_check_seconds,
    default_status=AUTOMATION_STATUS,
)
def automation_retry_sensor(context: dg.SensorEvaluationContext, pushgateway: Pushgateway) -> dg.SensorResult:
    """Requests again the assets of an automated run that failed (a partition the automation conditions would not
    request again until its inputs change), after 30 s, 2 min and 8 min; then gives up, counts the partition in
    `taxi_automation_failed_for_good` (job `taxi_automation`, alert TaxiAutomationFailedForGood) and names it in
    its tick. Each retry is a run tagged `taxi/retry_number` and `taxi/retry_of` (the first failed run)."""
    now = time.time()
    failures = failed_automations(context.instance, now)
    requests = retry_requests(failures, now)
    for request in requests:
        context.log.warning(f"{request.run_key}: {', '.join(key.to_user_string() for key in request.asset_selection)}")
    given_up = [failure for failure in failures if failure.due is None]
    waiting = [failure for failure in failures if failure.due is not None and failure.due > now]
    pushgateway.push(AUTOMATION_JOB, {}, automation_samples(len(given_up), len(waiting) + len(requests)), context.log)
    if requests:
        return dg.SensorResult(run_requests=requests)
    reasons = [f"failed for good after {len(RETRY_DELAYS_SECONDS)} retries: {f.describe()}" for f in given_up] + [
        f"retry {f.retries + 1} in {f.due - now:.0f} s: {f.describe()}" for f in waiting
    ]
    return dg.SensorResult(skip_reason="; ".join(reasons) or "no failed automated run")
