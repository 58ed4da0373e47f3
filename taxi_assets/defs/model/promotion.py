"""When a challenger replaces the deployed champion: read from the Dagster instance, shared by `deployed_model`
(which promotes) and `model_promotion_sensor` (which asks it to).

A promotion is justified by the newest `model_challenge` materialization: the challenger (a gated model trained on
the newest loaded month before the evaluation month) beat the model deployed at that time on the evaluation month,
by at least the TAXI_PROMOTION_MIN_GAIN setting. It is valid only while that champion is still the deployed one.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from taxi_assets import settings

MODEL_CHALLENGE = dg.AssetKey("model_challenge")
DEPLOYED_MODEL_ASSET = dg.AssetKey("deployed_model")
ROLLBACK = "rollback"


@dataclass(frozen=True)
class Challenge:
    """The figures of one `model_challenge` materialization (its metadata)."""

    evaluation_month: str
    champion: str
    champion_month: str
    champion_rmse: float
    challenger: str
    challenger_month: str
    challenger_rmse: float
    gain: float

    @classmethod
    def from_metadata(cls, metadata: dict) -> Challenge:
        values = {name: getattr(value, "value", value) for name, value in metadata.items()}
        return cls(**{field: values[field] for field in cls.__dataclass_fields__})

    def figures(self, min_gain: float) -> dict:
        """Materialization metadata of a promotion: the figures that justified it (floats, plotted by the UI)."""
        return {
            "evaluation_month": self.evaluation_month,
            "champion": self.champion,
            "champion_month": self.champion_month,
            "champion_rmse": float(self.champion_rmse),
            "challenger": self.challenger,
            "challenger_month": self.challenger_month,
            "challenger_rmse": float(self.challenger_rmse),
            "gain": float(self.gain),
            "min_gain": float(min_gain),
        }


def wins(gain: float, min_gain: float) -> bool:
    """The one comparison of a challenger's gain with the minimum (the alert rule makes the same: >=)."""
    return gain >= min_gain


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> dict | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    if not records:
        return None
    return {name: value.value for name, value in records[0].asset_materialization.metadata.items()}


def newest_challenge(instance: dg.DagsterInstance) -> Challenge | None:
    """The latest materialization of the newest evaluation month of `model_challenge`."""
    months = instance.get_materialized_partitions(MODEL_CHALLENGE)
    if not months:
        return None
    metadata = latest_metadata(instance, MODEL_CHALLENGE, max(months))
    return Challenge.from_metadata(metadata) if metadata else None


def rolled_back(instance: dg.DagsterInstance, source_tag: str, limit: int = 100) -> bool:
    """Whether a rollback once replaced `source_tag`: such a model is not promoted again automatically."""
    records = instance.fetch_materializations(DEPLOYED_MODEL_ASSET, limit=limit).records
    for record in records:
        metadata = record.asset_materialization.metadata
        reason, replaced = metadata.get("reason"), metadata.get("replaced_source_tag")
        if reason and reason.value == ROLLBACK and replaced and replaced.value == source_tag:
            return True
    return False


@dataclass(frozen=True)
class Decision:
    challenge: Challenge | None
    promote: bool
    reason: str


def promotion_decision(instance: dg.DagsterInstance, deployed_source: str | None) -> Decision:
    """Whether the newest challenge justifies promoting its challenger over `deployed_source` now, and why."""
    min_gain = settings.current().promotion_min_gain
    challenge = newest_challenge(instance)
    if challenge is None:
        return Decision(None, False, "no model_challenge has been materialized")
    month = challenge.evaluation_month
    if challenge.champion != deployed_source:
        return Decision(
            challenge,
            False,
            f"model_challenge[{month}] compared {challenge.champion}, but {deployed_source} is deployed now: "
            f"re-materialize model_challenge[{month}]",
        )
    if challenge.challenger == deployed_source:
        return Decision(challenge, False, f"the challenger of {month}, {challenge.challenger}, is deployed")
    if not wins(challenge.gain, min_gain):
        return Decision(
            challenge,
            False,
            f"the challenger {challenge.challenger} is {challenge.gain:.1%} better than {deployed_source} on {month}, "
            f"less than the {min_gain:.1%} that a promotion needs (TAXI_PROMOTION_MIN_GAIN)",
        )
    if rolled_back(instance, challenge.challenger):
        return Decision(
            challenge,
            False,
            f"{challenge.challenger} was rolled back once: it is not promoted automatically again; deploy it by "
            f"hand (deployed_model with source_tag) if wanted",
        )
    return Decision(
        challenge,
        True,
        f"{challenge.challenger} (trained on {challenge.challenger_month}) beats {deployed_source} by "
        f"{challenge.gain:.1%} on {month} (RMSE {challenge.challenger_rmse:.3f} vs {challenge.champion_rmse:.3f}; "
        f"minimum {min_gain:.1%})",
    )
