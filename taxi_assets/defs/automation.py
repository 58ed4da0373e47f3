"""What runs by itself: the automation condition of the assets downstream of the trip data, and the sensor that
evaluates it.

`MISSING_OR_DEPS_UPDATED` is `AutomationCondition.eager()` for every month: an asset partition is requested once
all its upstream partitions exist, when it is missing or an upstream partition has been updated since it was last
requested or materialized, and never while it or an upstream is still running. Unlike `eager()` it is not limited
to the latest partition (TLC months arrive two months late, and a backfilled month is rarely the newest one), and
partitions already missing when automation first looks count too. So every loaded month gets its `trips`,
`batch_predictions`, `drift_metrics` and `monitoring_report` (and `taxi_zones` is loaded once), and they are
redone when their inputs change: a newly deployed model re-scores every loaded month (batch predictions are per
model). A failed partition is not retried every tick: it waits for its inputs to change or for a run by hand.
`deployed_model` has no condition: promoting a model is a decision, made by the model's own assets.

The trigger is the transition to missing, not the state: a state-based `missing()` can read a materialization
that has just landed as still missing while its run no longer counts as in progress, and request it twice.

`TAXI_AUTOMATION=off` starts the evaluating sensor stopped, and the new-month sensor (trip_data/sensors.py) and
the retraining loop's promotion sensor (model/sensors.py) too; the toggles in the UI's Automation tab turn each
on or off at any time.
"""

import dagster as dg

from taxi_assets import settings

_CURRENT = settings.current()
AC = dg.AutomationCondition

# How the sensors that make the platform run by itself start: the new-month sensor, the retraining loop's
# promotion sensor and the automation condition sensor (the prediction-log ingest always runs).
AUTOMATION_STATUS = dg.DefaultSensorStatus.RUNNING if _CURRENT.automation_on else dg.DefaultSensorStatus.STOPPED


def missing_or_deps_updated(
    ignore: dg.AssetSelection | None = None, missing_allowed: dg.AssetSelection | None = None
) -> dg.AutomationCondition:
    """The condition of the assets that follow their inputs, described above. `ignore`: upstream assets whose
    state plays no part (neither their updates nor their absence); `missing_allowed`: upstream assets that may be
    missing (their updates still count)."""
    missing = AC.any_deps_missing()
    updated, in_progress = AC.any_deps_updated(), AC.any_deps_in_progress()
    if ignore is not None:
        missing, updated, in_progress = missing.ignore(ignore), updated.ignore(ignore), in_progress.ignore(ignore)
    if missing_allowed is not None:
        missing = missing.ignore(missing_allowed)
    return (
        (AC.missing().newly_true() | updated).since(AC.newly_requested() | AC.newly_updated())
        & ~missing
        & ~in_progress
        & ~AC.in_progress()
    ).with_label("missing_or_deps_updated")


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
