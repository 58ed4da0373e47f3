"""Prediction-log store: the Bento service writes prediction and feedback records, the Dagster ingest reads them.

Two stores, chosen by URI (`TAXI_PREDLOG_URI`, see taxi_assets.settings):

* a directory (embedded default `data/prediction_logs`): append-only JSON-lines segment files (files.py);
* `mongodb://…`: a local journal laid out like the embedded store, shipped to MongoDB by a background thread
  (mongo.py); while MongoDB is unreachable the journal is the spool.

Durability (both stores): an appended record is in the operating system's page cache before `append` returns,
so a record the service acknowledged survives `kill -9` of the service; fsync follows within a second.

Reader cursors are small JSON values: the reader reports what is new after a cursor and hands back the cursor
covering what it reported, and the caller stores that cursor once it has ingested the reported days.
`stage_day` hands one UTC day to DuckDB as the temporary relation `log_records` (records.RECORD_FIELDS): a view over
the files of the embedded store, a table streamed from MongoDB.

Pure package: no dagster, no bentoml.
"""

from taxi_assets.core.predlog.files import FileLogReader, FileLogWriter
from taxi_assets.core.predlog.mongo import MongoLogReader, MongoLogWriter
from taxi_assets.core.predlog.records import (
    RECORD_FIELDS,
    STAGING_TABLE,
    Changes,
    Cursor,
    LogReader,
    LogWriter,
    Pending,
    PredictionBatch,
    Record,
    feedback_record,
    new_record_id,
    new_record_ids,
    prediction_record,
    record_day,
    record_key,
    utc_now_iso,
)

__all__ = [
    "RECORD_FIELDS",
    "STAGING_TABLE",
    "Changes",
    "Cursor",
    "FileLogReader",
    "FileLogWriter",
    "LogReader",
    "LogWriter",
    "MongoLogReader",
    "MongoLogWriter",
    "Pending",
    "PredictionBatch",
    "Record",
    "feedback_record",
    "is_mongo_uri",
    "new_record_id",
    "new_record_ids",
    "open_reader",
    "open_writer",
    "prediction_record",
    "record_day",
    "record_key",
    "utc_now_iso",
]


def is_mongo_uri(uri: str) -> bool:
    return uri.startswith(("mongodb://", "mongodb+srv://"))


def open_writer(uri: str, spool_dir: str) -> LogWriter:
    """The writer for `uri`: a directory of segment files, or MongoDB with its local journal in `spool_dir`."""
    return MongoLogWriter(uri, spool_dir) if is_mongo_uri(uri) else FileLogWriter(uri)


def open_reader(uri: str) -> LogReader:
    return MongoLogReader(uri) if is_mongo_uri(uri) else FileLogReader(uri)
