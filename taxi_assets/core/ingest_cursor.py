"""The prediction-log sensor's bookkeeping, over plain data: its cursor, which days it requests, and when a day
whose ingest did not land is requested again.

The cursor holds the store cursor last requested (`store`), the store cursor known to be in DuckDB (`ingested`),
the requested batches not yet confirmed by a materialization (`open`: when, which days, the store cursor after
them), and the retries per unconfirmed day (`retries`). A batch stays open until every one of its days is
confirmed, however old the day gets. The sensor (taxi_assets.defs.online_monitoring.sensors) reads the store and
the Dagster instance and hands the figures here; the cursor's JSON form is the one it has always stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# Requested batches not yet confirmed by a materialization; past this many (ingest is failing) the two oldest are
# merged, which keeps the cursor small and only delays the confirmation of the older one.
MAX_OPEN_BATCHES = 50
# A day whose requested ingest ended without confirming it (the warehouse was locked, the run was killed) is
# requested again: at the next tick, then 1, 2, 4 … minutes after each further failed attempt, at most every 30.
FIRST_BACKOFF_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 1800.0


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the end of the last failed ingest of a day before requesting it again."""
    return 0.0 if attempts == 0 else min(FIRST_BACKOFF_SECONDS * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)


def watermark(store_cursor: Any) -> str:
    """Short name of a store state: the same records seen from the same cursor give the same run keys."""
    return hashlib.sha1(json.dumps(store_cursor, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Batch:
    """Days requested together at `at` (unix time), and the store cursor after their records."""

    at: float
    days: tuple[str, ...]
    cursor: Any

    def to_json(self) -> dict:
        return {"at": self.at, "days": list(self.days), "cursor": self.cursor}


@dataclass(frozen=True)
class LastRun:
    """The latest ingest run of a day: when it was created and ended (unix times), and whether it is over."""

    created: float
    ended: float | None
    finished: bool


@dataclass(frozen=True)
class Request:
    """A run to request: the day, its run key, and the watermark its batch tag carries."""

    day: str
    run_key: str
    mark: str


@dataclass(frozen=True)
class IngestCursor:
    store: Any = None
    ingested: Any = None
    open: tuple[Batch, ...] = ()
    retries: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> IngestCursor:
        """The cursor as stored (empty: the first tick)."""
        state = json.loads(text) if text else {}
        batches = tuple(Batch(batch["at"], tuple(batch["days"]), batch["cursor"]) for batch in state.get("open", []))
        return cls(state.get("store"), state.get("ingested"), batches, dict(state.get("retries", {})))

    def serialize(self) -> str:
        state = {
            "store": self.store,
            "ingested": self.ingested,
            "open": [batch.to_json() for batch in self.open],
            "retries": dict(self.retries),
        }
        return json.dumps(state, separators=(",", ":"))

    def open_days(self) -> set[str]:
        return {day for batch in self.open for day in batch.days}

    def confirmed(self, ingested_at: Mapping[str, float | None]) -> IngestCursor:
        """The oldest batches closed while every one of their days was ingested by a run created at or after the
        batch was requested (`ingested_at`: per open day, the creation time of the run of its latest
        materialization, None if none), their store cursor then known to be in DuckDB."""
        ingested, batches = self.ingested, list(self.open)
        while batches and all(_ingested_since(ingested_at, day, batches[0].at) for day in batches[0].days):
            ingested = batches.pop(0).cursor
        return replace(self, ingested=ingested, open=tuple(batches))

    def unconfirmed(self, ingested_at: Mapping[str, float | None]) -> dict[str, Batch]:
        """Each day of an open batch not ingested since that batch was requested, with the oldest such batch."""
        waiting: dict[str, Batch] = {}
        for batch in self.open:
            for day in batch.days:
                if day not in waiting and not _ingested_since(ingested_at, day, batch.at):
                    waiting[day] = batch
        return waiting

    def retried(
        self, unconfirmed: Mapping[str, Batch], last_runs: Mapping[str, LastRun | None], now: float
    ) -> tuple[list[Request], IngestCursor]:
        """The days of `unconfirmed` to request again at `now` (their last ingest ended without confirming them,
        and its backoff has passed; a day with a run queued or in progress waits for it), and the cursor counting
        them; days confirmed since are forgotten."""
        attempts = dict(self.retries)
        requests = []
        for day, batch in sorted(unconfirmed.items()):
            last, tries = last_runs.get(day), attempts.get(day, 0)
            if last is not None and not last.finished:
                continue
            if last is None or last.created < batch.at or last.ended is None:
                # No run since the request (not created yet, or deleted): give the daemon a backoff period first.
                due = batch.at + retry_delay(tries + 1)
            else:
                due = last.ended + retry_delay(tries)
            if now < due:
                continue
            attempts[day] = tries + 1
            mark = watermark(batch.cursor)
            requests.append(Request(day, f"{day}@{mark}/retry-{attempts[day]}", mark))
        attempts = {day: count for day, count in attempts.items() if day in unconfirmed}
        return requests, replace(self, retries=attempts)

    def requested(self, store_cursor: Any, days: Iterable[str], now: float) -> IngestCursor:
        """The cursor once the store has been read up to `store_cursor` and `days` requested at `now`."""
        batches = list(self.open)
        if days := tuple(days):
            batches.append(Batch(now, days, store_cursor))
        if len(batches) > MAX_OPEN_BATCHES:
            older, newer, *rest = batches
            batches = [replace(newer, days=tuple(sorted(set(older.days) | set(newer.days)))), *rest]
        return replace(self, store=store_cursor, open=tuple(batches))


def new_requests(store_cursor: Any, days: Iterable[str], retries: Iterable[Request]) -> list[Request]:
    """The retries, then a run for every day with new records not already retried, keyed by day and watermark."""
    retries = list(retries)
    retried = {request.day for request in retries}
    mark = watermark(store_cursor)
    return retries + [Request(day, f"{day}@{mark}", mark) for day in days if day not in retried]


def _ingested_since(ingested_at: Mapping[str, float | None], day: str, since: float) -> bool:
    at = ingested_at.get(day)
    return at is not None and at >= since
