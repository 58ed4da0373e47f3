"""The ride-duration model: one scikit-learn Pipeline that prepares its own features from raw ride fields.

Training, batch scoring and the Bento service all call the same pipeline, so they cannot disagree on features.
The feature functions are module-level so that pickled pipelines refer to them by name instead of by value.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from threadpoolctl import ThreadpoolController

from taxi_assets.core.tlc import MAX_LOCATION_ID

# scikit-learn is imported where a pipeline is built (about a second) and pandas where a frame is made (see
# taxi_assets.core): every Dagster run process imports this module while loading the code location.
if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

FEATURE_FIELDS = ["PULocationID", "DOLocationID", "trip_distance", "pickup_datetime"]
# Column names of a scored ride everywhere: the actual duration and the model's, in minutes.
TARGET = "duration"
PREDICTION = "prediction"
DEFAULT_RECIPE = "hgb_te"
BASELINE_RECIPE = "seed"
RANDOM_STATE = 42

LOCATION_FIELDS = ["PULocationID", "DOLocationID"]
NUMERIC_FEATURES = ["trip_distance", "pickup_hour", "pickup_weekday"]
# The columns `ride_features` derives from the raw ride fields, in order.
RIDE_FEATURES = LOCATION_FIELDS + NUMERIC_FEATURES
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
    """Model features from raw ride fields; `pickup_datetime` may be datetime64 or ISO-8601 strings.

    Served a batch at a time, so the work is NumPy's on whole columns, and the frame is built from one float
    matrix: pandas' per-column accessors and a frame of five separate columns cost the service more than the
    arithmetic (0.35 against 0.1 ms per 1,000 rides).
    """
    import pandas as pd

    pickup = frame["pickup_datetime"]
    if not pd.api.types.is_datetime64_any_dtype(pickup):
        pickup = pd.to_datetime(pickup, format="ISO8601")
    if isinstance(pickup.dtype, pd.DatetimeTZDtype):
        # A served request may carry an offset; the model learnt local wall-clock hours.
        pickup = pickup.dt.tz_localize(None)
    moments = pickup.to_numpy()
    hours = moments.astype("datetime64[h]").astype("int64")  # since 1970-01-01 00:00, a Thursday (weekday 3)
    hour, weekday = (hours % 24).astype("float64"), ((hours // 24 + 3) % 7).astype("float64")
    hour[np.isnat(moments)] = weekday[np.isnat(moments)] = np.nan
    numeric = [pd.to_numeric(frame[field]).to_numpy("float64") for field in [*LOCATION_FIELDS, "trip_distance"]]
    return pd.DataFrame(np.column_stack([*numeric, hour, weekday]), columns=RIDE_FEATURES, index=frame.index)


def route_records(features: pd.DataFrame) -> list[dict]:
    """The seed model's input: the pickup-dropoff pair as one category ("PU_DO"), plus the distance."""
    import pandas as pd

    pickup = features["PULocationID"].astype("int64").astype(str)
    dropoff = features["DOLocationID"].astype("int64").astype(str)
    return pd.DataFrame({"PU_DO": pickup + "_" + dropoff, "trip_distance": features["trip_distance"]}).to_dict(
        orient="records"
    )


class LocationCodes:
    """Zone IDs as HistGradientBoosting category codes, other features passed through, as one float array.

    The most frequent zones keep a code each, the rest of the zones seen in training share one, and a zone never
    seen is missing (NaN), which the trees route as they learnt for missing values. A lookup table makes the
    transform a single NumPy indexing per column, so a one-ride prediction pays microseconds for it.
    """

    def fit(self, features: pd.DataFrame, y=None) -> LocationCodes:
        self.tables_ = [self._table(features[field].to_numpy()) for field in LOCATION_FIELDS]
        return self

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        columns = [
            self._lookup(table, features[field].to_numpy())
            for table, field in zip(self.tables_, LOCATION_FIELDS, strict=True)
        ]
        columns += [features[field].to_numpy("float64") for field in NUMERIC_FEATURES]
        return np.column_stack(columns)

    def fit_transform(self, features: pd.DataFrame, y=None) -> np.ndarray:
        return self.fit(features).transform(features)

    @staticmethod
    def _table(ids: np.ndarray) -> np.ndarray:
        seen, counts = np.unique(ids[~np.isnan(ids)].astype("int64"), return_counts=True)
        seen, counts = seen[(seen >= 0) & (seen <= MAX_LOCATION_ID)], counts[(seen >= 0) & (seen <= MAX_LOCATION_ID)]
        table = np.full(MAX_LOCATION_ID + 1, np.nan)
        table[seen] = MAX_LOCATION_CATEGORIES - 1
        frequent = np.sort(seen[np.argsort(-counts, kind="stable")[: MAX_LOCATION_CATEGORIES - 1]])
        table[frequent] = np.arange(len(frequent))
        return table

    @staticmethod
    def _lookup(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
        valid = (ids >= 0) & (ids <= MAX_LOCATION_ID)
        codes = np.full(len(ids), np.nan)
        codes[valid] = table[ids[valid].astype("int64")]
        return codes


class RouteEncodedCodes(LocationCodes):
    """`LocationCodes` plus three target encodings of the pickup-dropoff pair: its smoothed mean duration, mean
    pace (minutes per mile) and mean log-duration, learnt from the training rides.

    The encodings are tables indexed by pair code (266 x 266 floats each), so serving one ride is a few NumPy
    lookups. Smoothing is an m-estimate towards the training-wide mean: (sum + m * prior) / (count + m); a pair
    never seen gets the prior.

    The training rows are encoded out of fold (cross-fitting): `fit_transform`, which the Pipeline calls while
    fitting, encodes each row with tables learnt on the other folds, so the trees never see a row's own duration
    in its encoding and learn how far an encoding is to be trusted out of sample. `transform` (validation, batch
    scoring, serving) uses the tables learnt on all training rides.
    """

    FOLDS = 5
    # m = 1 measured best of 1, 3, 5, 20 and 50 on the seven consecutive month pairs (bench/bench_model.py).
    SMOOTHING = 1.0
    # Pace divides by the distance; sub-0.3-mile rides (zero-distance ones included) count as 0.3 miles.
    MIN_PACE_MILES = 0.3

    def fit(self, features: pd.DataFrame, y=None) -> RouteEncodedCodes:
        super().fit(features)
        self.encodings_ = self._encodings(features, np.asarray(y, dtype="float64"))
        return self

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        return np.column_stack([super().transform(features), self._encode(features, self.encodings_)])

    def fit_transform(self, features: pd.DataFrame, y=None) -> np.ndarray:
        y = np.asarray(y, dtype="float64")
        self.fit(features, y)
        folds = np.random.default_rng(RANDOM_STATE).integers(0, self.FOLDS, len(features))
        encoded = np.empty((len(features), len(self.encodings_)))
        for fold in range(self.FOLDS):
            held_out = folds == fold
            inside = self._encodings(features[~held_out], y[~held_out])
            encoded[held_out] = self._encode(features[held_out], inside)
        return np.column_stack([super().transform(features), encoded])

    @staticmethod
    def _pairs(features: pd.DataFrame) -> np.ndarray:
        """Pair code PU * 266 + DO, or -1 when a zone is missing or out of range."""
        pickup, dropoff = features["PULocationID"].to_numpy(), features["DOLocationID"].to_numpy()
        valid = (pickup >= 0) & (pickup <= MAX_LOCATION_ID) & (dropoff >= 0) & (dropoff <= MAX_LOCATION_ID)
        codes = np.full(len(pickup), -1, dtype="int64")
        codes[valid] = pickup[valid].astype("int64") * (MAX_LOCATION_ID + 1) + dropoff[valid].astype("int64")
        return codes

    @classmethod
    def _encodings(cls, features: pd.DataFrame, y: np.ndarray) -> list[tuple[float, np.ndarray]]:
        pairs = cls._pairs(features)
        known = pairs >= 0
        size = (MAX_LOCATION_ID + 1) ** 2
        counts = np.bincount(pairs[known], minlength=size)
        distance = np.clip(np.nan_to_num(features["trip_distance"].to_numpy("float64")), cls.MIN_PACE_MILES, None)
        encodings = []
        for target in (y, y / distance, np.log(y)):
            prior = float(target.mean())
            sums = np.bincount(pairs[known], weights=target[known], minlength=size)
            encodings.append((prior, (sums + cls.SMOOTHING * prior) / (counts + cls.SMOOTHING)))
        return encodings

    @classmethod
    def _encode(cls, features: pd.DataFrame, encodings: list[tuple[float, np.ndarray]]) -> np.ndarray:
        pairs = cls._pairs(features)
        known = pairs >= 0
        columns = []
        for prior, table in encodings:
            column = np.full(len(pairs), prior)
            column[known] = table[pairs[known]]
            columns.append(column)
        return np.column_stack(columns)


def _seed_pipeline() -> Pipeline:
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


def _hgb_pipeline() -> Pipeline:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    return Pipeline(
        [
            ("features", FunctionTransformer(ride_features)),
            ("codes", LocationCodes()),
            (
                "regressor",
                HistGradientBoostingRegressor(categorical_features=[0, 1], random_state=RANDOM_STATE),
            ),
        ]
    )


def _hgb_te_pipeline() -> Pipeline:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    return Pipeline(
        [
            ("features", FunctionTransformer(ride_features)),
            ("codes", RouteEncodedCodes()),
            (
                "regressor",
                # 100 rounds without early stopping (which holds out 10% of the month). 300 rounds score 0.02 RMSE
                # better on every month pair but cost 2.3x per predicted row: /predict_batch fell from ~61k to
                # ~36k rides/s, below its 50k goal; 100 rounds cost what the `hgb` recipe does.
                HistGradientBoostingRegressor(
                    categorical_features=[0, 1], max_iter=100, early_stopping=False, random_state=RANDOM_STATE
                ),
            ),
        ]
    )


RECIPES = {"seed": _seed_pipeline, "hgb": _hgb_pipeline, "hgb_te": _hgb_te_pipeline}


def build_pipeline(recipe: str = DEFAULT_RECIPE) -> Pipeline:
    """An unfitted pipeline for `recipe`: `seed` (the course's linear model), `hgb` (gradient boosting on zones,
    distance, hour and weekday) or `hgb_te` (the same plus cross-fitted target encodings of the zone pair)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[recipe]()


def train(frame: pd.DataFrame, recipe: str = DEFAULT_RECIPE) -> Pipeline:
    """A pipeline for `recipe` fitted on the rides in `frame` (FEATURE_FIELDS and TARGET)."""
    pipeline = build_pipeline(recipe)
    with _openmp().limit(limits=1, user_api="openmp"):
        return pipeline.fit(frame[FEATURE_FIELDS], frame[TARGET].to_numpy())


def timed_train(frame: pd.DataFrame, recipe: str = DEFAULT_RECIPE) -> tuple[Pipeline, float]:
    """`train`, and how many seconds the fit took."""
    started = time.perf_counter()
    pipeline = train(frame, recipe)
    return pipeline, time.perf_counter() - started


def predict(pipeline: Pipeline, rides: pd.DataFrame | list[dict]) -> np.ndarray:
    """Predicted durations in minutes for rides given as a DataFrame or as records with FEATURE_FIELDS."""
    import pandas as pd

    frame = pd.DataFrame(rides, columns=FEATURE_FIELDS) if isinstance(rides, list) else rides[FEATURE_FIELDS]
    with _openmp().limit(limits=1, user_api="openmp"):
        return np.asarray(pipeline.predict(frame), dtype="float64")


def regressor_input(pipeline: Pipeline, rides: pd.DataFrame):
    """What the pipeline's last step (its regressor) is given to predict `rides` (FEATURE_FIELDS): the output of
    the steps before it, in order, as `predict` computes it."""
    inputs = rides
    for _, step in pipeline.steps[:-1]:
        inputs = step.transform(inputs)
    return inputs


class ErrorSummary(NamedTuple):
    """Regression quality in minutes; `mean_error` is prediction minus actual (positive: predicted too long)."""

    rows: int
    rmse: float
    mae: float
    mean_error: float


def error_summary(errors: np.ndarray | pd.Series) -> ErrorSummary:
    """RMSE, MAE and mean error of `errors` (prediction - actual), the one place their formulas live."""
    errors = np.asarray(errors, dtype="float64")
    return ErrorSummary(
        len(errors),
        float(np.sqrt(np.mean(errors**2))),
        float(np.mean(np.abs(errors))),
        float(np.mean(errors)),
    )


def evaluate(pipeline: Pipeline, frame: pd.DataFrame) -> dict:
    """Regression quality in minutes on `frame` (`error_summary`'s fields as a dict); `nan_predictions` counts
    predictions that are not numbers."""
    predictions = predict(pipeline, frame)
    summary = error_summary(predictions - frame[TARGET].to_numpy(dtype="float64"))
    return {**summary._asdict(), "nan_predictions": int(np.isnan(predictions).sum())}


# What permutation importance shuffles: the model's inputs as `ride_features` derives them from the raw ride
# fields, so pickup_datetime counts as its hour and its weekday (the names the drift monitoring uses).
IMPORTANCE_FEATURES = RIDE_FEATURES
IMPORTANCE_ROWS = 5000
IMPORTANCE_REPEATS = 3


def permutation_importance(
    pipeline: Pipeline,
    frame: pd.DataFrame,
    rows: int = IMPORTANCE_ROWS,
    repeats: int = IMPORTANCE_REPEATS,
    seed: int = RANDOM_STATE,
) -> dict[str, float]:
    """How much worse the model gets, in RMSE minutes, when one input is shuffled across rides: the mean over
    `repeats` shuffles of a fixed sample of `rows` rides from `frame` (FEATURE_FIELDS and TARGET), per
    IMPORTANCE_FEATURES. 0 means the model ignores the input; the increase is not bounded.

    Shuffling happens after the pipeline's `features` step, so the hour and the weekday of the pickup are
    shuffled separately and every recipe is measured on the same inputs.
    """
    sample = frame.sample(n=min(rows, len(frame)), random_state=seed)
    features = pipeline.named_steps["features"].transform(sample[FEATURE_FIELDS])
    rest = pipeline[1:]
    actual = sample[TARGET].to_numpy(dtype="float64")
    rng = np.random.default_rng(seed)
    with _openmp().limit(limits=1, user_api="openmp"):
        baseline = error_summary(rest.predict(features) - actual).rmse
        importance = {}
        for name in IMPORTANCE_FEATURES:
            increases = []
            for _ in range(repeats):
                shuffled = features.copy()
                shuffled[name] = rng.permutation(shuffled[name].to_numpy())
                increases.append(error_summary(rest.predict(shuffled) - actual).rmse - baseline)
            importance[name] = float(np.mean(increases))
    return importance


def challenger_gain(champion_rmse: float, challenger_rmse: float) -> float:
    """Relative RMSE gain of the challenger over the champion on the same rides: 0.1 means 10% lower RMSE."""
    return (champion_rmse - challenger_rmse) / champion_rmse
