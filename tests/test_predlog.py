"""Prediction-log store: embedded segment files and MongoDB (mongomock; a real server when MONGODB_URI is set)."""

import datetime as dt
import itertools
import json
import multiprocessing
import os
import socket
import time
from pathlib import Path

import duckdb
import mongomock
import pytest

from taxi_assets.core import predlog
from taxi_assets.core.predlog import records as predlog_records

pytestmark = pytest.mark.unit

RIDE = {"PULocationID": 74, "DOLocationID": 42, "trip_distance": 1.7, "pickup_datetime": "2022-01-03T08:15:00"}


def _prediction(i: int, ts: str | None = None) -> dict:
    return predlog.prediction_record({**RIDE, "id": f"ride-{i}"}, 9.5 + i, "taxi_duration_deployed:v1", ts=ts)


def _today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


@pytest.fixture
def store(tmp_path: Path):
    writer = predlog.FileLogWriter(tmp_path / "logs")
    yield writer, predlog.FileLogReader(tmp_path / "logs")
    writer.close()


def test_round_trip_by_day(store) -> None:
    writer, reader = store
    today = _today()
    records = [_prediction(i) for i in range(5)] + [predlog.feedback_record("ride-1", 11.0)]
    old = _prediction(99, ts="2022-01-03T23:59:59.000000+00:00")
    assert writer.append(records + [old])

    assert reader.read_day(today) == records
    assert reader.read_day("2022-01-03") == [old]
    assert reader.read_day("2022-01-04") == []
    assert writer.stats() == {"appended": 7, "write_failures": 0, "spool_backlog": 0}


def test_cursor_semantics(store) -> None:
    writer, reader = store
    assert reader.changes(None) == predlog.Changes([], {"sealed": None, "offsets": {}})
    assert reader.pending(None) == predlog.Pending(0, None)

    first = [_prediction(i) for i in range(3)]
    writer.append(first)
    assert reader.changes(None).days
    changes = reader.changes(None)
    assert changes.days == [_today()]
    assert reader.pending(None) == predlog.Pending(3, first[0]["ts"])
    json.dumps(changes.cursor)  # a sensor stores it as a string

    # Nothing new after the returned cursor, until a record arrives.
    assert not reader.changes(changes.cursor).days
    assert reader.pending(changes.cursor) == predlog.Pending(0, None)
    later = _prediction(3)
    writer.append([later])
    assert reader.changes(changes.cursor).days == [_today()]
    assert reader.pending(changes.cursor) == predlog.Pending(1, later["ts"])


def test_old_days_are_sealed_into_the_watermark(store) -> None:
    writer, reader = store
    writer.append([_prediction(1, ts="2022-01-03T10:00:00.000000+00:00"), _prediction(2)])
    changes = reader.changes(None)
    assert changes.days == ["2022-01-03", _today()]
    assert changes.cursor["sealed"] == "2022-01-03"
    assert all(key.startswith(_today()) for key in changes.cursor["offsets"])
    assert not reader.changes(changes.cursor).days


def test_partial_trailing_line_is_ignored_until_complete(store) -> None:
    writer, reader = store
    writer.append([_prediction(1)])
    cursor = reader.changes(None).cursor
    (segment,) = (writer.root / _today()).glob("*.jsonl")
    line = json.dumps(_prediction(2)).encode() + b"\n"
    with open(segment, "ab") as f:
        f.write(line[:25])
    assert [r["id"] for r in reader.read_day(_today())] == ["ride-1"]
    assert not reader.changes(cursor).days
    assert reader.pending(cursor).count == 0
    with open(segment, "ab") as f:
        f.write(line[25:])
    assert [r["id"] for r in reader.read_day(_today())] == ["ride-1", "ride-2"]
    assert reader.pending(cursor).count == 1


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    writer = predlog.FileLogWriter(tmp_path, segment_max_bytes=1000)
    for i in range(40):
        writer.append([_prediction(i)])
    writer.close()
    assert len(list((tmp_path / _today()).glob("*.jsonl"))) > 5
    reader = predlog.FileLogReader(tmp_path)
    assert sorted(r["id"] for r in reader.read_day(_today())) == sorted(f"ride-{i}" for i in range(40))


def test_a_prediction_batch_reads_back_as_its_records_one_by_one(tmp_path: Path) -> None:
    """The service logs batches column-wise (PredictionBatch); every reader must see exactly the records that
    `prediction_record` gives for each ride, edge values included, and a non-finite prediction is refused alike."""
    rides = {
        "id": ["r1", "é-ride", 'q"uote\\', *predlog.new_record_ids(2)],
        "PULocationID": [1, 265, 74, 42, 7],
        "DOLocationID": [265, 1, 42, 74, 7],
        "trip_distance": [0.0, 260_000.0, 1e-7, 1.7, 12.345678901234567],
        "pickup_datetime": [
            dt.datetime(2022, 1, 3, 8, 15),
            dt.datetime(2022, 1, 3, 8, 15, 0, 250_000),
            dt.datetime(2099, 12, 31, 23, 59, 59, 999_999),
            dt.datetime(2000, 1, 1),
            "2022-01-03T08:15:00",
        ],
    }
    predictions = [9.5, 1e16, 5e-324, 0.1, 1234.5678]
    ts, tag = predlog.utc_now_iso(), "taxi_duration_deployed:v1"
    one_by_one = [
        predlog.prediction_record({k: v[i] for k, v in rides.items()}, predictions[i], tag, ts) for i in range(5)
    ]
    for name, records in (("batch", predlog.PredictionBatch(rides, predictions, tag, ts)), ("records", one_by_one)):
        writer = predlog.FileLogWriter(tmp_path / name)
        assert writer.append(records)
        for bad in (float("nan"), float("inf")):
            refused = (
                predlog.PredictionBatch(rides, [*predictions[:4], bad], tag, ts)
                if name == "batch"
                else [predlog.prediction_record(RIDE, bad, tag, ts)]
            )
            assert not writer.append(refused)
        writer.close()
    day = ts[:10]
    read = {name: predlog.FileLogReader(tmp_path / name).read_day(day) for name in ("batch", "records")}
    assert read["batch"] == read["records"] == one_by_one
    staged = {}
    for name in read:
        with duckdb.connect() as conn:
            predlog.FileLogReader(tmp_path / name).stage_day(conn, day)
            staged[name] = conn.execute(f"SELECT * FROM {predlog.STAGING_TABLE}").fetchall()
    assert staged["batch"] == staged["records"] and len(staged["batch"]) == 5


def test_generated_ids_are_unique_and_a_new_prefix_follows_the_last_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = predlog.new_record_ids(1000) + predlog.new_record_ids(0) + [predlog.new_record_id()]
    prefix, first = ids[0][:16], int(ids[0][16:], 16)
    assert ids == [f"{prefix}{number:08x}" for number in range(first, first + 1001)]
    monkeypatch.setattr(predlog_records, "_id_counter", itertools.count(2**32 - 1))
    after = predlog.new_record_ids(2)
    assert after[0][:16] != prefix and [i[16:] for i in after] == ["00000000", "00000001"]


def _write_many(root: str, worker: int, count: int) -> None:
    writer = predlog.FileLogWriter(root)
    for i in range(0, count, 7):
        writer.append([_prediction(worker * 100_000 + j) for j in range(i, min(i + 7, count))])
    # No close: the records must already be readable, as after kill -9.
    os._exit(0)


def test_concurrent_processes_leave_no_torn_or_interleaved_records(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_write_many, args=(str(tmp_path), w, 3000)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    segments = list((tmp_path / _today()).glob("*.jsonl"))
    assert len(segments) == 4
    for segment in segments:
        lines = segment.read_bytes().split(b"\n")
        assert lines.pop() == b""
        # Every line is one whole record: a torn or interleaved write would fail to parse or lose keys.
        assert all(json.loads(line).keys() == _prediction(0).keys() for line in lines)
    ids = [r["id"] for r in predlog.FileLogReader(tmp_path).read_day(_today())]
    assert len(ids) == len(set(ids)) == 4 * 3000


def test_open_writer_follows_the_uri(tmp_path: Path) -> None:
    writer = predlog.open_writer(str(tmp_path / "logs"), str(tmp_path / "spool"))
    assert isinstance(writer, predlog.FileLogWriter)
    writer.append([_prediction(1)])
    writer.close()
    assert isinstance(predlog.open_reader(str(tmp_path / "logs")), predlog.FileLogReader)
    assert len(predlog.open_reader(str(tmp_path / "logs")).read_day(_today())) == 1
    assert not (tmp_path / "spool").exists()  # a directory store needs no journal


# --- MongoDB ---------------------------------------------------------------------------------------------------


class FlakyCollection:
    """A mongomock collection whose inserts fail while `down` is set, as when the server is unreachable."""

    def __init__(self, collection) -> None:
        self.inner = collection
        self.down = False

    def insert_many(self, docs, ordered=True):
        from pymongo.errors import ServerSelectionTimeoutError

        if self.down:
            raise ServerSelectionTimeoutError("127.0.0.1:1: connection refused")
        return self.inner.insert_many(docs, ordered=ordered)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _mongo_pair(tmp_path: Path, collection):
    writer = predlog.MongoLogWriter("mongodb://unused", tmp_path / "spool", collection_obj=collection, ship_interval=60)
    return writer, predlog.MongoLogReader("mongodb://unused", collection_obj=collection)


def _check_mongo_round_trip(tmp_path: Path, collection) -> None:
    writer, reader = _mongo_pair(tmp_path, collection)
    records = [_prediction(i) for i in range(5)] + [predlog.feedback_record("ride-1", 11.0)]
    writer.append(records)
    assert not reader.changes(None).days  # journalled, not shipped yet
    assert writer.ship_once()
    assert writer.stats()["spool_backlog"] == 0
    assert reader.read_day(_today()) == sorted(records, key=lambda r: r["ts"])
    assert reader.changes(None).days
    changes = reader.changes(None)
    assert changes.days == [_today()]
    assert reader.pending(None) == predlog.Pending(6, records[0]["ts"])
    json.dumps(changes.cursor)
    writer.close()


# mongomock always; a real server too when MONGODB_URI names one (none can be installed on the development
# machines, so CI runs the mongomock case; compose runs the real thing).
MONGO_BACKENDS = ["mongomock", *(["server"] if os.getenv("MONGODB_URI") else [])]


@pytest.fixture(params=MONGO_BACKENDS)
def mongo_collection(request: pytest.FixtureRequest):
    if request.param == "mongomock":
        yield mongomock.MongoClient().taxi.prediction_logs
        return
    import pymongo

    client = pymongo.MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=5000, tz_aware=True)
    database = f"taxi_test_{os.getpid()}"
    try:
        yield client[database].prediction_logs
    finally:
        client.drop_database(database)


def test_mongo_round_trip_and_cursor(tmp_path: Path, mongo_collection) -> None:
    _check_mongo_round_trip(tmp_path, mongo_collection)


def test_mongo_cursor_moves_past_settled_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predlog.mongo, "MONGO_CURSOR_LAG", dt.timedelta(0))
    collection = mongomock.MongoClient().taxi.prediction_logs
    writer, reader = _mongo_pair(tmp_path, collection)
    writer.append([_prediction(1)])
    writer.ship_once()
    cursor = reader.changes(None).cursor
    assert not reader.changes(cursor).days
    assert reader.pending(cursor) == predlog.Pending(0, None)
    # MongoDB stamps have millisecond resolution: a second shipment in the same millisecond would carry the
    # cursor's own stamp, which only the (here disabled) cursor lag covers.
    time.sleep(0.002)
    writer.append([_prediction(2)])
    writer.ship_once()
    assert reader.changes(cursor).days == [_today()]
    assert reader.pending(cursor).count == 1
    writer.close()


def test_mongo_unreachable_spools_then_delivers_once(tmp_path: Path) -> None:
    collection = FlakyCollection(mongomock.MongoClient().taxi.prediction_logs)
    writer, reader = _mongo_pair(tmp_path, collection)
    writer.append([_prediction(0)])
    assert writer.ship_once()

    collection.down = True
    assert writer.append([_prediction(i) for i in range(1, 4)])  # serving goes on
    assert not writer.ship_once()
    assert writer.stats()["spool_backlog"] == 3
    assert writer.stats()["write_failures"] == 1

    # A batch that reached MongoDB but whose acknowledgement was lost is sent again: no duplicate.
    collection.inner.insert_one({**_prediction(1), "_id": predlog.record_key(_prediction(1))})
    collection.down = False
    assert writer.ship_once()
    assert writer.stats()["spool_backlog"] == 0
    ids = [r["id"] for r in reader.read_day(_today())]
    assert sorted(ids) == [f"ride-{i}" for i in range(4)]
    writer.close()


def test_spool_left_by_a_dead_writer_is_delivered_by_the_next(tmp_path: Path) -> None:
    collection = FlakyCollection(mongomock.MongoClient().taxi.prediction_logs)
    collection.down = True
    first, reader = _mongo_pair(tmp_path, collection)
    first.append([_prediction(i) for i in range(3)])
    first.close()  # its shipper gave up; the journal keeps the records
    collection.down = False
    second, _ = _mongo_pair(tmp_path, collection)
    assert second.ship_once()
    assert sorted(r["id"] for r in reader.read_day(_today())) == ["ride-0", "ride-1", "ride-2"]
    assert list((tmp_path / "spool").glob("*/*.jsonl")) == list((tmp_path / "spool").glob(f"*/{second.journal.token}*"))
    second.close()


def test_mongo_client_on_a_closed_port_keeps_serving(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    writer = predlog.MongoLogWriter(
        f"mongodb://127.0.0.1:{port}/", tmp_path / "spool", server_timeout_ms=100, ship_interval=60
    )
    assert writer.append([_prediction(1)])
    assert not writer.ship_once()
    assert writer.stats() == {"appended": 1, "write_failures": 1, "spool_backlog": 1}
    writer.close()


# ---- at volume: what the sensor and the ingest do with a large day


def test_pending_counts_lines_without_parsing_them(store, monkeypatch: pytest.MonkeyPatch) -> None:
    writer, reader = store
    first = [_prediction(i, ts=f"{_today()}T00:00:0{i}.000000+00:00") for i in range(3)]
    assert writer.append(first)
    assert writer.append([_prediction(i) for i in range(3, 500)])
    writer.flush()
    parsed = []
    original = json.loads
    monkeypatch.setattr(json, "loads", lambda line: parsed.append(line) or original(line))

    assert reader.pending(None) == predlog.Pending(500, first[0]["ts"])
    # One record read per segment (for the oldest time), not one per pending record.
    assert len(parsed) == 1


def test_a_day_of_files_is_staged_as_a_view_not_copied_into_memory(store, tmp_path: Path) -> None:
    import duckdb

    writer, reader = store
    assert writer.append([_prediction(i) for i in range(10)] + [predlog.feedback_record("ride-1", 11.0)])
    writer.flush()
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        reader.stage_day(conn, _today())
        assert conn.execute(f"SELECT count(*) FROM {predlog.STAGING_TABLE}").fetchone() == (11,)
        views = conn.execute("SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal").fetchall()
        assert views == [(predlog.STAGING_TABLE,)]
        reader.stage_day(conn, "2022-01-01")  # no files that day: an empty table replaces the view
        assert conn.execute(f"SELECT count(*) FROM {predlog.STAGING_TABLE}").fetchone() == (0,)


def test_a_mongo_day_is_staged_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    from taxi_assets.core.predlog import mongo, records

    collection = mongomock.MongoClient().taxi.prediction_logs
    day = "2024-06-03"
    collection.insert_many(
        [{**_prediction(i, ts=f"{day}T08:00:00.000000+00:00"), "_id": str(i), "day": day} for i in range(5)]
    )
    sizes = []
    original = records.stage_batches
    monkeypatch.setattr(mongo, "STAGE_BATCH", 2)
    monkeypatch.setattr(
        mongo, "stage_batches", lambda conn, batches: original(conn, (sizes.append(len(b)) or b for b in batches))
    )
    with duckdb.connect() as conn:
        predlog.MongoLogReader("mongodb://unused", collection_obj=collection).stage_day(conn, day)
        assert conn.execute(f"SELECT count(*) FROM {predlog.STAGING_TABLE}").fetchone() == (5,)
    assert sizes == [2, 2, 1]


def test_log_times_of_any_offset_are_stored_as_utc(tmp_path: Path) -> None:
    import duckdb

    from taxi_assets.core.warehouse import PREDICTION_LOG_DAY_SELECTS, PREDICTION_LOG_SCHEMA, replace_partition

    day = "2024-06-03"
    stamps = [f"{day}T10:00:00.250000+00:00", f"{day}T12:00:00.250000+02:00", f"{day}T10:00:00Z", f"{day}T10:00:00"]
    with duckdb.connect() as conn:
        for statement in PREDICTION_LOG_SCHEMA:
            conn.execute(statement)
        predlog.records.stage_records(conn, [_prediction(i, ts=ts) for i, ts in enumerate(stamps)])
        replace_partition(conn, "day", day, PREDICTION_LOG_DAY_SELECTS)
        stored = [ts for (ts,) in conn.execute("SELECT ts FROM prediction_log ORDER BY id").fetchall()]
    assert stored == [dt.datetime(2024, 6, 3, 10, 0, 0, 250000)] * 2 + [dt.datetime(2024, 6, 3, 10)] * 2
