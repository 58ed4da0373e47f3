"""The ride-duration model: one trained per month behind a quality gate, and the one chosen for serving."""

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from taxi_assets import settings
from taxi_assets.core.metrics import BATCH_JOB
from taxi_assets.core.model import (
    BASELINE_RECIPE,
    DEFAULT_RECIPE,
    FEATURE_FIELDS,
    TARGET,
    evaluate,
    timed_train,
    train,
)
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.resources import DEPLOYED_MODEL, DUCKDB_POOL, ModelRegistry, Pushgateway, Warehouse
from taxi_assets.defs.trip_data.assets import trips

TRAINED_MODEL = "taxi_duration"
GATE_CHECK = "beats_seed_baseline"
GATE_LABEL = "quality_gate"


class DurationModelConfig(dg.Config):
    recipe: str = Field(DEFAULT_RECIPE, description="Model recipe from taxi_assets.core.model: hgb or seed.")


class DeployedModelConfig(dg.Config):
    training_month: str = Field(
        "", description="Month whose model to deploy (YYYY-MM); empty means the TAXI_DEPLOYED_MONTH setting."
    )
    recipe: str = Field(DEFAULT_RECIPE, description="Recipe of the model to deploy.")


def month_trips(conn: duckdb.DuckDBPyConnection, month: str) -> pd.DataFrame:
    """The model's fields and target for one month of `trips`; empty when that month is not loaded."""
    return conn.execute(
        f"SELECT {', '.join(FEATURE_FIELDS)}, {TARGET} FROM trips WHERE month = $month", {"month": month}
    ).df()


def quality_gate(metrics: dict, baseline_rmse: float) -> dg.AssetCheckResult:
    """Pass when every prediction is a number and the RMSE is no worse than the seed recipe's on the same rows."""
    return dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=metrics["nan_predictions"] == 0 and metrics["rmse"] <= baseline_rmse,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rmse": metrics["rmse"],
            "seed_rmse": baseline_rmse,
            "nan_predictions": metrics["nan_predictions"],
        },
    )


@dg.asset(
    partitions_def=monthly_partitions,
    deps=[trips],
    pool=DUCKDB_POOL,
    kinds={"sklearn", "bentoml"},
    group_name="model",
    check_specs=[
        dg.AssetCheckSpec(
            GATE_CHECK,
            asset="duration_model",
            blocking=True,
            description="Predictions are all numbers and the RMSE is no worse than the seed recipe's (ERROR).",
        )
    ],
)
def duration_model(
    context: dg.AssetExecutionContext,
    config: DurationModelConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
) -> dg.MaterializeResult:
    """Ride-duration model trained on one month of trips and validated on the following month.

    Saved to the BentoML store as `taxi_duration` (labels: training_month, recipe, quality_gate). When the
    following month is not in DuckDB yet, it is validated on its own training month and the metadata says so.
    The seed recipe is trained on the same rows as the baseline the quality gate compares with.
    """
    month = context.partition_key
    next_month = monthly_partitions.get_next_partition_key(month)
    with warehouse.get_connection() as conn:
        training = month_trips(conn, month)
        validation = month_trips(conn, next_month) if next_month else pd.DataFrame()
    if training.empty:
        raise dg.Failure(f"trips holds no rows for {month}; materialize trips[{month}] first")
    validation_month = next_month
    if validation.empty:
        context.log.warning(f"trips for {next_month} are not loaded: validating on the training month {month}")
        validation, validation_month = training, month

    pipeline, seconds = timed_train(training, config.recipe)
    metrics = evaluate(pipeline, validation)
    baseline = pipeline if config.recipe == BASELINE_RECIPE else train(training, BASELINE_RECIPE)
    baseline_rmse = evaluate(baseline, validation)["rmse"]
    gate = quality_gate(metrics, baseline_rmse)

    tag = model_registry.save(
        pipeline,
        TRAINED_MODEL,
        labels={"training_month": month, "recipe": config.recipe, GATE_LABEL: "passed" if gate.passed else "failed"},
        metadata={
            "validation_month": validation_month,
            "validation_rmse": metrics["rmse"],
            "validation_mae": metrics["mae"],
            "validation_mean_error": metrics["mean_error"],
            "seed_rmse": baseline_rmse,
            "training_rows": len(training),
        },
    )
    return dg.MaterializeResult(
        metadata={
            "recipe": config.recipe,
            "training_rows": len(training),
            "validation_month": validation_month,
            "validated_on": "following month" if validation_month != month else "training month (in-sample)",
            "validation_rmse": metrics["rmse"],
            "validation_mae": metrics["mae"],
            "validation_mean_error": metrics["mean_error"],
            "training_seconds": seconds,
            "model_size_bytes": model_registry.info(tag)["size_bytes"],
            "bentoml_tag": tag,
        },
        check_results=[gate],
    )


@dg.asset(deps=[duration_model], kinds={"bentoml"}, group_name="model")
def deployed_model(
    context: dg.AssetExecutionContext,
    config: DeployedModelConfig,
    model_registry: ModelRegistry,
    pushgateway: Pushgateway,
) -> dg.MaterializeResult:
    """The model that batch scoring and the Bento service use: `taxi_duration_deployed:latest`.

    A copy of the newest `taxi_duration` model for the configured training month and recipe, refused unless it
    passed its quality gate. When it replaces another model, the batch monitoring figures of the previous one
    (and of its reference month) are deleted from the Pushgateway, so that batch alerts describe this model only.
    """
    month = config.training_month or settings.current().deployed_month
    source_tag = model_registry.latest(TRAINED_MODEL, {"training_month": month, "recipe": config.recipe})
    if source_tag is None:
        raise dg.Failure(
            f"no {TRAINED_MODEL} model for {month} with recipe {config.recipe}: materialize duration_model[{month}]"
        )
    source = model_registry.info(source_tag)
    if source["labels"].get(GATE_LABEL) != "passed":
        raise dg.Failure(
            f"{source_tag} did not pass its quality gate ({GATE_CHECK}); it is not deployed",
            metadata={"source_tag": source_tag, "validation_rmse": source["metadata"]["validation_rmse"]},
        )
    validation = {name: source["metadata"][name] for name in ("validation_month", "validation_rmse", "validation_mae")}
    previous = model_registry.latest(DEPLOYED_MODEL, {})
    previous_source = model_registry.info(previous)["labels"].get("source_tag") if previous else None
    tag = model_registry.save(
        model_registry.load(source_tag),
        DEPLOYED_MODEL,
        labels={"source_tag": source_tag, "training_month": month, "recipe": config.recipe},
        metadata=validation,
    )
    context.log.info(f"deployed {source_tag} as {tag}")
    stale_months = []
    if previous_source != source_tag and pushgateway.enabled:
        stale_months = [group.get("month", "") for group in pushgateway.delete_groups(BATCH_JOB, context.log)]
        context.log.info(
            f"{previous_source or 'no model'} was deployed before: the batch monitoring figures of months "
            f"{stale_months} are deleted from the Pushgateway; materialize batch monitoring to monitor {source_tag}"
        )
    return dg.MaterializeResult(
        metadata={
            "deployed_tag": tag,
            "source_tag": source_tag,
            "training_month": month,
            "recipe": config.recipe,
            "validation_month": validation["validation_month"],
            "validation_rmse": float(validation["validation_rmse"]),
            "replaced_source_tag": previous_source or "",
            "stale_batch_months_deleted": len(stale_months),
        }
    )
