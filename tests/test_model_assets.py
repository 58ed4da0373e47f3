"""The model assets materialized on real TLC months: train, gate, deploy, challenge, promote, roll back, and load
back from the BentoML store."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sklearn.dummy import DummyRegressor
from sklearn.pipeline import Pipeline

from taxi_assets.core import calibration, model
from taxi_assets.core.model import DEFAULT_RECIPE, IMPORTANCE_FEATURES, evaluate, predict, timed_train, train
from taxi_assets.definitions import defs
from taxi_assets.defs.model import assets as model_assets
from taxi_assets.defs.model.assets import (
    GATE_CHECK,
    IMPORTANCE_KEY,
    deployed_model,
    duration_model,
    model_challenge,
    month_trips,
    quality_gate,
)
from taxi_assets.defs.model.profile import reference_profile
from taxi_assets.defs.model.sensors import model_promotion_sensor
from taxi_assets.defs.resources import AutomationPolicy
from taxi_assets.defs.trip_data.assets import trip_months
from tests.support.platform import automation_policy, platform_resources

# BentoML fixes its model store once per process: each test stores models in a process (and store) of its own.
pytestmark = [pytest.mark.integration, pytest.mark.forked]

SEED_RMSE_2021_02 = 7.7587
# bench/bench_challenger.py: the 2021-01 model against the one retrained on 2023-02, both scored on 2023-03.
GAIN_2023_03 = 0.1248


def load_trips(instance: dg.DagsterInstance, *months: str) -> None:
    for month in months:
        assert dg.materialize([trip_months], partition_key=month, instance=instance, resources=platform_resources())


def materialize(instance: dg.DagsterInstance, asset: dg.AssetsDefinition, config: dict | None = None, **kwargs):
    return dg.materialize(
        [asset],
        instance=instance,
        resources=platform_resources(),
        run_config={"ops": {asset.op.name: {"config": config or {}}}},
        **kwargs,
    )


def materialization_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {name: value.value for name, value in event.materialization.metadata.items()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    return str(result.get_step_failure_events()[0].step_failure_data.error)


def gate_evaluation(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == GATE_CHECK]
    return evaluation


def test_model_trained_on_january_is_validated_on_february_and_deployed(platform_env: Path, instance):
    load_trips(instance, "2021-01", "2021-02")

    trained = materialize(instance, duration_model, partition_key="2021-01")
    metadata = materialization_metadata(trained)
    assert metadata["recipe"] == DEFAULT_RECIPE
    assert metadata["validation_month"] == "2021-02"
    assert isinstance(metadata["validation_rmse"], float) and metadata["validation_rmse"] <= 5.5
    assert metadata["training_rows"] > 70_000
    assert metadata["model_size_bytes"] > 0
    gate = gate_evaluation(trained)
    assert gate.passed
    assert gate.metadata["seed_rmse"].value == pytest.approx(SEED_RMSE_2021_02, abs=1e-3)
    # Permutation importance on the validation month: distance matters most, every input is a float.
    shown = {name: metadata[f"importance_{name}"] for name in IMPORTANCE_FEATURES}
    assert all(isinstance(value, float) for value in shown.values())
    assert max(shown, key=shown.get) == "trip_distance" and shown["trip_distance"] > 5
    assert "| trip_distance |" in metadata[IMPORTANCE_KEY]

    deployed = materialize(instance, deployed_model)
    deployed_metadata = materialization_metadata(deployed)
    assert deployed_metadata["source_tag"] == metadata["bentoml_tag"]
    assert deployed_metadata["validation_rmse"] == metadata["validation_rmse"]
    assert deployed_metadata["reason"] == "first deployment (TAXI_DEPLOYED_MONTH)"
    assert (deployed_metadata["deployed_month"], deployed_metadata["promotion_mode"]) == ("2021-01", "auto")
    assert deployed_metadata["importance_trip_distance"] == shown["trip_distance"]

    registry = platform_resources()["model_registry"]
    pipeline, info = registry.load_deployed()
    assert info["tag"] == deployed_metadata["deployed_tag"]
    assert info["tag"].startswith("taxi_duration_deployed:")
    assert (info["training_month"], info["validation_month"]) == ("2021-01", "2021-02")
    tag_version = info["tag"].split(":")[1]
    assert (platform_env / "bentoml" / "models" / "taxi_duration_deployed" / tag_version).is_dir()
    # The BentoML metadata key the drift monitoring reads, on the trained model and on the deployed copy.
    assert registry.info(metadata["bentoml_tag"])["metadata"][IMPORTANCE_KEY] == shown
    assert registry.info(info["tag"])["metadata"][IMPORTANCE_KEY] == shown

    # The deployed copy predicts what the same recipe, trained afresh on the same rows, predicts.
    with platform_resources()["warehouse"].get_connection() as conn:
        january, february = month_trips(conn, "2021-01"), month_trips(conn, "2021-02")
    np.testing.assert_allclose(predict(pipeline, february), predict(train(january, DEFAULT_RECIPE), february))
    assert evaluate(pipeline, february)["rmse"] == pytest.approx(metadata["validation_rmse"])

    # Nothing pending and a model deployed: an empty deployment changes nothing and says why.
    again = materialize(instance, deployed_model, raise_on_error=False)
    assert "no pending promotion" in failure_message(again)


def test_a_model_is_never_validated_or_deployed_in_sample(instance):
    load_trips(instance, "2021-01")

    result = materialize(instance, duration_model, partition_key="2021-01", raise_on_error=False)
    assert "materialize trips[2021-02]" in failure_message(result)
    assert not result.get_asset_materialization_events()
    registry = platform_resources()["model_registry"]
    assert registry.latest("taxi_duration", {"training_month": "2021-01"}) is None

    # A model stored with in-sample figures (as before this rule) is refused, gate label or not.
    with platform_resources()["warehouse"].get_connection() as conn:
        january = month_trips(conn, "2021-01")
    registry.save(
        train(january, "seed"),
        "taxi_duration",
        labels={"training_month": "2021-01", "recipe": "seed", "quality_gate": "passed"},
        metadata={"validation_month": "2021-01", "validation_rmse": 7.0, "validation_mae": 5.0},
    )
    refused = materialize(
        instance, deployed_model, {"training_month": "2021-01", "recipe": "seed"}, raise_on_error=False
    )
    assert "in-sample figures" in failure_message(refused)


def duration_model_job() -> dg.JobDefinition:
    """The platform's job with its own executor, as the daemon runs it (`dg.materialize` would use Dagster's)."""
    return defs().resolve_job_def("duration_model_job")


def test_a_model_trains_after_giving_the_warehouse_slot_back(platform_env: Path, monkeypatch: pytest.MonkeyPatch):
    """Training takes seconds to minutes and needs no warehouse: duration_model gives its duckdb slot back once it
    has read its months, so an ingest or a backfill does not wait for the training."""
    pools = {"concurrency": {"pools": {"granularity": "op", "default_limit": 1}}}
    with dg.instance_for_test(temp_dir=str(platform_env / "dagster_home"), overrides=pools) as instance:
        load_trips(instance, "2021-01", "2021-02")
        held_while_training = []

        def training(frame: pd.DataFrame, recipe: str):
            held_while_training.append(instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots)
            return timed_train(frame, recipe)

        monkeypatch.setattr(model_assets, "timed_train", training)
        result = dg.execute_job(
            dg.reconstructable(duration_model_job),
            instance=instance,
            run_config={"ops": {"duration_model": {"config": {"recipe": "seed"}}}},
            tags={"dagster/partition": "2021-01"},
        )
        assert result.success
        assert held_while_training == [[]]


def test_a_profile_is_built_again_when_its_trips_were_replaced_while_it_was_calibrated(instance, monkeypatch):
    """reference_profile reads its months, lends the warehouse while it scores and calibrates, and queues for it
    again to save: trips replaced in between (by a run that took the warehouse) are read and built from again
    first, so the stored profile describes the trips beside it."""
    load_trips(instance, "2021-01", "2021-02")
    assert materialize(instance, duration_model, {"recipe": "seed"}, partition_key="2021-01").success
    assert materialize(instance, deployed_model, {"training_month": "2021-01", "recipe": "seed"}).success
    warehouse = platform_resources()["warehouse"]
    build, validation_rows = calibration.build_profile, []

    def building(reference: pd.DataFrame, validation: pd.DataFrame, **kwargs):
        validation_rows.append(len(validation))
        if len(validation_rows) > 1:
            return build(reference, validation, **kwargs)
        with warehouse.get_connection() as conn:  # another run replaces the validation month meanwhile
            conn.execute("DELETE FROM trips WHERE month = '2021-02' AND trip_distance > 5")
        return None  # dropped: saving it would fail the step

    monkeypatch.setattr(calibration, "build_profile", building)
    result = dg.materialize([reference_profile], instance=instance, resources=platform_resources())
    with warehouse.get_connection() as conn:
        (left,) = conn.execute("SELECT count(*) FROM trips WHERE month = '2021-02'").fetchone()
    assert validation_rows[1] == left < validation_rows[0]
    assert materialization_metadata(result)["validation_rows"] == left
    messages = [event.message for event in instance.all_logs(result.run_id)]
    assert "trips changed while the profile was built; building it again" in messages


def constant_pipeline() -> Pipeline:
    """A deliberately useless model: every ride lasts the training mean."""
    return Pipeline([("features", model.build_pipeline("hgb").steps[0][1]), ("regressor", DummyRegressor())])


def test_quality_gate_blocks_a_model_worse_than_seed_and_deployment_refuses_it(instance, monkeypatch):
    monkeypatch.setitem(model.RECIPES, "constant", constant_pipeline)
    load_trips(instance, "2021-01", "2021-02")

    result = materialize(
        instance, duration_model, {"recipe": "constant"}, partition_key="2021-01", raise_on_error=False
    )
    assert materialization_metadata(result)["validation_month"] == "2021-02"
    gate = gate_evaluation(result)
    assert not gate.passed
    assert gate.severity == dg.AssetCheckSeverity.ERROR
    assert gate.metadata["rmse"].value > gate.metadata["seed_rmse"].value

    refused = materialize(instance, deployed_model, {"recipe": "constant"}, raise_on_error=False)
    assert "did not pass its quality gate" in failure_message(refused)


def test_deployment_refuses_a_month_without_a_model(instance):
    result = materialize(instance, deployed_model, {"training_month": "2023-04"}, raise_on_error=False)
    assert "no taxi_duration model for 2023-04" in failure_message(result)


def tick(instance: dg.DagsterInstance, policy: AutomationPolicy | None = None) -> dg.RunRequest | dg.SkipReason:
    """One real evaluation of the promotion sensor under `policy` (default: the embedded one)."""
    context = dg.build_sensor_context(instance=instance, resources={"policy": policy or automation_policy()})
    return model_promotion_sensor(context)


def run(
    instance: dg.DagsterInstance, request: dg.RunRequest, policy: AutomationPolicy | None = None
) -> dg.ExecuteInProcessResult:
    """Execute a sensor's run request as the daemon would: the requested job of the code location; `policy`
    overrides the location's in the run config, as the Launchpad's `resources.policy` does."""
    job = defs().resolve_job_def(request.job_name)
    overrides = {"resources": {"policy": {"config": policy.model_dump()}}} if policy else {}
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        run_config={**(request.run_config or {}), **overrides},
        tags=request.tags,
    )


def pushed_gains(pushgateway: str) -> list:
    text = requests.get(f"{pushgateway}/metrics", timeout=5).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return families["taxi_model_challenger_gain"].samples if "taxi_model_challenger_gain" in families else []


def test_retraining_loop_challenges_promotes_by_the_margin_and_rolls_back(
    platform_env: Path, instance: dg.DagsterInstance, pushgateway: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TAXI_PUSHGATEWAY_URL", pushgateway)
    load_trips(instance, "2021-01", "2021-02", "2023-02", "2023-03")
    assert materialize(instance, duration_model, partition_key="2021-01").success
    first = materialization_metadata(materialize(instance, deployed_model))
    champion = first["source_tag"]

    # 2021-02: the challenger is the 2021-01 model itself, the champion: no gain, no alarm.
    same = materialization_metadata(materialize(instance, model_challenge, partition_key="2021-02"))
    assert (same["challenger"], same["champion"], same["gain"]) == (champion, champion, 0.0)
    assert same["promotion"] == "no: the champion holds"

    # The loop, driven by real sensor ticks: retrain on 2023-02 (the month before the newest), challenge on 2023-03,
    # under a policy asking for a 20% margin.
    strict = automation_policy(promotion_min_gain=0.2)
    request = tick(instance, strict)
    assert (request.job_name, request.partition_key) == ("duration_model_job", "2023-02")
    assert run(instance, request, strict).success
    request = tick(instance, strict)
    assert (request.job_name, request.partition_key) == ("model_challenge_job", "2023-03")
    challenge = materialization_metadata(run(instance, request, strict))
    assert (challenge["min_gain"], challenge["promotion_mode"]) == (0.2, "auto")  # the policy the run applied
    assert challenge["champion"] == champion and challenge["challenger_month"] == "2023-02"
    assert challenge["challenger_rmse"] < challenge["champion_rmse"]
    assert challenge["gain"] == pytest.approx(GAIN_2023_03, abs=2e-3)
    (gain,) = pushed_gains(pushgateway)
    assert gain.labels["month"] == "2023-03" and gain.labels["champion"] == champion
    assert gain.value == pytest.approx(challenge["gain"])

    # A 13% gain is short of a 20% margin: nothing is promoted.
    skipped = tick(instance, strict)
    assert isinstance(skipped, dg.SkipReason) and "less than the 20.0%" in skipped.skip_message

    # Manual approval (at the embedded 5%): the tick shows the pending promotion and requests nothing.
    pending = tick(instance, automation_policy(promotion="manual"))
    assert isinstance(pending, dg.SkipReason) and "pending approval" in pending.skip_message
    assert platform_resources()["model_registry"].deployed()["source_tag"] == champion

    # Automatic: the tick requests the deployment, which records the figures that justified it.
    request = tick(instance)
    assert request.job_name == "deploy_job"
    promoted = materialization_metadata(run(instance, request))
    assert promoted["reason"] == "promotion"
    assert promoted["source_tag"] == challenge["challenger"] and promoted["replaced_source_tag"] == champion
    assert (promoted["evaluation_month"], promoted["champion"]) == ("2023-03", champion)
    assert promoted["gain"] == challenge["gain"] and promoted["min_gain"] == 0.05
    assert promoted["promotion_mode"] == "auto"
    assert isinstance(promoted["champion_rmse"], float) and isinstance(promoted["challenger_rmse"], float)
    assert platform_resources()["model_registry"].deployed()["training_month"] == "2023-02"

    # The challenge is made again against the new champion (the alarm clears), then the loop rests.
    request = tick(instance)
    assert (request.job_name, request.partition_key) == ("model_challenge_job", "2023-03")
    assert materialization_metadata(run(instance, request))["gain"] == 0.0
    assert pushed_gains(pushgateway)[0].value == 0.0
    assert isinstance(tick(instance), dg.SkipReason)

    # Rollback, a deploy_job run with `rollback: true` (what `taxi-rollback` launches through the webserver;
    # tests/test_readme.py runs the command): the previous model is deployed again, not promoted back by itself.
    rolled_back = materialization_metadata(materialize(instance, deployed_model, {"rollback": True}))
    assert (rolled_back["source_tag"], rolled_back["reason"]) == (champion, "rollback")
    assert platform_resources()["model_registry"].deployed()["source_tag"] == champion
    request = tick(instance)
    assert request.job_name == "model_challenge_job"
    assert run(instance, request).success
    held = tick(instance)
    assert isinstance(held, dg.SkipReason) and "rolled back" in held.skip_message


class NanModel:
    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.where(frame["trip_distance"] > 1, 10.0, np.nan)


def test_quality_gate_fails_on_nan_predictions_even_when_rmse_is_not_comparable():
    rides = pd.DataFrame(
        {
            "PULocationID": [74, 75],
            "DOLocationID": [75, 74],
            "trip_distance": [2.0, 0.5],
            "pickup_datetime": ["2021-02-01T08:00", "2021-02-01T09:00"],
            "duration": [10.0, 5.0],
        }
    )
    metrics = evaluate(NanModel(), rides)
    assert metrics["nan_predictions"] == 1
    assert not quality_gate(metrics, baseline_rmse=float("inf")).passed
    assert quality_gate({**metrics, "nan_predictions": 0, "rmse": 1.0}, baseline_rmse=1.0).passed
