"""The embedded prediction-log store: JSON-lines segment files `<root>/<UTC day>/<writer token>-<seq>.jsonl`.

One writer token per process and start, so several worker processes never share a file and a day partition
reads only its own files. `append` returns once the records are in the operating system's page cache through
one `os.write` on an `O_APPEND` descriptor, so a record the service acknowledged survives `kill -9` of the
service. A background thread fsyncs dirty segments every `FSYNC_INTERVAL_S`; on power loss the records of at
most the last second (interval plus fsync time) can be lost, and a segment may end in a partial line. Readers
ignore an incomplete last line until it is completed and skip lines that do not parse.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from taxi_assets.core.predlog.records import (
    RECORD_FIELDS,
    STAGING_TABLE,
    Changes,
    Chunk,
    Cursor,
    Pending,
    PredictionBatch,
    Record,
    drop_staging,
    record_day,
    stage_records,
)

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection as DuckDBConnection

log = logging.getLogger(__name__)

FSYNC_INTERVAL_S = 0.2
SEGMENT_MAX_BYTES = 64 * 1024 * 1024
# Writers only ever append records stamped "now", so a UTC day older than this can no longer change and the
# file cursor folds it into one watermark instead of remembering its segments.
SEAL_AFTER = dt.timedelta(days=2)
_READ_CHUNK = 1 << 20


# allow_nan=False: a NaN would make the line unreadable for strict JSON consumers. One encoder for all calls:
# `json.dumps` with options builds a new one per record, which costs more than the encoding.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _encode_by_day(records: Iterable[Record]) -> list[Chunk]:
    by_day: dict[str, list[Record]] = {}
    for record in records:
        by_day.setdefault(record_day(record), []).append(record)
    return [
        Chunk(day, "".join([_ENCODER.encode(r) + "\n" for r in day_records]).encode(), len(day_records))
        for day, day_records in sorted(by_day.items())
    ]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass
class _Segment:
    fd: int
    path: Path
    size: int


class FileLogWriter:
    """Appends records to this process's segment files under `root`, one open segment per UTC day."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        segment_max_bytes: int = SEGMENT_MAX_BYTES,
        fsync_interval: float = FSYNC_INTERVAL_S,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._segment_max_bytes = segment_max_bytes
        self._lock = threading.Lock()
        self._open: dict[str, _Segment] = {}
        self._seq = 0
        self._dirty: set[int] = set()
        self._retired: list[int] = []
        self._failures = 0
        self._appended = 0
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_loop, args=(fsync_interval,), name="predlog-fsync", daemon=True
        )
        self._flusher.start()

    def append(self, records: list[Record] | PredictionBatch) -> bool:
        """Write `records`; False (and one failed attempt counted) when the disk refused them."""
        try:
            chunks = records._encode() if isinstance(records, PredictionBatch) else _encode_by_day(records)
            with self._lock:
                for day, data, count in chunks:
                    segment = self._segment_for(day, len(data))
                    _write_all(segment.fd, data)
                    segment.size += len(data)
                    self._dirty.add(segment.fd)
                    self._appended += count
        except (OSError, ValueError):
            log.exception("prediction log write failed")
            with self._lock:
                self._failures += 1
            return False
        return True

    def _segment_for(self, day: str, incoming: int) -> _Segment:
        segment = self._open.get(day)
        if segment is not None and segment.size + incoming <= self._segment_max_bytes:
            return segment
        if segment is not None:
            self._retired.append(segment.fd)
        self._seq += 1
        path = self.root / day / f"{self.token}-{self._seq:05d}.jsonl"
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # Held until the descriptor closes: tells a shipper in another process the segment still has a writer.
        fcntl.flock(fd, fcntl.LOCK_EX)
        segment = self._open[day] = _Segment(fd, path, 0)
        # Only the current and the previous day stay open: a record is stamped just before it is written.
        for old_day in sorted(self._open)[:-2]:
            self._retired.append(self._open.pop(old_day).fd)
        return segment

    def open_paths(self) -> set[Path]:
        with self._lock:
            return {segment.path for segment in self._open.values()}

    def stats(self) -> dict[str, int]:
        return {"appended": self._appended, "write_failures": self._failures, "spool_backlog": 0}

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def flush(self) -> None:
        """fsync every segment written since the last flush; close retired ones (only this thread closes)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            retired, self._retired = self._retired, []
        for fd in dirty | set(retired):
            try:
                os.fsync(fd)
            except OSError:
                log.exception("fsync of a prediction log segment failed")
        for fd in retired:
            os.close(fd)

    def close(self) -> None:
        self._stop.set()
        self._flusher.join()
        with self._lock:
            self._retired.extend(segment.fd for segment in self._open.values())
            self._open.clear()
        self.flush()


def _complete_end(path: Path, start: int, size: int) -> int:
    """Offset just past the last newline in [start, size): where the complete records end."""
    with open(path, "rb") as f:
        end = size
        while end > start:
            chunk_start = max(start, end - 65536)
            f.seek(chunk_start)
            chunk = f.read(end - chunk_start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                return chunk_start + newline + 1
            end = chunk_start
    return start


def iter_lines(path: Path, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int]]:
    """Complete lines from `start` (up to `end`), each with the offset just past it; a partial tail is left."""
    with open(path, "rb") as f:
        f.seek(start)
        offset, rest = start, b""
        while end is None or offset + len(rest) < end:
            want = _READ_CHUNK if end is None else min(_READ_CHUNK, end - offset - len(rest))
            chunk = f.read(want)
            if not chunk:
                return
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                offset += len(line) + 1
                yield line, offset


def parse_lines(lines: Iterable[bytes], path: Path) -> Iterator[Record]:
    for line in lines:
        try:
            yield json.loads(line)
        except ValueError:
            log.warning("skipping a corrupt line in %s", path)


class FileLogReader:
    """Reader side of the embedded store.

    Cursor: `{"sealed": <last UTC day considered complete> | None, "offsets": {"<day>/<segment>": <bytes>}}`,
    the offsets covering complete lines only; days up to `sealed` are skipped without listing them.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _segments(self, sealed: str | None) -> Iterator[tuple[str, Path, int]]:
        if not self.root.is_dir():
            return
        for day_dir in sorted(self.root.iterdir()):
            if not day_dir.is_dir() or (sealed is not None and day_dir.name <= sealed):
                continue
            for entry in sorted(os.scandir(day_dir), key=lambda e: e.name):
                if entry.name.endswith(".jsonl"):
                    yield day_dir.name, Path(entry.path), entry.stat().st_size

    @staticmethod
    def _key(day: str, path: Path) -> str:
        return f"{day}/{path.name}"

    def changes(self, cursor: Cursor | None) -> Changes:
        cursor = cursor or {}
        sealed, offsets = cursor.get("sealed"), cursor.get("offsets", {})
        days: set[str] = set()
        new_offsets: dict[str, int] = {}
        for day, path, size in self._segments(sealed):
            key = self._key(day, path)
            start = offsets.get(key, 0)
            end = _complete_end(path, start, size) if size > start else start
            if end > start:
                days.add(day)
            new_offsets[key] = end
        seal_before = (dt.datetime.now(dt.timezone.utc) - SEAL_AFTER).date().isoformat()
        to_seal = [key[:10] for key in new_offsets if key[:10] < seal_before]
        if to_seal:
            sealed = max(to_seal)
            new_offsets = {k: v for k, v in new_offsets.items() if k[:10] > sealed}
        return Changes(sorted(days), {"sealed": sealed, "offsets": new_offsets})

    def read_day(self, day: str) -> list[Record]:
        """Every complete record of UTC `day` (YYYY-MM-DD), segment by segment in file order."""
        records: list[Record] = []
        day_dir = self.root / day
        if day_dir.is_dir():
            for path in sorted(day_dir.glob("*.jsonl")):
                records.extend(parse_lines((line for line, _ in iter_lines(path)), path))
        return records

    def stage_day(self, conn: DuckDBConnection, day: str) -> None:
        """The records of `day` as the temporary view `log_records` over the day's segment files, parsed by DuckDB
        itself: ten times faster than record by record in Python. A view, not a table: the ingest's two inserts
        each stream the files (parsing twice costs less than holding a 20M-record day in memory, which a staged
        table did: peak RSS grew with the day). A line that does not parse (a torn or corrupt one, which
        `read_day` skips too) becomes a row of NULLs, which the ingest's `kind` filter drops."""
        day_dir = self.root / day
        if not any(day_dir.glob("*.jsonl")):
            stage_records(conn, [])
            return
        files = _sql_string(str(day_dir / "*.jsonl"))
        columns = (
            "{" + ", ".join(f"{_sql_string(name)}: {_sql_string(kind)}" for name, kind in RECORD_FIELDS.items()) + "}"
        )
        drop_staging(conn)
        conn.execute(
            f"CREATE TEMP VIEW {STAGING_TABLE} AS SELECT * FROM read_json({files}, "
            f"format = 'newline_delimited', ignore_errors = true, columns = {columns})"
        )

    def pending(self, cursor: Cursor | None) -> Pending:
        """Records after `cursor`, counted as complete lines without parsing them (a sensor tick at 20M records a
        day parsed for minutes), and the oldest one's time, from the first pending record of each segment: a
        segment is written in stamping order, up to the few milliseconds between a record's stamp and its write."""
        cursor = cursor or {}
        offsets = cursor.get("offsets", {})
        count, oldest = 0, None
        for day, path, size in self._segments(cursor.get("sealed")):
            start = offsets.get(self._key(day, path), 0)
            end = _complete_end(path, start, size) if size > start else start
            if end <= start:
                continue
            count += _count_lines(path, start, end)
            first = next(parse_lines((line for line, _ in iter_lines(path, start, end)), path), None)
            if first is not None and (oldest is None or first["ts"] < oldest):
                oldest = first["ts"]
        return Pending(count, oldest)


def _count_lines(path: Path, start: int, end: int) -> int:
    count = 0
    with open(path, "rb") as f:
        f.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = f.read(min(_READ_CHUNK, remaining))
            if not chunk:
                break
            count += chunk.count(b"\n")
            remaining -= len(chunk)
    return count


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
