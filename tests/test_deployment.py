"""The deployment choice and the promotion rules, as pure functions over plain data (taxi_assets.core.deployment,
taxi_assets.core.promotion): every branch and every refusal, with the reason each records."""

import dataclasses

import pytest

from taxi_assets.core.deployment import (
    FIRST_DEPLOYMENT,
    Choice,
    Refused,
    Request,
    StoredModel,
    choose,
    refusal,
)
from taxi_assets.core.promotion import ROLLBACK, Challenge, Decision, decide, rolled_back_sources, wins

pytestmark = pytest.mark.unit

CHAMPION, CHALLENGER = "taxi_duration:jan", "taxi_duration:feb"
CHALLENGE = Challenge(
    evaluation_month="2021-03",
    champion=CHAMPION,
    champion_month="2021-01",
    champion_rmse=6.0,
    challenger=CHALLENGER,
    challenger_month="2021-02",
    challenger_rmse=5.4,
    gain=0.1,
)
TRAINED = [
    StoredModel("taxi_duration:new-jan", {"training_month": "2021-01", "recipe": "hgb_te", "quality_gate": "passed"}),
    StoredModel("taxi_duration:seed-jan", {"training_month": "2021-01", "recipe": "seed"}),
    StoredModel(CHAMPION, {"training_month": "2021-01", "recipe": "hgb_te"}),
]
NOTHING_PENDING = Decision(None, False, "no model_challenge has been materialized")


def chosen(request: Request, deployed: list[str], promotion: Decision = NOTHING_PENDING) -> Choice:
    return choose(request, deployed, TRAINED, promotion, deployed_month="2021-01", min_gain=0.05)


def test_first_deployment_takes_the_newest_model_of_the_deployed_month_and_recipe() -> None:
    assert chosen(Request(), []) == Choice("taxi_duration:new-jan", FIRST_DEPLOYMENT)
    assert chosen(Request(recipe="seed"), []).source_tag == "taxi_duration:seed-jan"
    with pytest.raises(Refused, match=r"no taxi_duration model for 2021-01 with recipe hgb: materialize"):
        chosen(Request(recipe="hgb"), [])
    with pytest.raises(Refused, match=r"no taxi_duration model for 2021-01 .*duration_model\[2021-01\]"):
        choose(Request(), [], [], NOTHING_PENDING, deployed_month="2021-01", min_gain=0.05)


def test_explicit_choices_and_their_reasons() -> None:
    deployed = [CHAMPION, CHAMPION, "taxi_duration:older"]
    assert chosen(Request(source_tag="taxi_duration:x"), deployed) == Choice("taxi_duration:x", "configured source_tag")
    assert chosen(Request(training_month="2021-01", recipe="seed"), deployed) == Choice(
        "taxi_duration:seed-jan", "configured training_month"
    )
    assert chosen(Request(rollback=True), deployed) == Choice("taxi_duration:older", ROLLBACK)
    with pytest.raises(Refused, match="set at most one of .*got \\['training_month', 'rollback'\\]"):
        chosen(Request(training_month="2021-01", rollback=True), deployed)


def test_a_rollback_needs_an_earlier_deployment() -> None:
    with pytest.raises(Refused, match="nothing is deployed: there is no model to roll back from"):
        chosen(Request(rollback=True), [])
    with pytest.raises(Refused, match=f"no deployment before {CHAMPION} to roll back to"):
        chosen(Request(rollback=True), [CHAMPION, CHAMPION])


def test_an_empty_request_over_a_deployed_model_promotes_only_a_pending_challenger() -> None:
    promote = Decision(CHALLENGE, True, "wins")
    choice = chosen(Request(), [CHAMPION], promote)
    assert (choice.source_tag, choice.reason) == (CHALLENGER, "promotion")
    assert choice.figures["gain"] == 0.1 and choice.figures["min_gain"] == 0.05
    assert all(isinstance(choice.figures[name], float) for name in ("champion_rmse", "challenger_rmse", "gain"))
    assert chosen(Request(challenge_month="2021-03"), [CHAMPION], promote).source_tag == CHALLENGER
    with pytest.raises(Refused, match=r"model_challenge\[2021-04\] is not the newest challenge"):
        chosen(Request(challenge_month="2021-04"), [CHAMPION], promote)
    with pytest.raises(Refused, match=f"no pending promotion: short. {CHAMPION} stays deployed"):
        chosen(Request(), [CHAMPION], Decision(CHALLENGE, False, "short"))
    # Nothing deployed but a promotion asked for: it is the promotion that is judged, not a first deployment.
    with pytest.raises(Refused, match=r"model_challenge\[2021-03\] is not the newest challenge"):
        chosen(Request(challenge_month="2021-03"), [])


def next_month(month: str) -> str:
    year, number = map(int, month.split("-"))
    return f"{year + number // 12}-{number % 12 + 1:02d}"


def test_only_a_gated_model_validated_on_the_following_month_is_deployable() -> None:
    gated = {"training_month": "2021-01", "quality_gate": "passed"}
    assert refusal("m:1", gated, {"validation_month": "2021-02"}, next_month) is None
    failed = refusal("m:1", {**gated, "quality_gate": "failed"}, {"validation_rmse": 9.0}, next_month)
    assert "did not pass its quality gate (beats_seed_baseline)" in str(failed)
    assert failed.metadata == {"source_tag": "m:1", "validation_rmse": 9.0}
    assert "in-sample figures" in str(refusal("m:1", gated, {"validation_month": "2021-01"}, next_month))
    assert "in-sample figures" in str(refusal("m:1", gated, {}, next_month))
    apart = str(refusal("m:1", gated, {"validation_month": "2021-04"}, next_month))
    assert "would count the change of every month between as ordinary" in apart
    assert apart.endswith("retrain it with duration_model[2021-01]")


def test_the_promotion_rules_in_order() -> None:
    assert decide(None, CHAMPION, 0.05, frozenset()).reason == "no model_challenge has been materialized"
    stale = decide(CHALLENGE, "taxi_duration:other", 0.05, frozenset())
    assert not stale.promote and "re-materialize model_challenge[2021-03]" in stale.reason
    deployed = decide(CHALLENGE, CHALLENGER, 0.05, frozenset())
    assert not deployed.promote and "compared" in deployed.reason  # the champion it beat is gone
    same = dataclasses.replace(CHALLENGE, challenger=CHAMPION, gain=0.0)
    assert decide(same, CHAMPION, 0.05, frozenset()).reason.endswith(f"{CHAMPION}, is deployed")
    short = decide(CHALLENGE, CHAMPION, 0.2, frozenset())
    assert not short.promote and "10.0% better than" in short.reason and "less than the 20.0%" in short.reason
    held = decide(CHALLENGE, CHAMPION, 0.05, frozenset({CHALLENGER}))
    assert not held.promote and "rolled back once" in held.reason
    promoted = decide(CHALLENGE, CHAMPION, 0.05, frozenset())
    assert promoted.promote and promoted.challenge == CHALLENGE
    assert promoted.reason == (
        f"{CHALLENGER} (trained on 2021-02) beats {CHAMPION} by 10.0% on 2021-03 (RMSE 5.400 vs 6.000; minimum 5.0%)"
    )
    # The gain at exactly the minimum wins, as the alert rule's >= fires.
    assert wins(0.05, 0.05) and not wins(0.0499, 0.05)
    assert decide(CHALLENGE, CHAMPION, 0.1, frozenset()).promote


def test_rolled_back_sources_are_the_models_a_rollback_replaced() -> None:
    deployments = [
        {"reason": ROLLBACK, "replaced_source_tag": CHALLENGER},
        {"reason": "promotion", "replaced_source_tag": CHAMPION},
        {"reason": ROLLBACK, "replaced_source_tag": ""},
        {"reason": FIRST_DEPLOYMENT},
    ]
    assert rolled_back_sources(deployments) == frozenset({CHALLENGER})


def test_a_challenge_reads_back_from_its_metadata() -> None:
    metadata = {**dataclasses.asdict(CHALLENGE), "promotion": "due", "dagster/row_count": 10}
    assert Challenge.from_metadata(metadata) == CHALLENGE
