"""The prediction-log sensor's cursor and backoff as pure functions (taxi_assets.core.ingest_cursor): the stored
form, what a tick requests, and when a day whose ingest did not land is requested again."""

import json

import pytest

from taxi_assets.core.ingest_cursor import (
    MAX_OPEN_BATCHES,
    Batch,
    IngestCursor,
    LastRun,
    Request,
    new_requests,
    retry_delay,
    watermark,
)

pytestmark = pytest.mark.unit

# A cursor as the sensor stored it before this module existed: it must still parse, and serialize to the same text.
STORED = (
    '{"store":{"sealed":"2024-05-01","offsets":{"2024-05-02.jsonl":120}},"ingested":{"sealed":"2024-04-30"},'
    '"open":[{"at":1714600000.5,"days":["2024-05-01"],"cursor":{"sealed":"2024-05-01"}},'
    '{"at":1714600030.25,"days":["2024-05-01","2024-05-02"],"cursor":{"sealed":"2024-05-01","offsets":'
    '{"2024-05-02.jsonl":120}}}],"retries":{"2024-05-01":1}}'
)
T0, T1 = 1714600000.5, 1714600030.25


def test_a_stored_cursor_parses_and_serializes_to_the_same_text() -> None:
    cursor = IngestCursor.parse(STORED)
    assert cursor.ingested == {"sealed": "2024-04-30"} and cursor.retries == {"2024-05-01": 1}
    assert cursor.open[1] == Batch(T1, ("2024-05-01", "2024-05-02"), cursor.store)
    assert cursor.serialize() == STORED
    assert IngestCursor.parse(None) == IngestCursor.parse("") == IngestCursor()
    assert json.loads(IngestCursor().serialize()) == {"store": None, "ingested": None, "open": [], "retries": {}}


def test_batches_close_oldest_first_once_each_of_their_days_was_ingested_after_the_request() -> None:
    cursor = IngestCursor.parse(STORED)
    assert cursor.open_days() == {"2024-05-01", "2024-05-02"}
    # Ingested by a run created before the first request: nothing is confirmed.
    assert cursor.confirmed({"2024-05-01": T0 - 1}) == cursor
    first_only = cursor.confirmed({"2024-05-01": T0 + 1})
    assert first_only.ingested == {"sealed": "2024-05-01"} and [b.at for b in first_only.open] == [T1]
    assert first_only.unconfirmed({"2024-05-01": T0 + 1}) == {
        "2024-05-01": first_only.open[0],
        "2024-05-02": first_only.open[0],
    }
    both = cursor.confirmed({"2024-05-01": T1, "2024-05-02": T1 + 5})
    assert both.open == () and both.ingested == cursor.store and both.unconfirmed({}) == {}


def test_retry_delays_double_up_to_half_an_hour() -> None:
    assert [retry_delay(attempts) for attempts in range(8)] == [0, 60, 120, 240, 480, 960, 1800, 1800]


def test_a_day_is_requested_again_after_its_backoff_and_waits_for_a_run_in_progress() -> None:
    batch = Batch(100.0, ("2024-05-01",), {"sealed": "2024-05-01"})
    cursor = IngestCursor(open=(batch,))
    waiting = {"2024-05-01": batch}
    mark = watermark(batch.cursor)

    # No run since the request: the daemon gets a backoff period first.
    assert cursor.retried(waiting, {"2024-05-01": None}, 159.0)[0] == []
    (request,), retried = cursor.retried(waiting, {}, 160.0)
    assert request == Request("2024-05-01", f"2024-05-01@{mark}/retry-1", mark)
    assert retried.retries == {"2024-05-01": 1}
    # A run in progress: wait for it.
    assert retried.retried(waiting, {"2024-05-01": LastRun(170.0, None, False)}, 10**6)[0] == []
    # It failed at 200: one attempt so far, so 60 s after its end; then the count goes on.
    failed = {"2024-05-01": LastRun(170.0, 200.0, True)}
    assert retried.retried(waiting, failed, 259.0)[0] == []
    (again,), twice = retried.retried(waiting, failed, 260.0)
    assert again.run_key.endswith("/retry-2") and twice.retries == {"2024-05-01": 2}
    # A day confirmed since is forgotten.
    assert twice.retried({}, {}, 10**6) == ([], IngestCursor(open=(batch,)))


def test_new_days_are_requested_under_the_store_watermark_and_retried_days_once() -> None:
    store = {"sealed": "2024-05-02"}
    mark = watermark(store)
    retry = Request("2024-05-01", "2024-05-01@abc/retry-1", "abc")
    assert new_requests(store, ["2024-05-01", "2024-05-02"], [retry]) == [
        retry,
        Request("2024-05-02", f"2024-05-02@{mark}", mark),
    ]
    # The same store state gives the same keys: a tick retried after a crash asks for the same runs.
    assert new_requests(dict(reversed(store.items())), ["2024-05-02"], []) == new_requests(store, ["2024-05-02"], [])


def test_requested_days_open_a_batch_and_the_oldest_merge_past_the_limit() -> None:
    cursor = IngestCursor().requested({"n": 0}, [], 1.0)
    assert cursor == IngestCursor(store={"n": 0})
    for n in range(1, MAX_OPEN_BATCHES + 2):
        cursor = cursor.requested({"n": n}, [f"2024-05-{n:02d}"], float(n))
    assert len(cursor.open) == MAX_OPEN_BATCHES and cursor.store == {"n": MAX_OPEN_BATCHES + 1}
    # The two oldest became one: the newer's time and store cursor, both days.
    assert cursor.open[0] == Batch(2.0, ("2024-05-01", "2024-05-02"), {"n": 2})
    assert cursor.open[-1] == Batch(float(MAX_OPEN_BATCHES + 1), (f"2024-05-{MAX_OPEN_BATCHES + 1:02d}",), cursor.store)
