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


def rows_version(conn: duckdb.DuckDBPyConnection, table: str, columns: list[str], where: str, params: dict) -> tuple:
    """A fingerprint of the rows of `table` that match `where`: their count and a hash of their `columns`, the same
    as long as they have not been replaced by other rows (a step that read them, let go of the warehouse and came
    back can tell whether what it computed still matches the table); (0, 0) for no rows or no table."""
    if not conn.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = $table", {"table": table}).fetchall():
        return 0, 0
    count, digest = conn.execute(
        f"SELECT count(*), coalesce(sum(hash({', '.join(columns)})), 0) FROM {table} WHERE {where}", params
    ).fetchone()
    return int(count), int(digest)


def trips_version(conn: duckdb.DuckDBPyConnection, month: str) -> tuple[int, int]:
    """`rows_version` of the trips of `month`."""
    return rows_version(conn, "trips", TRIP_COLUMNS, "month = $month", {"month": month})


def predictions_version(conn: duckdb.DuckDBPyConnection, month: str, model_tag: str) -> tuple[int, int]:
    """`rows_version` of `batch_predictions` of `month` by `model_tag`."""
    columns = [*TRIP_COLUMNS, PREDICTION]
    return rows_version(
        conn, "batch_predictions", columns, "month = $month AND model_tag = $tag", {"month": month, "tag": model_tag}
    )


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
