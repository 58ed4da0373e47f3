"""The deployed model's reference profile: what the monitoring compares every month and window with."""

import time
from typing import TYPE_CHECKING, NamedTuple

import dagster as dg

from taxi_assets import execution
from taxi_assets.core import calibration, profile
from taxi_assets.core.drift import DEFAULT_WINDOW
from taxi_assets.core.drift_scores import ONLINE_FEATURES, SPREAD, WINDOW_KINDS
from taxi_assets.core.model import PREDICTION
from taxi_assets.core.scoring import score, trip_rows, trips_version
from taxi_assets.defs.automation import missing_or_deps_updated
from taxi_assets.defs.model.assets import deployed_model
from taxi_assets.defs.resources import DUCKDB_POOL, ModelRegistry, Warehouse
from taxi_assets.defs.trip_data.assets import trips

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    from sklearn.pipeline import Pipeline


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
    if validation_month == reference_month:
        context.log.warning(f"{model['tag']} was validated on its training month: the RMSE bound is in-sample")
    with warehouse.get_connection() as conn:
        months = _read_months(conn, reference_month, validation_month)
    # Scoring the months and the calibration take most of the step (a minute under load) and need no warehouse:
    # other runs use it meanwhile.
    with execution.without_pool_slot(context):
        built = _build(months, pipeline, model)
    with warehouse.get_connection() as conn:
        if any(trips_version(conn, month) != version for month, version in months.versions.items()):
            # A month was replaced while the slot was lent: build from the trips there now, keeping the warehouse,
            # so that the profile describes the trips it is stored beside.
            context.log.info("trips changed while the profile was built; building it again")
            months = _read_months(conn, reference_month, validation_month)
            built = _build(months, pipeline, model)
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
            "reference_rows": len(months.reference),
            "validation_rows": len(months.validation),
            "validation_rmse": built.residuals.rmse,
            f"rmse_bound_{DEFAULT_WINDOW}_spread": built.rmse_bound(DEFAULT_WINDOW, SPREAD),
            f"rmse_bound_{DEFAULT_WINDOW}_consecutive": built.rmse_bound(DEFAULT_WINDOW, "consecutive"),
            f"thresholds_at_{DEFAULT_WINDOW}": dg.MetadataValue.md("\n".join(lines)),
            "calibration_windows": dg.MetadataValue.json(built.thresholds.windows),
            "earlier_months": len(months.earlier),
            **{f"effect_floor/{name}": built.floors[name] for name in [*ONLINE_FEATURES, PREDICTION]},
            "calibration_sizes": ", ".join(str(size) for size in built.thresholds.sizes),
            "outlier_limits": dg.MetadataValue.json(built.outliers.ranges()),
            "seconds": time.perf_counter() - started,
        }
    )


class _Months(NamedTuple):
    """The trips a profile is built from, and the version (`trips_version`) of every month read for it."""

    reference: "pd.DataFrame"
    validation: "pd.DataFrame"
    earlier: "list[pd.DataFrame]"
    versions: dict[str, tuple[int, int]]


def _read_months(conn: "duckdb.DuckDBPyConnection", reference_month: str, validation_month: str) -> _Months:
    """The training and validation months' trips, and the consecutive months before the training month that `trips`
    has (they widen the calibration and the effect floors)."""
    versions = {}

    def read(month: str) -> "pd.DataFrame":
        versions[month] = trips_version(conn, month)
        return trip_rows(conn, month)

    reference, validation, earlier = read(reference_month), read(validation_month), []
    for month in calibration.earlier_months(reference_month):
        frame = read(month)
        if frame.empty:
            break
        earlier.insert(0, frame)
    if reference.empty:
        raise dg.Failure(f"trips holds no rows of the training month {reference_month}; materialize trips first")
    if validation.empty:
        raise dg.Failure(f"trips holds no rows of the validation month {validation_month}; materialize trips first")
    return _Months(reference, validation, earlier, versions)


def _build(months: _Months, pipeline: "Pipeline", model: dict) -> profile.ReferenceProfile:
    """The months scored by the deployed pipeline, then the profile calibrated on them."""
    reference, validation = (score(frame, pipeline, model["tag"]) for frame in (months.reference, months.validation))
    return calibration.build_profile(
        reference,
        validation,
        model_tag=model["tag"],
        reference_month=model["training_month"],
        validation_month=model["validation_month"],
        earlier=[score(frame, pipeline, model["tag"]) for frame in months.earlier],
    )
