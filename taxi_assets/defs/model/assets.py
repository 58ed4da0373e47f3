"""The ride-duration model: one trained per month behind a quality gate, the one chosen for serving, and the monthly
challenge of the deployed champion by a model retrained on newer data."""

import time
from typing import TYPE_CHECKING

import dagster as dg
import duckdb
from pydantic import Field

from taxi_assets import execution
from taxi_assets.core import deployment
from taxi_assets.core.deployment import GATE_CHECK, GATE_LABEL, TRAINED_MODEL
from taxi_assets.core.metrics import BATCH_JOB, CHALLENGE_JOB, challenge_samples
from taxi_assets.core.model import (
    BASELINE_RECIPE,
    DEFAULT_RECIPE,
    FEATURE_FIELDS,
    IMPORTANCE_REPEATS,
    IMPORTANCE_ROWS,
    TARGET,
    challenger_gain,
    evaluate,
    permutation_importance,
    timed_train,
    train,
)
from taxi_assets.core.promotion import wins
from taxi_assets.defs.model.promotion import MODEL_CHALLENGE, promotion_decision
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.resources import (
    DEPLOYED_MODEL,
    DUCKDB_POOL,
    AutomationPolicy,
    ModelRegistry,
    Pushgateway,
    Warehouse,
)
from taxi_assets.defs.trip_data.assets import trips

if TYPE_CHECKING:
    import pandas as pd

# BentoML metadata key of the stored models (trained and deployed) that the drift monitoring reads.
IMPORTANCE_KEY = "permutation_importance"


class DurationModelConfig(dg.Config):
    recipe: str = Field(DEFAULT_RECIPE, description="Model recipe from taxi_assets.core.model: hgb_te, hgb or seed.")


class DeployedModelConfig(dg.Config):
    """Empty: promote the pending challenger (TAXI_PROMOTION=manual: this is the approval), else the first
    deployment of the TAXI_DEPLOYED_MONTH model. At most one field set chooses the model explicitly."""

    training_month: str = Field("", description="Deploy the newest gated model trained on this month (YYYY-MM).")
    recipe: str = Field(DEFAULT_RECIPE, description="Recipe of the model that training_month names.")
    source_tag: str = Field("", description="Deploy exactly this taxi_duration model (name:version).")
    rollback: bool = Field(False, description="Deploy again the model deployed before the current one.")
    challenge_month: str = Field(
        "", description="Promote the challenger of model_challenge[month] (what model_promotion_sensor sets)."
    )


class ModelChallengeConfig(dg.Config):
    recipe: str = Field(DEFAULT_RECIPE, description="Recipe of the challenger.")


def month_trips(conn: duckdb.DuckDBPyConnection, month: str) -> "pd.DataFrame":
    """The model's fields and target for one month of `trips`; empty when that month is not loaded."""
    return conn.execute(
        f"SELECT {', '.join(FEATURE_FIELDS)}, {TARGET} FROM trips WHERE month = $month", {"month": month}
    ).df()


def loaded_month_after(conn: duckdb.DuckDBPyConnection, month: str) -> str | None:
    """The first month after `month` that `trips` holds (normally the next one; across a gap the next loaded)."""
    return conn.execute("SELECT min(month) FROM trips WHERE month > $month", {"month": month}).fetchone()[0]


def loaded_month_before(conn: duckdb.DuckDBPyConnection, month: str) -> str | None:
    return conn.execute("SELECT max(month) FROM trips WHERE month < $month", {"month": month}).fetchone()[0]


def quality_gate(
    metrics: dict, baseline_rmse: float, training_month: str = "", validation_month: str = ""
) -> dg.AssetCheckResult:
    """Pass when every prediction is a number, the RMSE is no worse than the seed recipe's on the same rows, and the
    validation month is the month after the training month (months apart, the profile's thresholds and RMSE bound
    would count every month's change between them as ordinary: a gap is refused, with the month to load)."""
    following = monthly_partitions.get_next_partition_key(training_month) if training_month else validation_month
    reasons = []
    if metrics["nan_predictions"]:
        reasons.append(f"{metrics['nan_predictions']} predictions are not numbers")
    if metrics["rmse"] > baseline_rmse:
        reasons.append(f"RMSE {metrics['rmse']:.3f} is worse than the seed recipe's {baseline_rmse:.3f}")
    if validation_month != following:
        reasons.append(
            f"validated on {validation_month}, not on {following}, the month after {training_month}: "
            f"materialize trips[{following}] and retrain"
        )
    return dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=not reasons,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(reasons) or "passed",
        metadata={
            "rmse": metrics["rmse"],
            "seed_rmse": baseline_rmse,
            "nan_predictions": metrics["nan_predictions"],
            "validation_month": validation_month,
        },
    )


def importance_metadata(importance: dict[str, float]) -> dict:
    """Permutation importance as a markdown table and one float per input (the UI plots floats)."""
    lines = ["| input | RMSE increase when shuffled (min) |", "|---|---:|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in sorted(importance.items(), key=lambda item: -item[1])]
    return {
        IMPORTANCE_KEY: dg.MetadataValue.md("\n".join(lines)),
        **{f"importance_{name}": float(value) for name, value in importance.items()},
    }


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
    """Ride-duration model trained on one month of trips and validated on the following loaded month.

    Never validated on its own training month: until a later month of trips is loaded, the partition fails and
    names the month to load. Saved to the BentoML store as `taxi_duration` (labels: training_month, recipe,
    quality_gate; metadata: validation figures and `permutation_importance`, the RMSE increase in minutes when
    one input is shuffled on a fixed sample of the validation month). The seed recipe is trained on the same
    rows as the baseline the quality gate compares with.
    """
    import pandas as pd

    month = context.partition_key
    with warehouse.get_connection() as conn:
        training = month_trips(conn, month)
        validation_month = loaded_month_after(conn, month)
        validation = month_trips(conn, validation_month) if validation_month else pd.DataFrame()
    # The rest (training, seconds to minutes) needs no warehouse: other runs take it meanwhile.
    execution.release_pool_slot(context)
    if training.empty:
        raise dg.Failure(f"trips holds no rows for {month}; materialize trips[{month}] first")
    if validation.empty:
        following = monthly_partitions.get_next_partition_key(month) or "the following month"
        raise dg.Failure(
            f"duration_model[{month}] needs a later month to validate on, and trips holds none after {month}: "
            f"materialize trips[{following}]. A model is never gated or deployed on its own training month.",
            metadata={"training_month": month, "month_to_load": following},
        )

    pipeline, seconds = timed_train(training, config.recipe)
    metrics = evaluate(pipeline, validation)
    baseline = pipeline if config.recipe == BASELINE_RECIPE else train(training, BASELINE_RECIPE)
    baseline_rmse = evaluate(baseline, validation)["rmse"]
    gate = quality_gate(metrics, baseline_rmse, month, validation_month)
    started = time.perf_counter()
    importance = permutation_importance(pipeline, validation)
    importance_seconds = time.perf_counter() - started

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
            IMPORTANCE_KEY: importance,
        },
    )
    return dg.MaterializeResult(
        metadata={
            "recipe": config.recipe,
            "training_rows": len(training),
            "validation_month": validation_month,
            "validation_rmse": metrics["rmse"],
            "validation_mae": metrics["mae"],
            "validation_mean_error": metrics["mean_error"],
            "training_seconds": seconds,
            **importance_metadata(importance),
            "importance_rows": min(IMPORTANCE_ROWS, len(validation)),
            "importance_repeats": IMPORTANCE_REPEATS,
            "importance_seconds": importance_seconds,
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
    policy: AutomationPolicy,
) -> dg.MaterializeResult:
    """The model that batch scoring and the Bento service use: `taxi_duration_deployed:latest`, a copy of one
    gated `taxi_duration` model (labels: source_tag, training_month, recipe; its validation figures and
    permutation importance copied into the metadata).

    Which model (taxi_assets.core.deployment): a promotion (the challenger of the newest `model_challenge` that
    beat the deployed champion by the `policy` resource's minimum gain), the first deployment (the policy's
    deployed month), or an explicit choice in the config (a training month, a source tag, or a rollback to the
    model deployed before). Refused unless the model passed its quality gate on a month after its training month.
    Each materialization says why (`reason`), the policy it applied, and, for a promotion, the figures that
    justified it. When it replaces another model, the batch monitoring
    figures of the previous one (and of its reference month) are deleted from the Pushgateway, so that batch
    alerts describe this model only.
    """
    deployed = [version["labels"]["source_tag"] for version in model_registry.history(DEPLOYED_MODEL)]
    current_source = deployed[0] if deployed else None
    trained = [
        deployment.StoredModel(version["tag"], version["labels"]) for version in model_registry.history(TRAINED_MODEL)
    ]
    try:
        choice = deployment.choose(
            deployment.Request(**config.model_dump()),
            deployed,
            trained,
            promotion_decision(context.instance, current_source, policy.promotion_min_gain),
            policy.deployed_month,
            policy.promotion_min_gain,
        )
        source_tag, reason = choice.source_tag, choice.reason
        source = model_registry.info(source_tag)
        labels, metadata = source["labels"], source["metadata"]
        if refused := deployment.refusal(source_tag, labels, metadata, monthly_partitions.get_next_partition_key):
            raise refused
    except deployment.Refused as refused:
        raise dg.Failure(str(refused), metadata=refused.metadata or None) from None

    copied = {name: metadata[name] for name in ("validation_month", "validation_rmse", "validation_mae")}
    importance = metadata.get(IMPORTANCE_KEY, {})
    tag = model_registry.save(
        model_registry.load(source_tag),
        DEPLOYED_MODEL,
        labels={"source_tag": source_tag, "training_month": labels["training_month"], "recipe": labels["recipe"]},
        metadata={**copied, IMPORTANCE_KEY: importance, "reason": reason, "replaced_source_tag": current_source or ""},
    )
    context.log.info(f"deployed {source_tag} as {tag} ({reason}; replaces {current_source})")
    stale_months = []
    if current_source != source_tag and pushgateway.enabled:
        stale_months = sorted(group.get("month", "") for group in pushgateway.delete_groups(BATCH_JOB, context.log))
        context.log.info(
            f"{current_source or 'no model'} was deployed before: the batch monitoring figures of months "
            f"{stale_months} are deleted from the Pushgateway; materialize batch monitoring to monitor {source_tag}"
        )
    return dg.MaterializeResult(
        metadata={
            "deployed_tag": tag,
            "source_tag": source_tag,
            "training_month": labels["training_month"],
            "recipe": labels["recipe"],
            "validation_month": copied["validation_month"],
            "validation_rmse": float(copied["validation_rmse"]),
            "reason": reason,
            "replaced_source_tag": current_source or "",
            "stale_batch_months_deleted": len(stale_months),
            **(importance_metadata(importance) if importance else {}),
            **policy.metadata(),
            **choice.figures,
        }
    )


@dg.asset(
    partitions_def=monthly_partitions,
    deps=[trips, duration_model, deployed_model],
    pool=DUCKDB_POOL,
    kinds={"sklearn", "prometheus"},
    group_name="model",
)
def model_challenge(
    context: dg.AssetExecutionContext,
    config: ModelChallengeConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
    pushgateway: Pushgateway,
    policy: AutomationPolicy,
) -> dg.MaterializeResult:
    """The deployed champion against a challenger retrained on newer data, both scored on this month's trips.

    The challenger is the gated `duration_model` of the newest loaded month before this one; neither model was
    trained on this month (never in-sample). gain = (RMSE champion - RMSE challenger) / RMSE champion. Pushed as
    `taxi_model_challenger_gain` (job taxi_model_challenge, only for the newest month challenged, so the alert
    speaks of the model deployed now); at the `policy` resource's minimum gain (TAXI_PROMOTION_MIN_GAIN) or more the
    challenger is due for promotion. The metadata records the policy applied.
    """
    month = context.partition_key
    min_gain = policy.promotion_min_gain
    if not model_registry.history(DEPLOYED_MODEL):
        raise dg.Failure("no model is deployed to challenge: materialize deployed_model first")
    pipeline, champion = model_registry.load_deployed()
    champion_source = champion["source_tag"]
    if champion["training_month"] >= month:
        raise dg.Failure(
            f"the deployed {champion_source} was trained on {champion['training_month']}, not before {month}: "
            f"scoring it on {month} would not be out of sample"
        )
    with warehouse.get_connection() as conn:
        evaluation = month_trips(conn, month)
        challenger_month = loaded_month_before(conn, month)
    execution.release_pool_slot(context)  # scoring both models needs no warehouse
    if evaluation.empty:
        raise dg.Failure(f"trips holds no rows for {month}; materialize trips[{month}] first")
    if challenger_month is None:
        raise dg.Failure(f"trips holds no month before {month} to train a challenger on")
    challenger = model_registry.latest(TRAINED_MODEL, {"training_month": challenger_month, "recipe": config.recipe})
    if challenger is None:
        raise dg.Failure(f"no challenger: materialize duration_model[{challenger_month}] (recipe {config.recipe})")
    challenger_labels = model_registry.info(challenger)["labels"]
    if challenger_labels.get(GATE_LABEL) != "passed":
        raise dg.Failure(f"the challenger {challenger} did not pass its quality gate; it is not compared")

    champion_rmse = evaluate(pipeline, evaluation)["rmse"]
    challenger_rmse = (
        champion_rmse
        if challenger == champion_source
        else evaluate(model_registry.load(challenger), evaluation)["rmse"]
    )
    gain = challenger_gain(champion_rmse, challenger_rmse)
    due = wins(gain, min_gain) and challenger != champion_source
    mode = policy.promotion
    promotion = (
        "no: the champion holds"
        if not due
        else "due: model_promotion_sensor deploys the challenger"
        if mode == "auto"
        else "pending approval (TAXI_PROMOTION=manual): materialize deployed_model to deploy the challenger"
    )

    newest = max(context.instance.get_materialized_partitions(MODEL_CHALLENGE), default=month)
    if month >= newest:
        pushgateway.push(
            CHALLENGE_JOB,
            {},
            challenge_samples(month, champion_source, challenger, champion_rmse, challenger_rmse, gain, min_gain),
            context.log,
        )
    else:
        context.log.info(f"model_challenge[{newest}] is newer: the figures of {month} are not pushed")
    return dg.MaterializeResult(
        metadata={
            "evaluation_month": month,
            "champion": champion_source,
            "champion_month": champion["training_month"],
            "champion_rmse": champion_rmse,
            "challenger": challenger,
            "challenger_month": challenger_month,
            "challenger_rmse": challenger_rmse,
            "gain": gain,
            **policy.metadata(),
            "promotion": promotion,
            "dagster/row_count": len(evaluation),
        }
    )
