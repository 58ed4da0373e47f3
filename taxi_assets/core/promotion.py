"""When a challenger replaces the deployed champion: the rules, over plain data.

A promotion is justified by the newest `model_challenge`: the challenger (a gated model trained on the newest loaded
month before the evaluation month) beat the model deployed at that time on the evaluation month, by at least the
minimum gain of the promotion policy. It is valid only while that champion is still the deployed one, and never for
a model a rollback once replaced. The Dagster side (taxi_assets.defs.model.promotion) reads the figures from the
instance; `deployed_model` and `model_promotion_sensor` act on the decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

# The `reason` a deployment records when it rolls back.
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
    def from_metadata(cls, metadata: Mapping) -> Challenge:
        return cls(**{field.name: metadata[field.name] for field in fields(cls)})

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


def rolled_back_sources(deployments: Iterable[Mapping]) -> frozenset[str]:
    """The models a rollback replaced, from the metadata of `deployed_model` materializations: such a model is not
    promoted again automatically."""
    return frozenset(
        metadata["replaced_source_tag"]
        for metadata in deployments
        if metadata.get("reason") == ROLLBACK and metadata.get("replaced_source_tag")
    )


@dataclass(frozen=True)
class Decision:
    challenge: Challenge | None
    promote: bool
    reason: str


def decide(
    challenge: Challenge | None, deployed_source: str | None, min_gain: float, rolled_back: frozenset[str]
) -> Decision:
    """Whether the newest challenge justifies promoting its challenger over `deployed_source` now, and why."""
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
    if challenge.challenger in rolled_back:
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
