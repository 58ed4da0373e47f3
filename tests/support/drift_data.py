"""Real TLC months as the warehouse's `trips` hold them, scored by a model trained on one of them: shared by the
drift calibration tests and bench/bench_drift_calibration.py (no Dagster, no DuckDB)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from taxi_assets.core.model import PREDICTION, TARGET, predict, train
from taxi_assets.core.tlc import MAX_DURATION_MINUTES, MIN_DURATION_MINUTES
from tests.support.platform import MANIFEST_ROWS, TLC_DIR

MONTHS = sorted(MANIFEST_ROWS)
_RAW = [
    "lpep_pickup_datetime",
    "lpep_dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "passenger_count",
    "trip_distance",
    "fare_amount",
    "total_amount",
]


@functools.cache
def trips(month: str) -> pd.DataFrame:
    """The rides of `month` with the `trips` columns and the seed filter (1 to 60 minutes), in file order."""
    raw = pq.read_table(TLC_DIR / f"green_tripdata_{month}.parquet", columns=_RAW).to_pandas()
    duration = (raw["lpep_dropoff_datetime"] - raw["lpep_pickup_datetime"]).dt.total_seconds() / 60
    frame = pd.DataFrame(
        {
            "pickup_datetime": raw["lpep_pickup_datetime"].astype("datetime64[us]"),
            "PULocationID": raw["PULocationID"].astype("int32"),
            "DOLocationID": raw["DOLocationID"].astype("int32"),
            "passenger_count": raw["passenger_count"].astype("float64"),
            "trip_distance": raw["trip_distance"].astype("float64"),
            "fare_amount": raw["fare_amount"].astype("float64"),
            "total_amount": raw["total_amount"].astype("float64"),
            TARGET: duration,
        }
    )
    return frame[duration.between(MIN_DURATION_MINUTES, MAX_DURATION_MINUTES)].reset_index(drop=True)


@functools.cache
def model(month: str):
    """The default (`hgb`) pipeline trained on `month`."""
    return train(trips(month))


@functools.cache
def scored(month: str, model_month: str) -> pd.DataFrame:
    """`trips(month)` with the prediction of the model trained on `model_month`, sorted by pickup."""
    frame = trips(month)
    frame = frame.assign(**{PREDICTION: predict(model(model_month), frame)})
    return frame.sort_values("pickup_datetime", kind="stable").reset_index(drop=True)


def next_month(month: str) -> str:
    period = pd.Period(month, freq="M") + 1
    return str(period)


def random_windows(rng: np.random.Generator, rows: int, size: int, windows: int) -> np.ndarray:
    """Row numbers of `windows` windows of `size` distinct random rows each."""
    return np.stack([rng.choice(rows, size, replace=False) for _ in range(windows)])


def consecutive_windows(rng: np.random.Generator, rows: int, size: int, windows: int) -> np.ndarray:
    """Row numbers of `windows` windows of `size` consecutive rows (of a frame sorted by pickup) each."""
    starts = rng.integers(0, rows - size + 1, windows)
    return starts[:, None] + np.arange(size)
