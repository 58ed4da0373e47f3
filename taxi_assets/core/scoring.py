"""Batch scoring: a month of `trips` with the deployed pipeline's prediction and error, and the scored months
read back from `batch_predictions`. Pure (DuckDB and pandas); shared by the batch and online monitoring."""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from taxi_assets.core.model import PREDICTION, TARGET, predict

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

# The columns of `trips` that scoring keeps beside the prediction: the model's inputs and what the monitoring
# compares (fares and passengers are not model inputs but drift like them).
TRIP_COLUMNS = [
    "pickup_datetime",
    "PULocationID",
    "DOLocationID",
    "passenger_count",
    "trip_distance",
    "fare_amount",
    "total_amount",
    TARGET,
]


def score_trips(conn: duckdb.DuckDBPyConnection, month: str, pipeline: Pipeline, model_tag: str) -> pd.DataFrame:
    """The trips of `month` with the pipeline's prediction and its error (prediction - actual), in minutes."""
    return score(trip_rows(conn, month), pipeline, model_tag)


def trip_rows(conn: duckdb.DuckDBPyConnection, month: str) -> pd.DataFrame:
    """The `TRIP_COLUMNS` of the trips of `month`, for `score`: a step can read them, close the warehouse and score."""
    return conn.execute(f"SELECT {', '.join(TRIP_COLUMNS)} FROM trips WHERE month = $month", {"month": month}).df()


def trips_version(conn: duckdb.DuckDBPyConnection, month: str) -> tuple[int, int]:
    """A fingerprint of the trips of `month`: their count and a hash of their `TRIP_COLUMNS`, the same as long as the
    month has not been replaced by other rows (a step that read them, let go of the warehouse and came back can
    tell whether what it computed still matches the table)."""
    count, digest = conn.execute(
        f"SELECT count(*), coalesce(sum(hash({', '.join(TRIP_COLUMNS)})), 0) FROM trips WHERE month = $month",
        {"month": month},
    ).fetchone()
    return int(count), int(digest)


def score(trips: pd.DataFrame, pipeline: Pipeline, model_tag: str) -> pd.DataFrame:
    """`trip_rows` with the pipeline's prediction and its error (prediction - actual), in minutes."""
    prediction = predict(pipeline, trips) if len(trips) else []
    return trips.assign(
        model_tag=model_tag, **{PREDICTION: prediction}, error=lambda frame: frame[PREDICTION] - frame[TARGET]
    )


def stored_predictions(conn: duckdb.DuckDBPyConnection, month: str, model_tag: str) -> pd.DataFrame:
    """`batch_predictions` of `month` by `model_tag`, with the pickup borough; empty when not scored by it."""
    return conn.execute(
        f"""SELECT {", ".join(f"p.{column}" for column in TRIP_COLUMNS)}, p.{PREDICTION}, z.Borough AS borough
        FROM batch_predictions p LEFT JOIN taxi_zones z ON z.LocationID = p.PULocationID
        WHERE p.month = $month AND p.model_tag = $tag""",
        {"month": month, "tag": model_tag},
    ).df()
