"""The jobs the promotion sensor runs: retrain a month, challenge the deployed model, deploy a challenger."""

import dagster as dg

deploy_job = dg.define_asset_job(
    "deploy_job",
    selection=dg.AssetSelection.assets("deployed_model"),
    description="Deploy a model: a promotion, the first deployment, or an explicit choice (rollback: true).",
)

model_challenge_job = dg.define_asset_job(
    "model_challenge_job",
    selection=dg.AssetSelection.assets("model_challenge"),
    description="Score the deployed champion and the newest challenger on a month.",
)

duration_model_job = dg.define_asset_job(
    "duration_model_job",
    selection=dg.AssetSelection.assets("duration_model"),
    description="Train and gate the model of a month.",
)
