"""The replay engine: rides sent on their schedule by asyncio, each 2xx prediction's feedback when it is due."""

from __future__ import annotations

import asyncio
import heapq
import math
import signal
import sys
import time
from typing import Any

import aiohttp
import pandas as pd
from tqdm import tqdm

from taxi_assets.replay.rides import ride_payload
from taxi_assets.replay.stats import EndpointStats

# How long in-flight requests may finish after Ctrl-C before they are abandoned (a second Ctrl-C abandons them).
DRAIN_SECONDS = 5.0
PROGRESS_LINE_SECONDS = 5.0
# The service (BentoML's uvicorn) closes a keep-alive connection idle for 5 s; aiohttp would reuse one idle for up
# to 15 s. A request sent on a pooled connection as the server closes it fails with "Server disconnected" (seen:
# one /feedback of 100 in a replay at 1.6 rides/s). aiohttp does not reuse a connection idle for longer than this.
IDLE_CONNECTION_SECONDS = 2.0


class Replay:
    """One replay: the rides, how fast they go, and what the service answered.

    Rides are sent by one loop on their schedule, at most `concurrency` requests in flight; a 2xx prediction puts
    the ride's feedback on a heap by due time, which a second loop empties. SIGINT or SIGTERM stops both loops;
    requests in flight get DRAIN_SECONDS to finish (a second signal abandons them at once).
    """

    def __init__(
        self,
        url: str,
        rides: pd.DataFrame,
        run_id: str,
        rate: float | None,
        speed: float,
        concurrency: int = 32,
        raw: bool = False,
        feedback: bool = True,
        progress: bool = True,
    ) -> None:
        self.url = url
        # Column arrays: a ride is picked out when it is sent (a month as Python dicts costs seconds up front).
        self._columns = {name: rides[name].to_numpy() for name in rides.columns}
        self.count = len(rides)
        self.run_id = run_id
        self.rate = rate  # rides/s; None: the rides' own clock at `speed`; inf: as fast as possible
        self.speed = speed  # seconds of the month per second of replay: the ride clock and the feedback delay
        self.concurrency = concurrency
        self.raw = raw
        self.feedback = feedback
        self.progress = progress
        self.predict = EndpointStats()
        self.feedback_stats = EndpointStats()
        self.interrupted = False
        self.feedback_not_sent = 0

    def ride_id(self, ride: dict) -> str:
        return f"{self.run_id}-{ride['month']}-{ride['row']}"

    def ride(self, index: int) -> dict[str, Any]:
        return {name: column[index] for name, column in self._columns.items()}

    def send_at(self, index: int) -> float:
        """Seconds after the start at which ride `index` is due."""
        if self.rate is None:
            offsets = self._columns["offset_s"]
            return float(offsets[index] - offsets[0]) / self.speed
        return 0.0 if math.isinf(self.rate) else index / self.rate

    async def run(self) -> float:
        """Replay every ride (until stopped); return the wall time in seconds."""
        loop = asyncio.get_running_loop()
        self._stop, self._abandon, self._due_added = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._due: list[tuple[float, int, str, float]] = []  # (monotonic due time, ride index, id, minutes)
        self._in_flight: set[asyncio.Task] = set()
        self._sending_done = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        # A bar on a terminal; in a log (not a terminal) a plain line every PROGRESS_LINE_SECONDS.
        self._bar = tqdm(
            total=self.count,
            unit="ride",
            disable=not (self.progress and sys.stderr.isatty()),
            file=sys.stderr,
            mininterval=0.5,
            ncols=100,
        )
        self._last_line = time.monotonic()
        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=self.concurrency, keepalive_timeout=IDLE_CONNECTION_SECONDS)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), connector=connector) as session:
                self._session = session
                feedback_loop = asyncio.ensure_future(self._feedback_loop())
                await self._send_loop(started)
                self._sending_done = True
                # The last feedback is due the longest ride's duration / speed after its prediction.
                await _first_of(feedback_loop, self._stop.wait())
                if self._stop.is_set():
                    self.interrupted = True
                    feedback_loop.cancel()
                    await asyncio.gather(feedback_loop, return_exceptions=True)
                    await self._drain()
                self.feedback_not_sent = len(self._due)
        finally:
            self._refresh_bar()
            self._bar.close()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return time.monotonic() - started

    def _on_signal(self) -> None:
        if self._stop.is_set():
            self._abandon.set()
        self._stop.set()

    async def _send_loop(self, started: float) -> None:
        for index in range(self.count):
            wait = started + self.send_at(index) - time.monotonic()
            if wait > 0:
                await _first_of(self._stop.wait(), timeout=wait)
            if self._stop.is_set():
                return
            await self._slots.acquire()
            if self._stop.is_set():
                self._slots.release()
                return
            self._spawn(self._send_ride(index))

    async def _feedback_loop(self) -> None:
        """Send each feedback when it is due, until every ride's has gone."""
        while True:
            if not self._due and self._sending_done and not self._in_flight:
                return
            wait = self._due[0][0] - time.monotonic() if self._due else 0.5
            if wait > 0:
                self._due_added.clear()
                await _first_of(self._due_added.wait(), timeout=wait)
                continue
            await self._slots.acquire()
            _, _, ride_id, minutes = heapq.heappop(self._due)
            self._spawn(self._send_feedback(ride_id, minutes))

    async def _drain(self) -> None:
        """Let the requests in flight finish for DRAIN_SECONDS at most, or until a second signal."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while self._in_flight and not self._abandon.is_set() and time.monotonic() < deadline:
            await _first_of(self._abandon.wait(), *self._in_flight, timeout=deadline - time.monotonic())
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _post(self, path: str, body: dict, stats: EndpointStats) -> int | None:
        stats.sent += 1
        sent = time.perf_counter()
        try:
            async with self._session.post(f"{self.url}{path}", json=body) as response:
                text = await response.text()
                stats.record(response.status, (time.perf_counter() - sent) * 1e3, text)
                return response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            stats.record(None, 0.0, error=f"{type(error).__name__}: {error}")
            return None

    async def _send_ride(self, index: int) -> None:
        try:
            ride = self.ride(index)
            ride_id = self.ride_id(ride)
            status = await self._post("/predict", ride_payload(ride, ride_id, self.raw), self.predict)
            minutes = float(ride["duration_min"])
            if self.feedback and status is not None and 200 <= status < 300 and math.isfinite(minutes):
                due = time.monotonic() + minutes * 60 / self.speed
                heapq.heappush(self._due, (due, index, ride_id, float(minutes)))
                self._due_added.set()
        finally:
            self._slots.release()
            self._bar.update()
            self._refresh_bar()

    async def _send_feedback(self, ride_id: str, minutes: float) -> None:
        try:
            await self._post("/feedback", {"id": ride_id, "actual_duration": round(minutes, 6)}, self.feedback_stats)
        finally:
            self._slots.release()

    def _refresh_bar(self) -> None:
        predict = self.predict
        errors = predict.client_errors + predict.server_errors + predict.failed
        if not self._bar.disable:
            self._bar.set_postfix(
                ok=predict.ok, err=errors, feedback=self.feedback_stats.ok, due=len(self._due), refresh=False
            )
        elif self.progress and time.monotonic() - self._last_line >= PROGRESS_LINE_SECONDS:
            self._last_line = time.monotonic()
            print(
                f"replay: {predict.sent}/{self.count} rides sent, {predict.ok} predicted, {errors} refused "
                f"or failed, {self.feedback_stats.ok} feedback sent, {len(self._due)} due",
                file=sys.stderr,
                flush=True,
            )

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "url": self.url,
            "run_id": self.run_id,
            "rides": self.count,
            "interrupted": self.interrupted,
            "seconds": round(seconds, 3),
            "predict": self.predict.summary(seconds),
            "feedback": {**self.feedback_stats.summary(seconds), "not_sent": self.feedback_not_sent},
        }


async def _first_of(*awaitables, timeout: float | None = None) -> None:
    """Return when the first of `awaitables` completes, or after `timeout` seconds; cancel the waits it created
    (tasks passed in are left running)."""
    futures = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    created = [future for future, awaitable in zip(futures, awaitables, strict=True) if future is not awaitable]
    try:
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in created:
            future.cancel()
