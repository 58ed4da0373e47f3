"""The served model predicts exactly what the pipeline's scikit-learn predict does, on every ride of real months:
the model process reads the regressor's trees (compat.boosted_trees) and predicts with boosted_trees.BoostedTrees
instead of scikit-learn's tree walk; the features stay the pipeline's own steps."""

import numpy as np
import pandas as pd
import pytest

from bento_service import compat, model_process
from taxi_assets.core.model import FEATURE_FIELDS, predict, regressor_input, ride_features, train
from tests.support.service_harness import load_rides

# Training real months, and whole months predicted twice: seconds.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipelines() -> dict:
    january = load_rides("2021-01")
    return {recipe: train(january, recipe) for recipe in ("hgb", "hgb_te", "seed")}


@pytest.fixture(scope="module")
def months() -> dict[str, pd.DataFrame]:
    return {month: load_rides(month)[FEATURE_FIELDS] for month in ("2021-02", "2022-01", "2023-03")}


def _columns(rides: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model process's input: what the service parses from a batch."""
    return {
        "PULocationID": rides["PULocationID"].to_numpy("int64"),
        "DOLocationID": rides["DOLocationID"].to_numpy("int64"),
        "trip_distance": rides["trip_distance"].to_numpy("float64"),
        "pickup_datetime": rides["pickup_datetime"].to_numpy("datetime64[us]"),
    }


@pytest.mark.parametrize("recipe", ["hgb", "hgb_te"])
def test_the_served_model_predicts_every_real_ride_bit_for_bit_as_scikit_learn(pipelines, months, recipe) -> None:
    pipeline = pipelines[recipe]
    trees = model_process.served_trees(pipeline, _columns(months["2021-02"].head(100)))
    assert trees is not None
    for month, rides in months.items():
        expected = predict(pipeline, rides)
        # one ride at a time, the bench's 1,000-ride batches, and the whole month at once
        for size, count in ((1, 100), (1000, 5000)):
            served = [
                model_process._predict(pipeline, trees, _columns(rides[i : i + size])) for i in range(0, count, size)
            ]
            np.testing.assert_array_equal(np.concatenate(served), expected[:count], err_msg=f"{month}, by {size}")
        np.testing.assert_array_equal(model_process._predict(pipeline, trees, _columns(rides)), expected)


@pytest.mark.parametrize("recipe", ["hgb", "hgb_te"])
def test_unseen_missing_and_extreme_inputs_predict_as_scikit_learn(pipelines, months, recipe) -> None:
    """Unseen and out-of-range zones (missing categories), missing and extreme distances, missing pickups."""
    pipeline = pipelines[recipe]
    rides = months["2022-01"].head(400).copy()
    rng = np.random.default_rng(0)
    rides["PULocationID"] = rng.choice([1.0, 74.0, 264.0, 265.0, 0.0, 300.0, -5.0, np.nan], len(rides))
    rides["DOLocationID"] = rng.choice([2.0, 75.0, 263.0, 265.0, 0.0, 999.0, np.nan], len(rides))
    rides["trip_distance"] = rng.choice([0.0, 0.01, 0.3, 1.5, 7.0, 50.0, 260_000.0, np.nan, -1.0], len(rides))
    rides.loc[rides.index[::37], "pickup_datetime"] = pd.NaT
    features = regressor_input(pipeline, rides)
    regressor = pipeline.steps[-1][1]
    assert np.isnan(features).any()
    np.testing.assert_array_equal(compat.boosted_trees(regressor).predict(features), regressor.predict(features))
    # A threshold's own value goes left, as in scikit-learn (`value <= threshold`).
    tree = compat.boosted_trees(regressor)
    for column, thresholds, _ in tree._columns:
        if thresholds is not None:
            at_thresholds = np.repeat(features[:1], len(thresholds), axis=0)
            at_thresholds[:, column] = thresholds
            np.testing.assert_array_equal(tree.predict(at_thresholds), regressor.predict(at_thresholds))


def test_a_pipeline_without_gradient_boosting_predicts_itself(pipelines, months) -> None:
    pipeline = pipelines["seed"]
    assert model_process.served_trees(pipeline, _columns(months["2022-01"].head(100))) is None
    rides = months["2022-01"].head(1000)
    np.testing.assert_array_equal(model_process._predict(pipeline, None, _columns(rides)), predict(pipeline, rides))


def test_pickup_hour_and_weekday_are_pandas_own() -> None:
    """`ride_features` computes them with NumPy; pandas' accessors are the reference, NaT, zones and dates before
    1970 included."""
    pickups = pd.Series(
        pd.to_datetime(
            ["2022-01-03 00:00", "2021-02-06 23:59:59.999999", "1969-12-31 23:30", "1900-03-01 05:00", None],
            format="ISO8601",
        )
    )
    zoned = pd.Series(
        pd.to_datetime(["2024-03-10T01:30:00-05:00", "2024-03-10T03:30:00-04:00"], utc=True, format="ISO8601")
    )
    for pickup in (pickups, pickups.astype("datetime64[us]"), zoned.dt.tz_convert("America/New_York")):
        rides = pd.DataFrame({"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1.0, "pickup_datetime": pickup})
        features = ride_features(rides)
        wall_clock = pickup.dt.tz_localize(None) if pickup.dt.tz is not None else pickup
        np.testing.assert_array_equal(features["pickup_hour"], wall_clock.dt.hour.to_numpy("float64"))
        np.testing.assert_array_equal(features["pickup_weekday"], wall_clock.dt.weekday.to_numpy("float64"))


def test_trees_read_wrongly_from_another_scikit_learn_are_not_served(pipelines, months, monkeypatch, caplog) -> None:
    """scikit-learn is not pinned: trees whose internals read differently (a node's value off by a rounding step,
    or an attribute gone) are refused on the warm-up rides, and the pipeline serves, with a warning."""
    pipeline, rides = pipelines["hgb_te"], _columns(months["2022-01"].head(200))
    read = compat.boosted_trees

    def off_by_one_step(regressor):
        trees = read(regressor)
        trees._baseline = np.nextafter(trees._baseline, np.inf)
        return trees

    def gone(regressor):
        raise AttributeError("'HistGradientBoostingRegressor' object has no attribute '_predictors'")

    for reading in (off_by_one_step, gone):
        monkeypatch.setattr(compat, "boosted_trees", reading)
        caplog.clear()
        assert model_process.served_trees(pipeline, rides) is None
        assert "served by the scikit-learn pipeline" in caplog.text
