"""The ride-duration model: one scikit-learn Pipeline that prepares its own features from raw ride fields.

Training, batch scoring and the Bento service all call the same pipeline, so they cannot disagree on features.
The feature functions are module-level so that pickled pipelines refer to them by name instead of by value.
"""

import functools
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

# scikit-learn is imported where a pipeline is built: it takes about a second, and every Dagster run process
# imports this module while loading the code location.
if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

FEATURE_FIELDS = ["PULocationID", "DOLocationID", "trip_distance", "pickup_datetime"]
TARGET = "duration"
DEFAULT_RECIPE = "hgb"
BASELINE_RECIPE = "seed"
RANDOM_STATE = 42

LOCATION_FIELDS = ["PULocationID", "DOLocationID"]
# HistGradientBoosting accepts at most 255 categories per feature; green taxis visit up to ~260 zones a month,
# so the rarest zones share one category instead of failing the fit.
MAX_LOCATION_CATEGORIES = 254


# Gradient boosting runs on OpenMP, whose idle threads spin. On the shared 2-core host, busy with Dagster and the
# Bento service, a two-thread fit took 17-19 s and a one-row prediction 120-190 ms; one thread took 1.4 s and
# 10-20 ms. One thread costs ~0.5 s of fit when the machine is idle.
@functools.cache
def _openmp() -> ThreadpoolController:
    """Built on first use, once scikit-learn has loaded its OpenMP runtime (a controller sees only loaded ones)."""
    return ThreadpoolController()


def ride_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Model features from raw ride fields; `pickup_datetime` may be datetime64 or ISO-8601 strings."""
    pickup = pd.to_datetime(frame["pickup_datetime"], format="ISO8601")
    if pickup.dt.tz is not None:
        # A served request may carry an offset; the model learnt local wall-clock hours.
        pickup = pickup.dt.tz_localize(None)
    locations = frame[LOCATION_FIELDS].apply(pd.to_numeric).astype("Int64")
    return pd.DataFrame(
        {
            "PULocationID": locations["PULocationID"].astype("float64"),
            "DOLocationID": locations["DOLocationID"].astype("float64"),
            "PU_DO": locations["PULocationID"].astype(str) + "_" + locations["DOLocationID"].astype(str),
            "trip_distance": pd.to_numeric(frame["trip_distance"]).astype("float64"),
            "pickup_hour": pickup.dt.hour.astype("float64"),
            "pickup_weekday": pickup.dt.weekday.astype("float64"),
        },
        index=frame.index,
    )


def route_records(features: pd.DataFrame) -> list[dict]:
    """The seed model's input: the pickup-dropoff pair as one category, plus the distance."""
    return features[["PU_DO", "trip_distance"]].to_dict(orient="records")


def _seed_pipeline() -> "Pipeline":
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    return Pipeline(
        [
            ("features", FunctionTransformer(ride_features)),
            ("records", FunctionTransformer(route_records)),
            ("vectorizer", DictVectorizer()),
            ("regressor", LinearRegression()),
        ]
    )


def _hgb_pipeline() -> "Pipeline":
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    columns = ColumnTransformer(
        [
            (
                "locations",
                OrdinalEncoder(
                    max_categories=MAX_LOCATION_CATEGORIES,
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                ),
                LOCATION_FIELDS,
            ),
            ("numeric", "passthrough", ["trip_distance", "pickup_hour", "pickup_weekday"]),
        ]
    )
    return Pipeline(
        [
            ("features", FunctionTransformer(ride_features)),
            ("columns", columns),
            (
                "regressor",
                HistGradientBoostingRegressor(categorical_features=[0, 1], random_state=RANDOM_STATE),
            ),
        ]
    )


RECIPES = {"seed": _seed_pipeline, "hgb": _hgb_pipeline}


def build_pipeline(recipe: str = DEFAULT_RECIPE) -> "Pipeline":
    """An unfitted pipeline for `recipe`: `seed` (the course's linear model) or `hgb` (gradient boosting)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[recipe]()


def train(frame: pd.DataFrame, recipe: str = DEFAULT_RECIPE) -> "Pipeline":
    """A pipeline for `recipe` fitted on the rides in `frame` (FEATURE_FIELDS and TARGET)."""
    pipeline = build_pipeline(recipe)
    with _openmp().limit(limits=1, user_api="openmp"):
        return pipeline.fit(frame[FEATURE_FIELDS], frame[TARGET].to_numpy())


def timed_train(frame: pd.DataFrame, recipe: str = DEFAULT_RECIPE) -> tuple["Pipeline", float]:
    """`train`, and how many seconds the fit took."""
    started = time.perf_counter()
    pipeline = train(frame, recipe)
    return pipeline, time.perf_counter() - started


def predict(pipeline: "Pipeline", rides: pd.DataFrame | list[dict]) -> np.ndarray:
    """Predicted durations in minutes for rides given as a DataFrame or as records with FEATURE_FIELDS."""
    frame = pd.DataFrame(rides, columns=FEATURE_FIELDS) if isinstance(rides, list) else rides[FEATURE_FIELDS]
    with _openmp().limit(limits=1, user_api="openmp"):
        return np.asarray(pipeline.predict(frame), dtype="float64")


def evaluate(pipeline: "Pipeline", frame: pd.DataFrame) -> dict:
    """Regression quality in minutes on `frame`.

    `mean_error` is prediction minus actual; `nan_predictions` counts predictions that are not numbers.
    """
    predictions = predict(pipeline, frame)
    errors = predictions - frame[TARGET].to_numpy(dtype="float64")
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "mean_error": float(np.mean(errors)),
        "rows": len(frame),
        "nan_predictions": int(np.isnan(predictions).sum()),
    }
