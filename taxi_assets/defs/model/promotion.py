"""The promotion decision's inputs, read from the Dagster instance, shared by `deployed_model` (which promotes) and
`model_promotion_sensor` (which asks it to). The rules are taxi_assets.core.promotion's."""

from __future__ import annotations

import dagster as dg

from taxi_assets.core.promotion import Challenge, Decision, decide, rolled_back_sources
from taxi_assets.defs.materializations import latest_metadata, metadata_values

MODEL_CHALLENGE = dg.AssetKey("model_challenge")
DEPLOYED_MODEL_ASSET = dg.AssetKey("deployed_model")
# How many of the latest deployments are searched for rollbacks.
ROLLBACK_LOOKBACK = 100


def newest_challenge(instance: dg.DagsterInstance) -> Challenge | None:
    """The latest materialization of the newest evaluation month of `model_challenge`."""
    months = instance.get_materialized_partitions(MODEL_CHALLENGE)
    if not months:
        return None
    metadata = latest_metadata(instance, MODEL_CHALLENGE, max(months))
    return Challenge.from_metadata(metadata) if metadata else None


def rolled_back(instance: dg.DagsterInstance) -> frozenset[str]:
    """The models a rollback replaced, among the latest deployments."""
    records = instance.fetch_materializations(DEPLOYED_MODEL_ASSET, limit=ROLLBACK_LOOKBACK).records
    return rolled_back_sources(metadata_values(record) for record in records)


def promotion_decision(instance: dg.DagsterInstance, deployed_source: str | None, min_gain: float) -> Decision:
    """Whether the newest challenge justifies promoting its challenger over `deployed_source` now, and why."""
    return decide(newest_challenge(instance), deployed_source, min_gain, rolled_back(instance))
