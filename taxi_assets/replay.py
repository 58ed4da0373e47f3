"""Replay a month of real TLC green-taxi rides against the Bento service, with the ground truth as feedback.

    taxi-replay --month 2022-02 --speed 600          # ten minutes of the month per second of replay
    taxi-replay --month 2022-02 --rate 200           # 200 rides/s, whatever their timestamps
    taxi-replay --month 2022-02 --rate max --limit 20000
    taxi-replay --month 2021-01 --month 2023-03 --distance-scale 1.5 --hour-shift 6   # a drift scenario

Each ride is sent to `/predict` (as the documented JSON, or as the raw TLC row with `--raw-tlc-rows`) under an id
of its own; once the prediction is answered, its actual duration goes to `/feedback` after the ride's duration
divided by `--speed`, as a taxi would report it on arrival. The rides come from the trip-data source of the
platform (TAXI_TRIP_DATA_URL, by default the local mirror ../shared/data/tlc when it exists, else TLC's address:
a local mirror is read in place, TLC's address is downloaded once into TAXI_CACHE_DIR), or from `--source`; the
first line says which. `--distance-scale` and `--hour-shift` change what is sent (the feedback stays the real
duration). A progress bar runs on stderr; the summary (requests sent, answers by class,
4xx reasons, latency percentiles, throughput) is printed at the end, also after Ctrl-C, which stops sending at
once (exit status 130). `--summary-json FILE` writes the same summary as JSON.

The tool imports neither Dagster nor BentoML: it is a client, as any other caller of the service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import heapq
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from taxi_assets import settings
from taxi_assets.core.tlc import (
    MAX_DURATION_MINUTES,
    MIN_DURATION_MINUTES,
    RAW_COLUMNS,
    TripDataError,
    check_month,
    is_remote,
    local_path,
    source_location,
    validate_trip_file,
)

PICKUP, DROPOFF = "lpep_pickup_datetime", "lpep_dropoff_datetime"
RIDE_FIELDS = ("PULocationID", "DOLocationID", "trip_distance")
INTERRUPTED_EXIT_STATUS = 130
# How long in-flight requests may finish after Ctrl-C before they are abandoned (a second Ctrl-C abandons them).
DRAIN_SECONDS = 5.0
PROGRESS_LINE_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    """Demo distortions of the replayed traffic; the feedback is always the ride's real duration."""

    distance_scale: float = 1.0
    hour_shift: float = 0.0

    def described(self) -> str:
        """` (distances x1.5, pickups shifted by +3 h)`, or nothing when the traffic is unchanged."""
        changes = []
        if self.distance_scale != 1.0:
            changes.append(f"distances x{self.distance_scale:g}")
        if self.hour_shift != 0.0:
            changes.append(f"pickups shifted by {self.hour_shift:+g} h")
        return f" ({', '.join(changes)})" if changes else ""


# ---------------------------------------------------------------------------------------------------------------
# Rides


def month_file(month: str, source: str, cache_dir: str) -> Path:
    """The local parquet file of `month`: read in place from a mirror, downloaded once (and checked) otherwise."""
    location = source_location(source, month)
    if not is_remote(location):
        path = local_path(location)
        if not path.is_file():
            raise TripDataError(f"{month}: no file at {path}")
        validate_trip_file(path, month, location)
        return path
    cache = Path(cache_dir)
    cached = cache / Path(location).name
    if cached.is_file():
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    print(f"replay: downloading {location}", file=sys.stderr)
    handle, name = tempfile.mkstemp(dir=cache, prefix=".partial-", suffix=".download")
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(location, timeout=60) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        validate_trip_file(partial, month, location)
        os.replace(partial, cached)
    except urllib.error.HTTPError as error:
        raise TripDataError(f"{month}: {location} answered HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise TripDataError(f"{month}: could not download {location} ({error})") from error
    finally:
        partial.unlink(missing_ok=True)
    return cached


def load_rides(
    months: list[str], source: str, cache_dir: str, all_rides: bool, raw: bool, scenario: Scenario = Scenario()
) -> pd.DataFrame:
    """The rides of `months`, on one timeline: `offset_s` is the pickup's time since the start of its own month
    (clamped to the month), so mixed months interleave as if they were one. With `all_rides` false only rides of
    1 to 60 minutes are kept (the seed filter: the model's domain). The scenario shifts the times and scales the
    distances sent; the timeline and `duration_min` (the feedback) stay the real ones."""
    frames = []
    for month in months:
        columns = list(RAW_COLUMNS) if raw else [PICKUP, DROPOFF, *RIDE_FIELDS]
        frame = pq.read_table(month_file(month, source, cache_dir), columns=columns).to_pandas()
        frame.insert(0, "month", month)
        frame.insert(1, "row", np.arange(len(frame)))
        start = pd.Timestamp(f"{month}-01")
        span = ((start + pd.offsets.MonthBegin(1)) - start).total_seconds()
        frame["offset_s"] = ((frame[PICKUP] - start).dt.total_seconds()).clip(0, span)
        frames.append(frame)
    rides = pd.concat(frames, ignore_index=True)
    rides["duration_min"] = (rides[DROPOFF] - rides[PICKUP]).dt.total_seconds() / 60
    if not all_rides:
        rides = rides[rides["duration_min"].between(MIN_DURATION_MINUTES, MAX_DURATION_MINUTES)]
    shift = pd.Timedelta(hours=scenario.hour_shift)
    rides = rides.assign(
        **{PICKUP: rides[PICKUP] + shift, DROPOFF: rides[DROPOFF] + shift},
        trip_distance=rides["trip_distance"] * scenario.distance_scale,
    )
    return rides.sort_values(["offset_s", "month", "row"], kind="stable").reset_index(drop=True)


def _json_value(value: Any) -> Any:
    """A parquet cell as JSON: timestamps in ISO 8601 (TLC's have whole seconds), missing values as null, NumPy
    scalars as Python ones, whole floats as integers (IDs and codes read as floats when a month misses some)."""
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else str(np.datetime_as_string(value, unit="s"))
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _whole(value: Any) -> Any:
    value = _json_value(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def ride_payload(ride: dict[str, Any], ride_id: str, raw: bool) -> dict[str, Any]:
    """The request body for one ride: the documented fields, or the raw TLC row (which the service also accepts)."""
    if raw:
        body = {name: _json_value(ride[name]) for name in RAW_COLUMNS}
        body["PULocationID"], body["DOLocationID"] = _whole(ride["PULocationID"]), _whole(ride["DOLocationID"])
        return {"id": ride_id, **body}
    return {
        "id": ride_id,
        "PULocationID": _whole(ride["PULocationID"]),
        "DOLocationID": _whole(ride["DOLocationID"]),
        "trip_distance": _json_value(ride["trip_distance"]),
        "pickup_datetime": _json_value(ride[PICKUP]),
    }


# ---------------------------------------------------------------------------------------------------------------
# Statistics

_INPUT_VALUE = re.compile(r",?\s*input_value=.*?(?=, input_type=|\])")
_SPACES = re.compile(r"\s+")


def reason(status: int, body: str) -> str:
    """A short reason for a 4xx/5xx answer: the service's message and the fields it names, without the offending
    values, so that equal causes count together."""
    text = body
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        answer = json.loads(body)
        text = str(answer.get("error", body))
        if details := answer.get("detail"):
            text = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}" for d in details)
    text = _SPACES.sub(" ", _INPUT_VALUE.sub("", text)).strip()
    return f"{status}: {text[:200]}"


@dataclasses.dataclass
class EndpointStats:
    sent: int = 0
    ok: int = 0
    client_errors: int = 0
    server_errors: int = 0
    failed: int = 0  # no HTTP answer: connection refused or reset, timeout
    reasons: Counter = dataclasses.field(default_factory=Counter)
    latencies_ms: list[float] = dataclasses.field(default_factory=list)

    def record(self, status: int | None, latency_ms: float, body: str = "", error: str = "") -> None:
        if status is None:
            self.failed += 1
            self.reasons[f"no answer: {error[:200]}"] += 1
            return
        self.latencies_ms.append(latency_ms)
        if 200 <= status < 300:
            self.ok += 1
        elif status < 500:
            self.client_errors += 1
            self.reasons[reason(status, body)] += 1
        else:
            self.server_errors += 1
            self.reasons[reason(status, body)] += 1

    def summary(self, seconds: float) -> dict[str, Any]:
        latencies = np.array(self.latencies_ms) if self.latencies_ms else None
        percentiles = {}
        if latencies is not None:
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
                percentiles[name] = round(float(np.percentile(latencies, q)), 2)
            percentiles["max"] = round(float(latencies.max()), 2)
        return {
            "sent": self.sent,
            "2xx": self.ok,
            "4xx": self.client_errors,
            "5xx": self.server_errors,
            "no_answer": self.failed,
            "per_second": round(self.ok / seconds, 1) if seconds > 0 else 0.0,
            "latency_ms": percentiles,
            "reasons": dict(self.reasons.most_common()),
        }


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
        connector = aiohttp.TCPConnector(limit=self.concurrency)
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


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"replay {summary['run_id']} against {summary['url']}: {summary['rides']} rides, "
        f"{summary['seconds']:.1f} s{' (interrupted)' if summary['interrupted'] else ''}"
    ]
    for endpoint in ("predict", "feedback"):
        stats = summary[endpoint]
        latency = stats["latency_ms"]
        line = (
            f"  /{endpoint}: sent {stats['sent']}, 2xx {stats['2xx']}, 4xx {stats['4xx']}, 5xx {stats['5xx']}, "
            f"no answer {stats['no_answer']}; {stats['per_second']}/s"
        )
        if latency:
            line += f"; latency ms p50 {latency['p50']} p90 {latency['p90']} p99 {latency['p99']} max {latency['max']}"
        if endpoint == "feedback" and stats["not_sent"]:
            line += f"; {stats['not_sent']} not sent (stopped before they were due)"
        lines.append(line)
        for text, count in list(stats["reasons"].items())[:10]:
            lines.append(f"      {count} × {text}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def _rate(text: str) -> float:
    if text == "max":
        return math.inf
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("the rate must be positive, or 'max'")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive ('inf' for no delay)")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError("must be a finite number")
    return value


def _scale(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative (a distance is not)")
    return value


def _day(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 31:
        raise argparse.ArgumentTypeError("a day of the month: 1 to 31")
    return value


def _month(text: str) -> str:
    try:
        return check_month(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parser() -> argparse.ArgumentParser:
    current = settings.current()
    host = "127.0.0.1" if current.service_host in ("0.0.0.0", "::") else current.service_host
    arguments = argparse.ArgumentParser(
        prog="taxi-replay",
        description="Replay real TLC green-taxi rides against the Bento service, with feedback.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    arguments.add_argument("--month", type=_month, action="append", help="month to replay (repeat to mix months)")
    arguments.add_argument("--url", default=f"http://{host}:{current.service_port}", help="the service")
    arguments.add_argument("--source", default=current.trip_data_url, help="trip-data source (TAXI_TRIP_DATA_URL)")
    arguments.add_argument(
        "--rate", type=_rate, help="rides per second, or 'max'; default: the rides' own clock at --speed"
    )
    arguments.add_argument(
        "--speed",
        type=_positive,
        default=60.0,
        help="time compression: seconds of the month per second of replay; also divides the feedback delay "
        "(a ride's duration). 'inf': feedback right after the prediction",
    )
    arguments.add_argument("--limit", type=int, help="replay only the first N rides of the timeline")
    arguments.add_argument(
        "--start-day", type=_day, default=1, help="start the timeline at this day of the month (1-31)"
    )
    arguments.add_argument("--concurrency", type=int, default=32, help="requests in flight at most")
    arguments.add_argument(
        "--distance-scale", type=_scale, default=1.0, help="scenario: multiply the trip_distance sent"
    )
    arguments.add_argument(
        "--hour-shift", type=_finite, default=0.0, help="scenario: shift the pickup (and drop-off) times sent by hours"
    )
    arguments.add_argument(
        "--all-rides", action="store_true", help="send every row, not only rides of 1 to 60 minutes (the seed filter)"
    )
    arguments.add_argument(
        "--raw-tlc-rows", action="store_true", help="send each ride as its raw TLC row (lpep_pickup_datetime, …)"
    )
    arguments.add_argument("--no-feedback", action="store_true", help="send predictions only")
    arguments.add_argument("--id-prefix", help="prefix of the ride ids (default: a random one per replay)")
    arguments.add_argument("--summary-json", type=Path, help="also write the summary to this file as JSON")
    arguments.add_argument("--no-progress", action="store_true", help="no progress bar")
    return arguments


def main(argv: list[str] | None = None) -> int:
    try:
        return replay_main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the rides were still loading: nothing was sent
        print("replay: interrupted before the first ride was sent", file=sys.stderr)
        return INTERRUPTED_EXIT_STATUS


def replay_main(argv: list[str] | None) -> int:
    options = parser().parse_args(argv)
    months = options.month or ["2022-02"]
    current = settings.current()
    source = settings.resolve(options.source)
    print(f"replay: trip data from {settings.describe_source(source)}", file=sys.stderr, flush=True)
    scenario = Scenario(distance_scale=options.distance_scale, hour_shift=options.hour_shift)
    try:
        rides = load_rides(months, source, current.cache_dir, options.all_rides, options.raw_tlc_rows, scenario)
    except (TripDataError, OSError) as error:
        print(f"replay: {error}", file=sys.stderr)
        return 2
    # Days are counted on the timeline, so with mixed months each month starts at that day.
    rides = rides[rides["offset_s"] >= (options.start_day - 1) * 86400].reset_index(drop=True)
    if options.limit is not None:
        rides = rides.iloc[: options.limit]
    replay = Replay(
        url=options.url.rstrip("/"),
        rides=rides,
        run_id=options.id_prefix or uuid.uuid4().hex[:8],
        rate=options.rate,
        speed=options.speed,
        concurrency=max(1, options.concurrency),
        raw=options.raw_tlc_rows,
        feedback=not options.no_feedback,
        progress=not options.no_progress,
    )
    if options.rate is None:
        pace = f"{options.speed:g}x the rides' own clock"
    else:
        pace = "as fast as the service answers" if math.isinf(options.rate) else f"{options.rate:g} rides/s"
    print(
        f"replay: {len(rides)} rides of {', '.join(months)}{scenario.described()} to {replay.url} at {pace}",
        file=sys.stderr,
    )
    seconds = asyncio.run(replay.run())
    summary = replay.summary(seconds)
    print(format_summary(summary), flush=True)
    if options.summary_json:
        options.summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    return INTERRUPTED_EXIT_STATUS if replay.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
