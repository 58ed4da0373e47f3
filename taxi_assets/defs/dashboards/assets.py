"""The monitoring's figures on the Evidently UI's dashboards (`make up` serves them on TAXI_EVIDENTLY_PORT), where
Grafana cannot be installed; compose keeps Grafana.

The figures are the ones the monitoring assets computed and pushed to Prometheus: the month's rows of
`drift_metrics`, the latest materializations' metadata of `drift_metrics`, `model_challenge` and `online_drift`.
Nothing is computed again here.
"""

import datetime as dt

import dagster as dg

from taxi_assets.defs.automation import missing_or_deps_updated, since_requested
from taxi_assets.defs.batch_monitoring.resources import MonitoringReports
from taxi_assets.defs.materializations import latest_materialization, latest_metadata, metadata_values
from taxi_assets.defs.model.promotion import MODEL_CHALLENGE
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.resources import DUCKDB_POOL, Warehouse

DRIFT_METRICS = dg.AssetKey("drift_metrics")
ONLINE_DRIFT = dg.AssetKey("online_drift")
WINDOW_FIGURES = ("drift_share", "rmse", "rows", "feedback_rows")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dg.asset(
    partitions_def=monthly_partitions,
    deps=["drift_metrics", "model_challenge"],
    pool=DUCKDB_POOL,
    kinds={"evidently", "duckdb"},
    group_name="monitoring",
    # A month is shown once its drift is known; its challenge (only the months the retraining loop challenged
    # have one) adds the gain when it comes.
    automation_condition=missing_or_deps_updated(missing_allowed=dg.AssetSelection.assets(MODEL_CHALLENGE)),
)
def monitoring_dashboard(
    context: dg.AssetExecutionContext, warehouse: Warehouse, reports: MonitoringReports
) -> dg.MaterializeResult:
    """The month as a point of the Evidently UI's months dashboard: share of drifted features, drift score per
    feature, RMSE against the deployed model's validation RMSE, and the challenger's gain with its minimum for
    promotion. Re-materializing a month replaces its point."""
    month = context.partition_key
    with warehouse.get_connection() as conn:
        rows = conn.execute(
            "SELECT metric, column_or_segment, value FROM drift_metrics WHERE month = $month "
            "AND metric IN ('drift_share', 'rmse', 'drift_score')",
            {"month": month},
        ).fetchall()
    if not rows:
        raise dg.Failure(f"drift_metrics holds no rows of {month}; materialize drift_metrics[{month}] first")
    figures: dict[str, float | None] = {}
    features = []
    for metric, column, value in rows:
        if metric == "drift_score":
            features.append(column)
            figures[f"drift_score/{column}"] = value
        else:
            figures[metric] = value
    drift = latest_metadata(context.instance, DRIFT_METRICS, month) or {}
    challenge = latest_metadata(context.instance, MODEL_CHALLENGE, month) or {}
    figures |= {
        "validation_rmse": _number(drift.get("validation_rmse")),
        "challenger_gain": _number(challenge.get("gain")),
        "challenger_min_gain": _number(challenge.get("min_gain")),
    }
    url = reports.workspace().publish_month_figures(month, figures, sorted(features))
    shown = {name: value for name, value in figures.items() if value is not None}
    return dg.MaterializeResult(metadata={"dashboard": dg.MetadataValue.url(url), **shown})


# When online_drift has changed since the last point, and at most once a minute: the figures are cheap, the
# Evidently import (seconds) is not, and the ingest runs every half minute under traffic. (`on_cron` would miss the
# last change before traffic stops: it wants an update after the latest minute tick.)
# "Changed since the last point" is an online_drift materialization the automation has not requested a point
# for (`since_requested`: the dashboard's own materialization does not count as handling it, or an online_drift
# run that ended seconds after the dashboard's was never shown and `make demo` waited for it in vain). A dashboard
# materialized by hand costs one more run.
ONLINE_DRIFT_UPDATED_SINCE_REQUESTED = since_requested(
    dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated())
)
AT_MOST_ONCE_A_MINUTE = (
    ONLINE_DRIFT_UPDATED_SINCE_REQUESTED
    & dg.AutomationCondition.cron_tick_passed("* * * * *").since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("deps_updated_at_most_once_a_minute")


@dg.asset(
    deps=["online_drift"],
    kinds={"evidently"},
    group_name="online_monitoring",
    automation_condition=AT_MOST_ONCE_A_MINUTE,
)
def online_dashboard(context: dg.AssetExecutionContext, reports: MonitoringReports) -> dg.MaterializeResult:
    """The latest online windows as points of the Evidently UI's windows dashboard (drift share, RMSE, rows with
    feedback per window), taken from `online_drift`'s latest materialization at the time it was computed; the
    dashboard keeps TAXI_EVIDENTLY_WINDOW_DAYS days of points. Materialized by the automation at most once a minute
    while `online_drift` changes."""
    record = latest_materialization(context.instance, ONLINE_DRIFT)
    if record is None:
        raise dg.Failure("online_drift has not been materialized yet")
    drift = metadata_values(record)
    windows = sorted({name.split("/")[0] for name in drift if name.endswith("/rows")})
    figures = {
        window: {
            figure: value
            for figure in WINDOW_FIGURES
            if (value := _number(drift.get(f"{window}/{figure}"))) is not None
        }
        for window in windows
    }
    at = dt.datetime.fromtimestamp(record.timestamp, dt.timezone.utc).replace(tzinfo=None)
    url = reports.publish_windows(figures, at)
    return dg.MaterializeResult(
        metadata={
            "dashboard": dg.MetadataValue.url(url),
            "windows": ", ".join(windows),
            **{f"{window}/{name}": value for window, values in figures.items() for name, value in values.items()},
        }
    )
