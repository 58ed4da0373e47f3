"""The deployed model's reference profile: what the monitoring compares every month and window with."""

import time

import dagster as dg

from taxi_assets import execution
from taxi_assets.core import calibration, profile
from taxi_assets.core.drift import DEFAULT_WINDOW
from taxi_assets.core.drift_scores import ONLINE_FEATURES, SPREAD, WINDOW_KINDS
from taxi_assets.core.model import PREDICTION
from taxi_assets.core.scoring import score, trip_rows
from taxi_assets.defs.automation import missing_or_deps_updated
from taxi_assets.defs.model.assets import deployed_model
from taxi_assets.defs.resources import DUCKDB_POOL, ModelRegistry, Warehouse
from taxi_assets.defs.trip_data.assets import trips


@dg.asset(
    deps=[deployed_model, trips],
    pool=DUCKDB_POOL,
    kinds={"duckdb", "numpy"},
    group_name="model",
    # Recomputed for each deployed model; a new month of trips does not change it.
    automation_condition=missing_or_deps_updated(ignore=dg.AssetSelection.assets("trips")),
)
def reference_profile(
    context: dg.AssetExecutionContext, warehouse: Warehouse, model_registry: ModelRegistry
) -> dg.MaterializeResult:
    """The deployed model's reference profile (DuckDB table `reference_profile`, one JSON row per model tag).

    Its training month scored by the model, described per feature and (day type, hour) slot; drift thresholds
    per window size and kind, calibrated on windows of days the compared statistics never saw (the training month
    cross-fitted over blocks of days, non-overlapping consecutive windows; the validation month); the RMSE bound
    per window size from the validation month's residuals resampled by days (out of sample); effect floors from
    the change between consecutive months (the two months before the training month too, where `trips` has them);
    plausible ranges for the outlier counts and the outlier-share thresholds.
    Batch and online monitoring read it instead of re-reading the reference rows. Recomputed whenever the deployed
    model changes (it depends on `deployed_model`).
    """
    started = time.perf_counter()
    pipeline, model = model_registry.load_deployed()
    reference_month, validation_month = model["training_month"], model["validation_month"]
    with warehouse.get_connection() as conn:
        reference = trip_rows(conn, reference_month)
        validation = trip_rows(conn, validation_month)
        # Consecutive months before the training month widen the calibration and the effect floors.
        earlier = []
        for month in calibration.earlier_months(reference_month):
            frame = trip_rows(conn, month)
            if frame.empty:
                break
            earlier.insert(0, frame)
    if reference.empty:
        raise dg.Failure(f"trips holds no rows of the training month {reference_month}; materialize trips first")
    if validation.empty:
        raise dg.Failure(f"trips holds no rows of the validation month {validation_month}; materialize trips first")
    if validation_month == reference_month:
        context.log.warning(f"{model['tag']} was validated on its training month: the RMSE bound is in-sample")
    # Scoring the months and the calibration take most of the step (a minute under load) and need no warehouse:
    # other runs use it meanwhile.
    with execution.without_pool_slot(context):
        reference, validation = (score(frame, pipeline, model["tag"]) for frame in (reference, validation))
        earlier = [score(frame, pipeline, model["tag"]) for frame in earlier]
        built = calibration.build_profile(
            reference,
            validation,
            model_tag=model["tag"],
            reference_month=reference_month,
            validation_month=validation_month,
            earlier=earlier,
        )
    with warehouse.get_connection() as conn:
        profile.save(conn, built)

    lines = ["| feature | spread | consecutive |", "|---|---:|---:|"]
    for name in [*ONLINE_FEATURES, PREDICTION]:
        cells = [f"{built.threshold('online', kind, name, DEFAULT_WINDOW):.3g}" for kind in WINDOW_KINDS]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return dg.MaterializeResult(
        metadata={
            "model_tag": model["tag"],
            "reference_month": reference_month,
            "validation_month": validation_month,
            "reference_rows": len(reference),
            "validation_rows": len(validation),
            "validation_rmse": built.residuals.rmse,
            f"rmse_bound_{DEFAULT_WINDOW}_spread": built.rmse_bound(DEFAULT_WINDOW, SPREAD),
            f"rmse_bound_{DEFAULT_WINDOW}_consecutive": built.rmse_bound(DEFAULT_WINDOW, "consecutive"),
            f"thresholds_at_{DEFAULT_WINDOW}": dg.MetadataValue.md("\n".join(lines)),
            "calibration_windows": dg.MetadataValue.json(built.thresholds.windows),
            "earlier_months": len(earlier),
            **{f"effect_floor/{name}": built.floors[name] for name in [*ONLINE_FEATURES, PREDICTION]},
            "calibration_sizes": ", ".join(str(size) for size in built.thresholds.sizes),
            "outlier_limits": dg.MetadataValue.json(built.outliers.ranges()),
            "seconds": time.perf_counter() - started,
        }
    )
