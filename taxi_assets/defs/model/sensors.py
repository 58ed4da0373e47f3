"""The retraining loop: when a new month of trips is loaded, retrain on the month before it, challenge the deployed
model on the new month, and promote the challenger when it wins by TAXI_PROMOTION_MIN_GAIN.

A sensor rather than declarative automation: the promotion depends on figures (the challenge's gain against a
setting, whether its champion is still the deployed model, whether the challenger was rolled back), which an
automation condition cannot read, and the deploy run must carry the evaluation month that justifies it as run
config. Run keys make every step happen once per new state (a new month's trips, a new model, a new deployment).
The sensor reads only the Dagster instance: no DuckDB, no model store.
"""

import dagster as dg

from taxi_assets import settings
from taxi_assets.defs.automation import AUTOMATION_STATUS
from taxi_assets.defs.materializations import latest_materialization, latest_metadata, metadata_values
from taxi_assets.defs.model.assets import duration_model, model_challenge
from taxi_assets.defs.model.jobs import deploy_job, duration_model_job, model_challenge_job
from taxi_assets.defs.model.promotion import DEPLOYED_MODEL_ASSET, promotion_decision
from taxi_assets.defs.resources import AutomationPolicy
from taxi_assets.defs.trip_data.assets import trips


@dg.sensor(
    jobs=[duration_model_job, model_challenge_job, deploy_job],
    # A tick costs a few instance queries, and the loop takes one step per tick: the automation's interval.
    minimum_interval_seconds=settings.current().automation_check_seconds,
    default_status=AUTOMATION_STATUS,
)
def model_promotion_sensor(
    context: dg.SensorEvaluationContext, policy: AutomationPolicy
) -> dg.RunRequest | dg.SkipReason:
    """Requests, one step at a time: `duration_model` of the month before the newest loaded month (once that
    month's trips are newer than it), `model_challenge` of the newest month (when missing, older than that
    model, or made against a model no longer deployed), and `deployed_model` with the challenger when it wins
    (TAXI_PROMOTION=auto; manual: the tick says the promotion waits for a user to materialize deployed_model)."""
    instance = context.instance
    deployed = latest_metadata(instance, DEPLOYED_MODEL_ASSET)
    if deployed is None:
        return dg.SkipReason("nothing is deployed yet: materialize deployed_model (the first deployment)")
    deployed_source = deployed["source_tag"]
    months = sorted(instance.get_materialized_partitions(trips))
    if len(months) < 2:
        return dg.SkipReason("a challenge needs two loaded months of trips")
    newest, previous = months[-1], months[-2]

    trips_record = latest_materialization(instance, trips, newest)
    model_record = latest_materialization(instance, duration_model.key, previous)
    if model_record is None or model_record.storage_id < trips_record.storage_id:
        return dg.RunRequest(
            job_name=duration_model_job.name,
            partition_key=previous,
            run_key=f"train {previous} on trips {newest}@{trips_record.storage_id}",
        )
    challenge_record = latest_materialization(instance, model_challenge.key, newest)
    challenge = metadata_values(challenge_record) if challenge_record else None
    if (
        challenge is None
        or challenge_record.storage_id < model_record.storage_id
        or challenge["champion"] != deployed_source
    ):
        return dg.RunRequest(
            job_name=model_challenge_job.name,
            partition_key=newest,
            run_key=f"challenge {newest}: {deployed_source} vs duration_model[{previous}]@{model_record.storage_id}",
        )

    decision = promotion_decision(instance, deployed_source, policy.promotion_min_gain)
    if not decision.promote:
        return dg.SkipReason(decision.reason)
    if policy.promotion == "manual":
        return dg.SkipReason(
            f"promotion pending approval (TAXI_PROMOTION=manual): {decision.reason}. Materialize deployed_model "
            f"to deploy it."
        )
    month = decision.challenge.evaluation_month
    return dg.RunRequest(
        job_name=deploy_job.name,
        run_key=f"promote {decision.challenge.challenger} on {month} over {deployed_source}",
        run_config={"ops": {"deployed_model": {"config": {"challenge_month": month}}}},
        tags={"taxi/promotion": decision.challenge.challenger, "taxi/evaluation_month": month},
    )
