"""The model pipeline on real TLC months: the course's seed figure, the default recipe's gain, feature handling."""

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from taxi_assets.core.model import (
    FEATURE_FIELDS,
    build_pipeline,
    evaluate,
    predict,
    ride_features,
    route_records,
    timed_train,
)

pytestmark = pytest.mark.unit

# The course model (DictVectorizer on PU_DO + trip_distance, LinearRegression), trained on green 2021-01.
SEED_RMSE_2021_02 = 7.7587


def seed_filtered_month(tlc_dir: Path, month: str) -> pd.DataFrame:
    """One TLC month with the course's seed filter (1 ≤ duration ≤ 60 min), read straight from parquet."""
    return duckdb.sql(
        f"""
        SELECT PULocationID, DOLocationID, trip_distance, lpep_pickup_datetime AS pickup_datetime,
            date_diff('microsecond', lpep_pickup_datetime, lpep_dropoff_datetime) / 60e6 AS duration
        FROM read_parquet('{tlc_dir / f"green_tripdata_{month}.parquet"}')
        WHERE duration BETWEEN 1 AND 60
        """
    ).df()


@pytest.fixture(scope="module")
def january(tlc_dir: Path) -> pd.DataFrame:
    return seed_filtered_month(tlc_dir, "2021-01")


@pytest.fixture(scope="module")
def february(tlc_dir: Path) -> pd.DataFrame:
    return seed_filtered_month(tlc_dir, "2021-02")


@pytest.fixture(scope="module")
def trained(january: pd.DataFrame) -> dict[str, tuple]:
    return {recipe: timed_train(january, recipe) for recipe in ("seed", "hgb")}


def test_seed_recipe_reproduces_the_course_rmse(trained, february):
    pipeline, _ = trained["seed"]
    metrics = evaluate(pipeline, february)
    assert metrics["rmse"] == pytest.approx(SEED_RMSE_2021_02, abs=1e-3)
    assert metrics["rows"] == len(february)
    assert metrics["nan_predictions"] == 0


def test_default_recipe_beats_seed_by_a_quarter_within_30_seconds(trained, february):
    pipeline, seconds = trained["hgb"]
    rmse = evaluate(pipeline, february)["rmse"]
    assert rmse <= 5.8
    assert rmse <= 0.75 * evaluate(trained["seed"][0], february)["rmse"]
    assert seconds < 30


def test_default_recipe_is_deterministic(january, february, trained):
    again, _ = timed_train(january, "hgb")
    sample = february.head(2000)
    np.testing.assert_array_equal(predict(again, sample), predict(trained["hgb"][0], sample))


def test_evaluate_reports_signed_error_as_prediction_minus_actual(trained, february):
    pipeline, _ = trained["hgb"]
    sample = february.head(500)
    predictions = predict(pipeline, sample)
    metrics = evaluate(pipeline, sample)
    errors = predictions - sample["duration"].to_numpy()
    assert metrics["mean_error"] == pytest.approx(errors.mean())
    assert metrics["mae"] == pytest.approx(np.abs(errors).mean())
    assert metrics["rmse"] == pytest.approx(np.sqrt((errors**2).mean()))


@pytest.mark.parametrize("recipe", ["seed", "hgb"])
def test_iso_strings_records_and_datetimes_predict_alike(trained, february, recipe):
    pipeline, _ = trained[recipe]
    sample = february.head(200)[FEATURE_FIELDS]
    as_strings = sample.assign(pickup_datetime=sample["pickup_datetime"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
    expected = predict(pipeline, sample)
    np.testing.assert_allclose(predict(pipeline, as_strings), expected)
    np.testing.assert_allclose(predict(pipeline, as_strings.to_dict(orient="records")), expected)


def test_features_come_from_raw_ride_fields():
    rides = pd.DataFrame(
        {
            "PULocationID": [74, 43],
            "DOLocationID": [75, 151],
            "trip_distance": [1.5, 3.0],
            "pickup_datetime": ["2021-02-01T08:15:00", "2021-02-06T23:59:59"],
        }
    )
    features = ride_features(rides)
    assert [record["PU_DO"] for record in route_records(features)] == ["74_75", "43_151"]
    assert features["pickup_hour"].tolist() == [8, 23]
    assert features["pickup_weekday"].tolist() == [0, 5]  # a Monday and a Saturday


def test_unknown_zone_still_gets_a_prediction(trained):
    pipeline, _ = trained["hgb"]
    ride = [{"PULocationID": 999, "DOLocationID": 998, "trip_distance": 2.0, "pickup_datetime": "2021-02-01T08:00"}]
    assert np.isfinite(predict(pipeline, ride)).all()


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="unknown recipe"):
        build_pipeline("xgboost")
