"""The MongoDB prediction-log store: records are first appended to a local journal laid out exactly like the
embedded store (files.py), then shipped to MongoDB in batches by a background thread, each document keyed by
`_id` so redelivery after a failure or a crash inserts nothing twice. While MongoDB is unreachable the journal
is the spool.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import itertools
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxi_assets.core.predlog.files import FileLogWriter, iter_lines, parse_lines
from taxi_assets.core.predlog.records import (
    Changes,
    Cursor,
    Pending,
    PredictionBatch,
    Record,
    record_day,
    record_key,
    stage_batches,
)

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection as DuckDBConnection

log = logging.getLogger(__name__)

# Documents per batch when a day is staged into DuckDB: bounds the reader's memory (a few tens of MB of dicts).
STAGE_BATCH = 50_000
_RECORD_PROJECTION = {"_id": 0, "day": 0, "ingested_at": 0}

# MongoDB documents get `ingested_at` from the shipper's clock just before the insert; a reader only advances
# its cursor to `now - lag`, so a batch committed later than this after being stamped could be missed.
MONGO_CURSOR_LAG = dt.timedelta(seconds=10)


def _ingested_now() -> dt.datetime:
    # MongoDB stores milliseconds; truncating here keeps cursor comparisons exact after a round trip.
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _mongo_collection(uri: str, database: str, collection: str, timeout_ms: int):
    import pymongo

    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, tz_aware=True)
    return client, client[database][collection]


def ensure_indexes(collection) -> None:
    collection.create_index("ingested_at")
    collection.create_index("day")


class MongoLogWriter:
    """Journals records locally (durable like the embedded store) and ships them to MongoDB in the background.

    The journal doubles as the spool: a segment's shipped offset lives in `<segment>.shipped`, so records not yet
    delivered when MongoDB is down, or when the process dies, are delivered later, by this process or by the next
    writer that finds the segment without a live owner. Documents are inserted with `_id = record_key(record)`,
    so a batch sent twice inserts nothing twice.
    """

    def __init__(
        self,
        uri: str,
        spool_dir: str | os.PathLike,
        *,
        database: str = "taxi",
        collection: str = "prediction_logs",
        batch_size: int = 1000,
        ship_interval: float = 0.2,
        server_timeout_ms: int = 2000,
        collection_obj=None,
    ) -> None:
        self.journal = FileLogWriter(spool_dir)
        self._client = None
        if collection_obj is None:
            self._client, collection_obj = _mongo_collection(uri, database, collection, server_timeout_ms)
        self.collection = collection_obj
        self._batch_size = batch_size
        self._interval = ship_interval
        self._failures = 0
        self._backlog = 0
        self._indexed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._shipper = threading.Thread(target=self._ship_loop, name="predlog-mongo", daemon=True)
        self._shipper.start()

    def append(self, records: list[Record] | PredictionBatch) -> bool:
        return self.journal.append(records)

    def stats(self) -> dict[str, int]:
        journal = self.journal.stats()
        return {
            "appended": journal["appended"],
            "write_failures": journal["write_failures"] + self._failures,
            "spool_backlog": self._backlog,
        }

    def _ship_loop(self) -> None:
        delay = self._interval
        while not self._stop.wait(delay):
            delay = self._interval if self.ship_once() else min(max(delay * 2, 0.5), 5.0)

    def ship_once(self) -> bool:
        """Deliver every complete journal record not yet shipped; False when MongoDB refused a batch."""
        open_paths = self.journal.open_paths()
        backlog, ok = 0, True
        for path in sorted(self.journal.root.glob("*/*.jsonl")):
            mine = path.name.startswith(self.journal.token)
            with contextlib.ExitStack() as stack:
                if not mine:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    stack.callback(os.close, fd)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # another live writer owns and ships this segment
                try:
                    if ok:
                        ok = self._ship_segment(path)
                    remaining = self._unshipped(path)
                    if ok and remaining == 0 and path not in open_paths:
                        path.unlink()
                        path.with_suffix(".shipped").unlink(missing_ok=True)
                except FileNotFoundError:
                    continue  # a closed segment another writer adopted, shipped and removed meanwhile
                backlog += remaining
        self._backlog = backlog
        return ok

    @staticmethod
    def _shipped_offset(path: Path) -> int:
        try:
            return int(path.with_suffix(".shipped").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def _unshipped(self, path: Path) -> int:
        return sum(1 for _ in iter_lines(path, self._shipped_offset(path)))

    def _ship_segment(self, path: Path) -> bool:
        batch: list[Record] = []
        end = start = self._shipped_offset(path)
        for line, offset in iter_lines(path, start):
            batch.extend(parse_lines([line], path))
            end = offset
            if len(batch) >= self._batch_size:
                if not self._insert(batch):
                    return False
                self._save_offset(path, end)
                batch = []
        if batch and not self._insert(batch):
            return False
        if end > start:
            self._save_offset(path, end)
        return True

    @staticmethod
    def _save_offset(path: Path, offset: int) -> None:
        marker = path.with_suffix(".shipped")
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(str(offset))
        os.replace(tmp, marker)

    def _insert(self, records: list[Record]) -> bool:
        from pymongo.errors import BulkWriteError, PyMongoError

        ingested_at = _ingested_now()
        docs = [{**r, "_id": record_key(r), "day": record_day(r), "ingested_at": ingested_at} for r in records]
        try:
            if not self._indexed:
                ensure_indexes(self.collection)
                self._indexed = True
            self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            # 11000 = duplicate key: the record was delivered before (a retried batch); anything else is real.
            if any(e.get("code") != 11000 for e in error.details.get("writeErrors", [])):
                self._failures += 1
                log.warning("MongoDB rejected prediction-log records: %s", error.details)
                return False
        except PyMongoError as error:
            self._failures += 1
            log.warning("MongoDB unreachable, prediction-log records stay spooled: %s", error)
            return False
        return True

    def close(self) -> None:
        """Stop shipping after one last attempt; whatever is left stays in the journal for the next writer."""
        self._stop.set()
        self._shipper.join()
        self.journal.close()
        self.ship_once()
        if self._client is not None:
            self._client.close()


class MongoLogReader:
    """Reader side of the MongoDB store. Cursor: `{"ingested_after": <ISO time> | None}`."""

    def __init__(
        self,
        uri: str,
        *,
        database: str = "taxi",
        collection: str = "prediction_logs",
        server_timeout_ms: int = 5000,
        collection_obj=None,
    ) -> None:
        if collection_obj is None:
            _, collection_obj = _mongo_collection(uri, database, collection, server_timeout_ms)
        self.collection = collection_obj

    @staticmethod
    def _query(cursor: Cursor | None) -> dict[str, Any]:
        after = (cursor or {}).get("ingested_after")
        return {"ingested_at": {"$gt": dt.datetime.fromisoformat(after)}} if after else {}

    def changes(self, cursor: Cursor | None) -> Changes:
        query = self._query(cursor)
        days = sorted(self.collection.distinct("day", query))
        if not days:
            return Changes([], dict(cursor or {"ingested_after": None}))
        newest = next(self.collection.find(query, {"ingested_at": 1}).sort("ingested_at", -1).limit(1))
        newest_at = newest["ingested_at"]
        if newest_at.tzinfo is None:
            newest_at = newest_at.replace(tzinfo=dt.timezone.utc)
        watermark = min(newest_at, dt.datetime.now(dt.timezone.utc) - MONGO_CURSOR_LAG)
        previous = (cursor or {}).get("ingested_after")
        if previous and watermark < dt.datetime.fromisoformat(previous):
            watermark = dt.datetime.fromisoformat(previous)
        return Changes(days, {"ingested_after": watermark.isoformat()})

    def read_day(self, day: str) -> list[Record]:
        return list(self.collection.find({"day": day}, _RECORD_PROJECTION).sort("ts", 1))

    def stage_day(self, conn: DuckDBConnection, day: str) -> None:
        """The day's documents streamed into DuckDB `STAGE_BATCH` at a time, in no particular order (a server-side
        sort of a 20M-document day would exceed MongoDB's in-memory sort limit): the day is never a list of
        dicts in memory."""
        documents = self.collection.find({"day": day}, _RECORD_PROJECTION).batch_size(STAGE_BATCH)
        stage_batches(conn, iter(lambda: list(itertools.islice(documents, STAGE_BATCH)), []))

    def pending(self, cursor: Cursor | None) -> Pending:
        query = self._query(cursor)
        count = self.collection.count_documents(query)
        if not count:
            return Pending(0, None)
        oldest = next(self.collection.find(query, {"ts": 1}).sort("ts", 1).limit(1))
        return Pending(count, oldest["ts"])
