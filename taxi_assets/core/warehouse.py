"""The warehouse schema and its one write pattern: every table the platform keeps in DuckDB, and the
transactional swap of one partition.

Pure module (duckdb, no dagster): the assets create their tables from here and write through
`replace_partition`, so readers always see a whole partition, old or new.
"""

from collections.abc import Mapping

import duckdb

from taxi_assets.core.tlc import RAW_COLUMNS

RAW_TRIPS_DDL = "CREATE TABLE IF NOT EXISTS raw_trips (month VARCHAR NOT NULL, {columns})".format(
    columns=", ".join(f'"{name}" {sql_type}' for name, sql_type in RAW_COLUMNS.items())
)

TRIPS_DDL = """
CREATE TABLE IF NOT EXISTS trips (
    month VARCHAR NOT NULL,
    pickup_datetime TIMESTAMP,
    dropoff_datetime TIMESTAMP,
    PULocationID INTEGER,
    DOLocationID INTEGER,
    passenger_count DOUBLE,
    trip_distance DOUBLE,
    fare_amount DOUBLE,
    total_amount DOUBLE,
    duration DOUBLE
)
"""

BATCH_PREDICTIONS_DDL = """
CREATE TABLE IF NOT EXISTS batch_predictions (
    month VARCHAR, model_tag VARCHAR, pickup_datetime TIMESTAMP, PULocationID INTEGER, DOLocationID INTEGER,
    passenger_count DOUBLE, trip_distance DOUBLE, fare_amount DOUBLE, total_amount DOUBLE,
    duration DOUBLE, prediction DOUBLE, error DOUBLE
)"""

DRIFT_METRICS_DDL = """
CREATE TABLE IF NOT EXISTS drift_metrics (month VARCHAR, metric VARCHAR, column_or_segment VARCHAR, value DOUBLE)
"""

# One profile per deployed model (taxi_assets.core.profile): the reference statistics, calibrated thresholds and
# validation residuals the monitoring compares with, as JSON.
REFERENCE_PROFILE_DDL = """
CREATE TABLE IF NOT EXISTS reference_profile (
    model_tag VARCHAR PRIMARY KEY, reference_month VARCHAR, validation_month VARCHAR, created_at TIMESTAMPTZ,
    profile JSON
)"""

# The prediction log: predictions and feedback each under the UTC day they were logged, so an ingested day never
# changes again when feedback for its rides arrives later.
PREDICTION_LOG_DDL = """
CREATE TABLE IF NOT EXISTS prediction_log (
    day VARCHAR, id VARCHAR, ts TIMESTAMP, model_tag VARCHAR, PULocationID INTEGER, DOLocationID INTEGER,
    trip_distance DOUBLE, pickup_datetime TIMESTAMP, prediction DOUBLE
)"""
PREDICTION_FEEDBACK_DDL = """
CREATE TABLE IF NOT EXISTS prediction_feedback (day VARCHAR, id VARCHAR, ts TIMESTAMP, actual_duration DOUBLE)
"""
# Every prediction with the latest feedback for its ride id, whichever day that feedback landed on; feedback
# sent twice for one ride counts once.
ONLINE_PREDICTIONS_VIEW = """
CREATE OR REPLACE VIEW online_predictions AS
SELECT p.*, f.actual_duration, p.prediction - f.actual_duration AS error, f.ts AS feedback_ts
FROM prediction_log p
LEFT JOIN (
    SELECT id, arg_max(actual_duration, ts) AS actual_duration, max(ts) AS ts FROM prediction_feedback GROUP BY id
) f ON f.id = p.id
"""
PREDICTION_LOG_SCHEMA = (PREDICTION_LOG_DDL, PREDICTION_FEEDBACK_DDL, ONLINE_PREDICTIONS_VIEW)

# Log times are ISO 8601 with an offset; stored as naive UTC whatever the session's time zone. The service writes
# UTC (`+00:00`): that suffix is cut and the rest read as a plain timestamp, 40 % less ingest time than the
# general TIMESTAMPTZ cast, which every other offset still takes.
_UTC = (
    "CASE WHEN suffix({0}, '+00:00') THEN CAST(left({0}, -6) AS TIMESTAMP) "
    "ELSE CAST({0} AS TIMESTAMPTZ) AT TIME ZONE 'UTC' END"
)
# One day of staged log records (`log_records`, see taxi_assets.core.predlog) into the two log tables.
PREDICTION_LOG_DAY_SELECTS = {
    "prediction_log": f"""SELECT $day, id, {_UTC.format("ts")}, model_tag, PULocationID, DOLocationID,
        trip_distance, CAST(pickup_datetime AS TIMESTAMP), prediction FROM log_records WHERE kind = 'prediction'""",
    "prediction_feedback": f"""SELECT $day, id, {_UTC.format("ts")}, actual_duration
        FROM log_records WHERE kind = 'feedback'""",
}


def replace_rows(conn: duckdb.DuckDBPyConnection, table: str, column: str, key: str, select_sql: str) -> int:
    """Replace the rows of `table` whose `column` is `key` by those of `select_sql` (with `$<column>` bound to
    `key`), inside the caller's transaction; return how many rows the partition holds now."""
    params = {column: key}
    conn.execute(f"DELETE FROM {table} WHERE {column} = ${column}", params)
    conn.execute(f"INSERT INTO {table} {select_sql}", params)
    (rows,) = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = ${column}", params).fetchone()
    return rows


def replace_partition(
    conn: duckdb.DuckDBPyConnection, column: str, key: str, selects: Mapping[str, str]
) -> dict[str, int]:
    """Swap one partition (`column` = `key`) of every table in `selects` for its select's rows, in one transaction.

    Readers see the old partition or the new one, never a mix; a failure or a crash before the commit leaves
    every table with its previous rows. Returns the rows per table.
    """
    conn.execute("BEGIN TRANSACTION")
    try:
        rows = {table: replace_rows(conn, table, column, key, select_sql) for table, select_sql in selects.items()}
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return rows
