"""Which model `deployed_model` deploys, and whether a stored model may be deployed: the rules, over plain data.

`choose` takes what the asset read (the deployments so far, the trained models, the promotion decision) and the
request of its run config, and returns the model to deploy with the reason it records; `refusal` says why a stored
model must not be deployed. The asset does the reading and the copying (taxi_assets.defs.model.assets).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from taxi_assets.core.model import DEFAULT_RECIPE
from taxi_assets.core.promotion import ROLLBACK, Decision

TRAINED_MODEL = "taxi_duration"
# The quality gate: the blocking check of duration_model, and the label it leaves on the stored model.
GATE_CHECK = "beats_seed_baseline"
GATE_LABEL = "quality_gate"

CONFIGURED_SOURCE_TAG = "configured source_tag"
CONFIGURED_TRAINING_MONTH = "configured training_month"
FIRST_DEPLOYMENT = "first deployment (TAXI_DEPLOYED_MONTH)"
PROMOTION = "promotion"


class Refused(Exception):
    """Nothing is deployed, for the reason given; `metadata` goes with the failure."""

    def __init__(self, message: str, metadata: Mapping | None = None) -> None:
        super().__init__(message)
        self.metadata = dict(metadata or {})


@dataclass(frozen=True)
class Request:
    """What the run asks for (`deployed_model`'s config): empty, or one explicit choice."""

    training_month: str = ""
    recipe: str = DEFAULT_RECIPE
    source_tag: str = ""
    rollback: bool = False
    challenge_month: str = ""

    def explicit(self) -> list[str]:
        return [name for name in ("training_month", "source_tag", "rollback", "challenge_month") if getattr(self, name)]


@dataclass(frozen=True)
class StoredModel:
    tag: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Choice:
    source_tag: str
    reason: str
    figures: dict = field(default_factory=dict)
    """For a promotion: the challenge's figures that justified it."""


def previous_source(deployed: Sequence[str]) -> str:
    """The source of the newest deployment before the current one (`deployed`: sources, newest first)."""
    current = deployed[0] if deployed else None
    for source in deployed:
        if source != current:
            return source
    if current is None:
        raise Refused("nothing is deployed: there is no model to roll back from")
    raise Refused(f"no deployment before {current} to roll back to")


def newest_trained(trained: Sequence[StoredModel], month: str, recipe: str) -> str:
    """The newest trained model of `month` and `recipe` (`trained`: newest first)."""
    wanted = {"training_month": month, "recipe": recipe}.items()
    for model in trained:
        if wanted <= model.labels.items():
            return model.tag
    raise Refused(f"no {TRAINED_MODEL} model for {month} with recipe {recipe}: materialize duration_model[{month}]")


def choose(
    request: Request,
    deployed: Sequence[str],
    trained: Sequence[StoredModel],
    promotion: Decision,
    deployed_month: str,
    min_gain: float,
) -> Choice:
    """The model to deploy and why: the configured source tag, a rollback to the model deployed before, the newest
    model of a configured training month, the first deployment (`deployed_month`, while nothing is deployed), or
    else the pending promotion. `deployed`: sources of the deployments so far, newest first; `trained`: the
    trained models, newest first; `promotion`: the promotion decision over the current deployment."""
    current = deployed[0] if deployed else None
    if len(explicit := request.explicit()) > 1:
        raise Refused(f"set at most one of training_month, source_tag, rollback, challenge_month; got {explicit}")
    if request.source_tag:
        return Choice(request.source_tag, CONFIGURED_SOURCE_TAG)
    if request.rollback:
        return Choice(previous_source(deployed), ROLLBACK)
    if request.training_month or (not request.challenge_month and current is None):
        month = request.training_month or deployed_month
        reason = CONFIGURED_TRAINING_MONTH if request.training_month else FIRST_DEPLOYMENT
        return Choice(newest_trained(trained, month, request.recipe), reason)
    challenge = promotion.challenge
    if request.challenge_month and (challenge is None or challenge.evaluation_month != request.challenge_month):
        raise Refused(f"model_challenge[{request.challenge_month}] is not the newest challenge; nothing is promoted")
    if not promotion.promote:
        raise Refused(
            f"no pending promotion: {promotion.reason}. {current} stays deployed; to deploy another model "
            f"set training_month or source_tag, or roll back with rollback: true"
        )
    return Choice(challenge.challenger, PROMOTION, challenge.figures(min_gain))


def refusal(
    source_tag: str, labels: Mapping[str, str], metadata: Mapping, next_month: Callable[[str], str | None]
) -> Refused | None:
    """Why the stored model `source_tag` must not be deployed, or None: it did not pass its quality gate, or was
    not validated on the month after its training month (`next_month`: the partitions' next month)."""
    if labels.get(GATE_LABEL) != "passed":
        return Refused(
            f"{source_tag} did not pass its quality gate ({GATE_CHECK}); it is not deployed",
            {"source_tag": source_tag, "validation_rmse": metadata.get("validation_rmse")},
        )
    validation_month, training_month = metadata.get("validation_month"), labels["training_month"]
    if validation_month == next_month(training_month):
        return None
    why = (
        "in-sample figures"
        if not validation_month or validation_month <= training_month
        else "its drift thresholds and RMSE bound would count the change of every month between as ordinary"
    )
    return Refused(
        f"{source_tag} was validated on {validation_month}, not on {training_month}'s next month: {why}; load trips "
        f"for the month after {training_month} and retrain it with duration_model[{training_month}]",
        {"source_tag": source_tag},
    )
