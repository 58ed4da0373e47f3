"""Batch monitoring: score every month with the deployed model, compare it with the model's training month."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from taxi_assets.core.evidently_report import (
    ReportFigures,
    borough_rmse_gap,
    build_snapshot,
    extract_figures,
    implausible_distances,
    metric_rows,
    report_frame,
    segment_errors,
)
from taxi_assets.core.metrics import BATCH_JOB, batch_samples
from taxi_assets.core.model import PREDICTION, error_summary
from taxi_assets.core.scoring import TRIP_COLUMNS, score_trips, stored_predictions
from taxi_assets.core.warehouse import BATCH_PREDICTIONS_DDL, DRIFT_METRICS_DDL, replace_partition
from taxi_assets.defs.automation import MISSING_OR_DEPS_UPDATED
from taxi_assets.defs.batch_monitoring.resources import MonitoringReports
from taxi_assets.defs.model.assets import deployed_model
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.resources import DUCKDB_POOL, ModelRegistry, Pushgateway, Warehouse
from taxi_assets.defs.trip_data.assets import taxi_zones, trips


@dg.asset(
    partitions_def=monthly_partitions,
    deps=[trips, deployed_model],
    pool=DUCKDB_POOL,
    kinds={"duckdb", "sklearn"},
    group_name="monitoring",
    automation_condition=MISSING_OR_DEPS_UPDATED,
)
def batch_predictions(
    context: dg.AssetExecutionContext, warehouse: Warehouse, model_registry: ModelRegistry
) -> dg.MaterializeResult:
    """The deployed model's predicted duration for every trip of the month, next to the actual one and the error.

    Stored in DuckDB table `batch_predictions` (with the model tag), replacing exactly that month in one transaction.
    """
    month = context.partition_key
    pipeline, model = model_registry.load_deployed()
    with warehouse.get_connection() as conn:
        scored = score_trips(conn, month, pipeline, model["tag"])
        if scored.empty:
            raise dg.Failure(f"trips holds no rows for {month}; materialize trips[{month}] first")
        conn.execute(BATCH_PREDICTIONS_DDL)
        conn.register("scored_trips", scored)
        select = f"SELECT $month, model_tag, {', '.join(TRIP_COLUMNS)}, prediction, error FROM scored_trips"
        rows = replace_partition(conn, "month", month, {"batch_predictions": select})["batch_predictions"]
    errors = error_summary(scored["error"])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "model_tag": model["tag"],
            "training_month": model["training_month"],
            "rmse": errors.rmse,
            "mae": errors.mae,
            "mean_error": errors.mean_error,
            "mean_prediction": float(scored[PREDICTION].mean()),
        }
    )


def drift_table(figures: ReportFigures) -> str:
    lines = ["| column | method | score | threshold | drifted |", "|---|---|---:|---:|---|"]
    for drift in (*figures.features.columns, figures.prediction, figures.target):
        lines.append(
            f"| {drift.column} | {drift.method} | {drift.score:.4f} | {drift.threshold:g} | "
            f"{'**yes**' if drift.drifted else 'no'} |"
        )
    return "\n".join(lines)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "drift_metrics",
            deps=[batch_predictions, taxi_zones],
            kinds={"duckdb", "evidently", "prometheus"},
            group_name="monitoring",
            automation_condition=MISSING_OR_DEPS_UPDATED,
            description=(
                "Drift and prediction quality of the month against the deployed model's training month "
                "(the reference).\n\nFeature, prediction and target drift and RMSE/MAE/mean error come from the "
                "Evidently report, RMSE per pickup borough and hour directly. Stored as tidy rows in DuckDB table "
                "`drift_metrics(month, metric, column_or_segment, value)`, replaced per month, and pushed to the "
                "Pushgateway (job `taxi_batch_monitoring`, grouping key `month`) when one is configured."
            ),
        ),
        dg.AssetSpec(
            "monitoring_report",
            deps=["drift_metrics"],
            kinds={"evidently", "html"},
            group_name="monitoring",
            automation_condition=MISSING_OR_DEPS_UPDATED,
            description=(
                "Evidently HTML report of the month against the reference: data drift per feature, prediction "
                "and target drift, and regression quality. Written to the reports folder (TAXI_REPORTS_DIR) as "
                "`monitoring_report_<month>.html`."
            ),
        ),
    ],
    partitions_def=monthly_partitions,
    pool=DUCKDB_POOL,
)
def batch_drift(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
    pushgateway: Pushgateway,
    reports: MonitoringReports,
) -> Iterator[dg.MaterializeResult]:
    """`drift_metrics` and `monitoring_report` from one Evidently run: the report is the costliest part of batch
    monitoring, so the two assets are materialized together rather than computing it twice."""
    month = context.partition_key
    pipeline, model = model_registry.load_deployed()
    reference_month = model["training_month"]
    with warehouse.get_connection() as conn:
        current = stored_predictions(conn, month, model["tag"])
        if current.empty:
            raise dg.Failure(
                f"batch_predictions holds no rows of {month} by {model['tag']}; materialize batch_predictions[{month}]"
            )
        reference = stored_predictions(conn, reference_month, model["tag"])
        reference_source = "batch_predictions"
        if reference.empty:
            # The reference month need not be a scored partition of its own: score its trips here, store nothing.
            reference, reference_source = score_trips(conn, reference_month, pipeline, model["tag"]), "trips"
        if reference.empty:
            raise dg.Failure(f"trips holds no rows of the reference month {reference_month}")

    # The report takes seconds: compute it with the warehouse closed, then write the month in one short session.
    current_frame = report_frame(current)
    snapshot = build_snapshot(current_frame, report_frame(reference))
    figures = extract_figures(snapshot.dict())
    segments = segment_errors(current)
    rows = metric_rows(figures, segments, len(current), implausible_distances(current_frame))
    with warehouse.get_connection() as conn:
        conn.execute(DRIFT_METRICS_DDL)
        conn.register("metric_rows", pd.DataFrame(rows))
        replace_partition(
            conn, "month", month, {"drift_metrics": "SELECT $month, metric, column_or_segment, value FROM metric_rows"}
        )
    pushed = pushgateway.push(BATCH_JOB, {"month": month}, batch_samples(figures, segments, len(current)), context.log)

    gap = borough_rmse_gap(segments)
    features = figures.features
    yield dg.MaterializeResult(
        asset_key="drift_metrics",
        metadata={
            "dagster/row_count": len(rows),
            "reference_month": reference_month,
            "reference_rows_from": reference_source,
            "model_tag": model["tag"],
            "rows_scored": len(current),
            "share_drifted": float(features.share_drifted),
            "dataset_drift": float(features.dataset_drift),
            "drifted_features": ", ".join(c.column for c in features.columns if c.drifted) or "none",
            "prediction_drift_score": figures.prediction.score,
            "target_drift_score": figures.target.score,
            "rmse": figures.rmse,
            "mae": figures.mae,
            "mean_error": figures.mean_error,
            "validation_rmse": float(model["validation_rmse"]),
            "largest_borough_rmse_gap": float(gap[0].rmse - gap[1].rmse) if gap else 0.0,
            "borough_gap": f"{gap[0].segment} vs {gap[1].segment}" if gap else "fewer than two boroughs",
            "drift": dg.MetadataValue.md(drift_table(figures)),
            "pushed_to_pushgateway": pushed,
        },
    )

    report, url = reports.publish(month, snapshot, snapshot.get_html_str(as_iframe=False))
    summary = (
        f"**{month}** vs {reference_month}: {features.drifted_count} of {len(features.columns)} features drifted "
        f"(dataset drift: {'yes' if features.dataset_drift else 'no'}); RMSE {figures.rmse:.2f} min, "
        f"MAE {figures.mae:.2f} min, mean error {figures.mean_error:+.2f} min.\n\n{drift_table(figures)}"
    )
    yield dg.MaterializeResult(
        asset_key="monitoring_report",
        metadata={
            "path": dg.MetadataValue.path(str(report)),
            "url": dg.MetadataValue.url(url),
            "size_bytes": report.stat().st_size,
            "summary": dg.MetadataValue.md(summary),
        },
    )
