"""Batch monitoring: score every month with the deployed model, compare it with the model's training month."""

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import dagster as dg
from pydantic import Field

from taxi_assets import execution
from taxi_assets.core import profile
from taxi_assets.core.batch import (
    BatchFigures,
    metric_rows,
    month_figures,
    month_start_seconds,
    verdict_html,
    verdict_table,
)
from taxi_assets.core.evidently_report import borough_rmse_gap, build_snapshot, report_frame
from taxi_assets.core.metrics import BATCH_JOB, batch_samples
from taxi_assets.core.model import PREDICTION, error_summary
from taxi_assets.core.scoring import (
    TRIP_COLUMNS,
    predictions_version,
    rows_version,
    score,
    score_trips,
    stored_predictions,
    trip_rows,
    trips_version,
)
from taxi_assets.core.warehouse import BATCH_PREDICTIONS_DDL, DRIFT_METRICS_DDL, replace_partition
from taxi_assets.defs.automation import MISSING_OR_DEPS_UPDATED
from taxi_assets.defs.batch_monitoring.resources import MonitoringReports
from taxi_assets.defs.model.assets import IMPORTANCE_KEY, deployed_model
from taxi_assets.defs.model.profile import reference_profile
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.resources import DUCKDB_POOL, ModelRegistry, Pushgateway, Warehouse
from taxi_assets.defs.trip_data.assets import taxi_zones, trips

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    from evidently.core.report import Snapshot
    from sklearn.pipeline import Pipeline


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
        month_trips, read_version = trip_rows(conn, month), trips_version(conn, month)
    # Scoring needs no warehouse (0.5 s for a month alone, tens of seconds beside other work on two cores): an
    # ingest run takes the slot meanwhile.
    with execution.without_pool_slot(context):
        scored = score(month_trips, pipeline, model["tag"])
    with warehouse.get_connection() as conn:
        if trips_version(conn, month) != read_version:
            # trips[month] was replaced while the slot was lent: score the rows there now, keeping the warehouse,
            # so that what is stored matches the trips it is stored next to.
            context.log.info(f"trips[{month}] changed while it was scored; scoring it again")
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


class BatchDriftConfig(dg.Config):
    report: bool = Field(
        True,
        description=(
            "Render the Evidently HTML report too. Off (e.g. inside a backfill), only `drift_metrics` is "
            "materialized, with every figure and alarm; the report can be rendered later by a run with it on."
        ),
    )


def _previous_month(month: str) -> str:
    import pandas as pd

    return str(pd.Period(month, freq="M") - 1)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "drift_metrics",
            deps=[batch_predictions, taxi_zones, reference_profile],
            kinds={"duckdb", "prometheus"},
            group_name="monitoring",
            automation_condition=MISSING_OR_DEPS_UPDATED,
            description=(
                "Drift and prediction quality of the month against the deployed model's reference profile (drifted "
                "since training) and against the month before (month over month), with effect sizes, drifted "
                "features ranked by the model's permutation importance, outlier shares, and RMSE/MAE overall and "
                "per pickup borough and hour. Verdicts: calibrated tests (taxi_assets.core.drift) and an effect "
                "at least BATCH_MIN_EFFECT. Stored as tidy rows in DuckDB table "
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
            skippable=True,
            description=(
                "Evidently HTML report of the month against the training month: the alarms' verdict per column "
                "(metric `CalibratedDrift`) with the column's distribution against the training month's, the "
                "regression quality (metric `PredictionQuality`: the panels of Evidently's regression preset), and "
                "the verdict table on top. Written to the reports folder (TAXI_REPORTS_DIR) as "
                "`monitoring_report_<month>.html`; skipped when the run config says `report: false`."
            ),
        ),
    ],
    partitions_def=monthly_partitions,
    pool=DUCKDB_POOL,
)
def batch_drift(
    context: dg.AssetExecutionContext,
    config: BatchDriftConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
    pushgateway: Pushgateway,
    reports: MonitoringReports,
) -> Iterator[dg.MaterializeResult]:
    """`drift_metrics` and, unless the run config turns it off, `monitoring_report`: the figures come from the
    project's vectorised maths over the reference profile, the report's drift widgets from the figures and its
    regression quality from the predictions, as Evidently metrics of the project's own."""
    import pandas as pd

    month = context.partition_key
    model = model_registry.deployed()
    # The pipeline scores only a month with no stored predictions (below): most runs never unpickle it (0.1 s).
    pipeline = functools.cache(lambda: model_registry.load(model["tag"]))
    importance = model_registry.info(model["tag"])["metadata"].get(IMPORTANCE_KEY) or None
    with warehouse.get_connection() as conn:
        inputs = _read_inputs(conn, month, model["tag"], config.report)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitoring_report") as pool:

        def draw() -> "Future[tuple[Snapshot, str]] | None":
            # Evidently's page needs only the figures and no warehouse; it is Python work, while queueing for the
            # warehouse again, storing and pushing the figures and recording them mostly wait: on two cores the page
            # is drawn meanwhile.
            if not config.report:
                return None
            return pool.submit(_page, month, figures, inputs.current, reference, inputs.prof.reference_month)

        # The figures, and the scoring of a month with no stored predictions, need no warehouse (a second, tens of
        # seconds under load): an ingest takes it meanwhile.
        with execution.without_pool_slot(context):
            figures, reference = _compute(inputs, pipeline, model["tag"], importance)
            page = draw()
        with warehouse.get_connection() as conn:
            if _versions(conn, inputs.months, model["tag"]) != inputs.versions:
                # An input was replaced while the slot was lent: compute from what is there now, keeping the
                # warehouse, so that the stored figures describe the predictions and profile they are stored beside
                # (the automation would not run this month again: drift_metrics is materialized after its inputs).
                context.log.info(
                    f"the inputs of drift_metrics[{month}] changed while it was computed; computing it again"
                )
                inputs = _read_inputs(conn, month, model["tag"], config.report)
                figures, reference = _compute(inputs, pipeline, model["tag"], importance)
                page = draw()  # the page drawn meanwhile shows the replaced inputs
            prof = inputs.prof
            rows = metric_rows(figures)
            conn.execute(DRIFT_METRICS_DDL)
            conn.register("metric_rows", pd.DataFrame(rows))
            replace_partition(
                conn,
                "month",
                month,
                {"drift_metrics": "SELECT $month, metric, column_or_segment, value FROM metric_rows"},
            )
        # The push, the page and its publication need no warehouse: the next run (an ingest) takes it meanwhile.
        execution.release_pool_slot(context)
        pushed = pushgateway.push(
            BATCH_JOB, {"month": month}, batch_samples(figures, month_start_seconds(month)), context.log
        )
        yield dg.MaterializeResult(
            asset_key="drift_metrics", metadata=_metadata(figures, prof, model, len(rows), pushed)
        )
        if page is None:
            context.log.info(f"monitoring_report[{month}] skipped (run config report: false)")
            return
        snapshot, html = page.result()
    yield _report(month, figures, prof.reference_month, snapshot, html, reports)


def _metadata(figures: BatchFigures, prof: profile.ReferenceProfile, model: dict, row_count: int, pushed: bool) -> dict:
    since, mom = figures.since_training, figures.month_over_month
    gap = borough_rmse_gap(figures.segments)
    ranked = [f"{feature.feature} ({weight:.2f})" for feature, weight, _ in figures.ranking]
    return {
        "dagster/row_count": row_count,
        "reference_month": prof.reference_month,
        "model_tag": model["tag"],
        "rows_scored": figures.rows,
        "drifted_since_training": float(since.dataset_drift),
        "drift_share": float(since.share_drifted),
        "drifted_features": ", ".join(ranked) or "none",
        "importance_weights": figures.weights_from,
        "previous_month": figures.previous_month or "not loaded",
        "drifted_month_over_month": float(mom.dataset_drift) if mom else 0.0,
        "drifted_features_month_over_month": ", ".join(f.feature for f in mom.features if f.drifted) if mom else "",
        "prediction_drift_score": figures.prediction.score,
        "target_drift_score": figures.target.score,
        "rmse": figures.errors.rmse,
        "mae": figures.errors.mae,
        "mean_error": figures.errors.mean_error,
        "validation_rmse": float(model["validation_rmse"]),
        "largest_borough_rmse_gap": float(gap[0].rmse - gap[1].rmse) if gap else 0.0,
        "borough_gap": f"{gap[0].segment} vs {gap[1].segment}" if gap else "fewer than two boroughs",
        **{f"outlier_share/{rule}": share for rule, share in figures.outliers.items()},
        "outlier_examples": dg.MetadataValue.json(figures.outlier_examples),
        "drift": dg.MetadataValue.md(verdict_table(figures)),
        "pushed_to_pushgateway": pushed,
    }


class _Inputs(NamedTuple):
    """What a month's figures and page are computed from, and the version of every input read for them."""

    current: "pd.DataFrame"
    prof: profile.ReferenceProfile
    # The month before and (for the page) the training month: stored predictions, or trips still to score.
    previous: tuple[str, "pd.DataFrame", bool]
    reference: tuple[str, "pd.DataFrame", bool] | None
    months: list[str]
    versions: tuple


def _read_inputs(conn: "duckdb.DuckDBPyConnection", month: str, model_tag: str, report: bool) -> _Inputs:
    """The month's stored predictions and the profile (or a failure saying what to materialize), the month before
    and, for the page, the training month: their stored predictions, else their trips."""
    current = stored_predictions(conn, month, model_tag)
    if current.empty:
        raise dg.Failure(
            f"batch_predictions holds no rows of {month} by {model_tag}; materialize batch_predictions[{month}]"
        )
    prof = profile.load(conn, model_tag)
    if prof is None:
        raise dg.Failure(f"no reference profile for {model_tag}; materialize reference_profile first")

    def rows(of: str) -> tuple[str, "pd.DataFrame", bool]:
        # Months of a backfill run side by side: the month before may have trips but no predictions yet. Scoring
        # its trips (nothing stored) keeps month over month independent of the order runs finish in; the training
        # month need not be a scored partition of its own.
        stored = stored_predictions(conn, of, model_tag)
        return (of, stored, True) if not stored.empty else (of, trip_rows(conn, of), False)

    previous = rows(_previous_month(month))
    reference = rows(prof.reference_month) if report else None
    months = sorted({month, previous[0], *([reference[0]] if reference else [])})
    return _Inputs(current, prof, previous, reference, months, _versions(conn, months, model_tag))


def _versions(conn: "duckdb.DuckDBPyConnection", months: list[str], model_tag: str) -> tuple:
    """The version of every input `_read_inputs` reads for `months`: their predictions and trips, the zones (the
    boroughs of the segments) and the profile."""
    return (
        profile.version(conn, model_tag),
        rows_version(conn, "taxi_zones", ["LocationID", "Borough"], "true", {}),
        *((predictions_version(conn, month, model_tag), trips_version(conn, month)) for month in months),
    )


def _compute(
    inputs: _Inputs, pipeline: "Callable[[], Pipeline]", model_tag: str, importance: dict | None
) -> "tuple[BatchFigures, pd.DataFrame | None]":
    """The month's figures, and the training month's scored rows for the page. A month with no stored predictions
    is scored here, once (the month before is often the training month)."""
    scored: dict[str, pd.DataFrame] = {}

    def ready(of: str, frame: "pd.DataFrame", is_scored: bool) -> "pd.DataFrame":
        if is_scored:
            return frame
        if of not in scored:
            scored[of] = score(frame, pipeline(), model_tag)
        return scored[of]

    previous = ready(*inputs.previous)
    reference = ready(*inputs.reference) if inputs.reference else None
    prof = inputs.prof
    figures = month_figures(inputs.current, prof, prof.arrays(), previous, inputs.previous[0], importance)
    return figures, reference


def _page(
    month: str, figures: BatchFigures, current: "pd.DataFrame", reference: "pd.DataFrame", reference_month: str
) -> "tuple[Snapshot, str]":
    """The Evidently page of the month against the training month's rows, with the alarms' verdicts: the snapshot
    and its HTML with the verdict table on top."""
    verdicts = {f.feature: f for f in (*figures.since_training.features, figures.prediction, figures.target)}
    snapshot = build_snapshot(report_frame(current), report_frame(reference), verdicts)
    html = snapshot.get_html_str(as_iframe=False)
    return snapshot, html.replace("<body>", "<body>" + verdict_html(figures, month, reference_month), 1)


def _report(
    month: str, figures: BatchFigures, reference_month: str, snapshot: "Snapshot", html: str, reports: MonitoringReports
) -> dg.MaterializeResult:
    """The month's page published: the HTML file and the Evidently workspace's snapshot."""
    report, url = reports.publish(month, snapshot, html)
    since = figures.since_training
    summary = (
        f"**{month}** vs {reference_month}: {since.drifted_count} of {len(since.features)} features drifted since "
        f"training; month over month: "
        f"{'drifted' if figures.month_over_month and figures.month_over_month.dataset_drift else 'quiet'}; "
        f"RMSE {figures.errors.rmse:.2f} min, MAE {figures.errors.mae:.2f} min.\n\n{verdict_table(figures)}"
    )
    return dg.MaterializeResult(
        asset_key="monitoring_report",
        metadata={
            "path": dg.MetadataValue.path(str(report)),
            "url": dg.MetadataValue.url(url),
            "size_bytes": report.stat().st_size,
            "summary": dg.MetadataValue.md(summary),
        },
    )
