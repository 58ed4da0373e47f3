"""The model assets materialized on real TLC months: train, gate, deploy, and load back from the BentoML store."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.pipeline import Pipeline

from taxi_assets.core import model
from taxi_assets.core.model import evaluate, predict, train
from taxi_assets.defs.model.assets import GATE_CHECK, deployed_model, duration_model, month_trips, quality_gate
from taxi_assets.defs.trip_data.assets import raw_trips, trips
from tests.support.platform import platform_resources

# BentoML fixes its model store once per process: each test stores models in a process (and store) of its own.
pytestmark = [pytest.mark.integration, pytest.mark.forked]

SEED_RMSE_2021_02 = 7.7587


def load_trips(instance: dg.DagsterInstance, *months: str) -> None:
    for month in months:
        assert dg.materialize(
            [raw_trips, trips], partition_key=month, instance=instance, resources=platform_resources()
        )


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


def gate_evaluation(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == GATE_CHECK]
    return evaluation


def test_model_trained_on_january_is_validated_on_february_and_deployed(platform_env: Path, instance):
    load_trips(instance, "2021-01", "2021-02")

    trained = materialize(instance, duration_model, partition_key="2021-01")
    metadata = materialization_metadata(trained)
    assert metadata["recipe"] == "hgb"
    assert metadata["validation_month"] == "2021-02"
    assert metadata["validated_on"] == "following month"
    assert isinstance(metadata["validation_rmse"], float) and metadata["validation_rmse"] <= 5.8
    assert metadata["training_rows"] > 70_000
    assert metadata["model_size_bytes"] > 0
    gate = gate_evaluation(trained)
    assert gate.passed
    assert gate.metadata["seed_rmse"].value == pytest.approx(SEED_RMSE_2021_02, abs=1e-3)

    deployed = materialize(instance, deployed_model)
    deployed_metadata = materialization_metadata(deployed)
    assert deployed_metadata["source_tag"] == metadata["bentoml_tag"]
    assert deployed_metadata["validation_rmse"] == metadata["validation_rmse"]

    registry = platform_resources()["model_registry"]
    pipeline, info = registry.load_deployed()
    assert info["tag"] == deployed_metadata["deployed_tag"]
    assert info["tag"].startswith("taxi_duration_deployed:")
    assert (info["training_month"], info["validation_month"]) == ("2021-01", "2021-02")
    tag_version = info["tag"].split(":")[1]
    assert (platform_env / "bentoml" / "models" / "taxi_duration_deployed" / tag_version).is_dir()

    # The deployed copy predicts what the same recipe, trained afresh on the same rows, predicts.
    with platform_resources()["warehouse"].get_connection() as conn:
        january, february = month_trips(conn, "2021-01"), month_trips(conn, "2021-02")
    np.testing.assert_allclose(predict(pipeline, february), predict(train(january, "hgb"), february))
    assert evaluate(pipeline, february)["rmse"] == pytest.approx(metadata["validation_rmse"])


def constant_pipeline() -> Pipeline:
    """A deliberately useless model: every ride lasts the training mean."""
    return Pipeline([("features", model.build_pipeline("hgb").steps[0][1]), ("regressor", DummyRegressor())])


def test_quality_gate_blocks_a_model_worse_than_seed_and_deployment_refuses_it(instance, monkeypatch):
    monkeypatch.setitem(model.RECIPES, "constant", constant_pipeline)
    load_trips(instance, "2021-01")

    result = materialize(
        instance, duration_model, {"recipe": "constant"}, partition_key="2021-01", raise_on_error=False
    )
    metadata = materialization_metadata(result)
    assert metadata["validated_on"] == "training month (in-sample)"
    gate = gate_evaluation(result)
    assert not gate.passed
    assert gate.severity == dg.AssetCheckSeverity.ERROR
    assert gate.metadata["rmse"].value > gate.metadata["seed_rmse"].value

    refused = materialize(instance, deployed_model, {"recipe": "constant"}, raise_on_error=False)
    assert not refused.success
    assert "did not pass its quality gate" in str(refused.get_step_failure_events()[0].step_failure_data.error)


def test_deployment_refuses_a_month_without_a_model(instance):
    result = materialize(instance, deployed_model, {"training_month": "2023-04"}, raise_on_error=False)
    assert not result.success
    assert "no taxi_duration model for 2023-04" in str(result.get_step_failure_events()[0].step_failure_data.error)


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
