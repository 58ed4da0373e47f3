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
import json
import logging
import math
import sys
import uuid
from pathlib import Path

from taxi_assets import settings
from taxi_assets.core.tlc import TripDataError, check_month
from taxi_assets.replay.engine import Replay
from taxi_assets.replay.rides import Scenario, load_rides
from taxi_assets.replay.stats import format_summary

INTERRUPTED_EXIT_STATUS = 130


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
    # A download's progress on stderr, as the tool's other lines.
    log, to_stderr = logging.getLogger("taxi-replay"), logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(logging.Formatter("replay: %(message)s"))
    log.addHandler(to_stderr)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        rides = load_rides(months, source, current.cache_dir, options.all_rides, options.raw_tlc_rows, scenario, log)
    except (TripDataError, OSError) as error:
        print(f"replay: {error}", file=sys.stderr)
        return 2
    finally:
        log.removeHandler(to_stderr)
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
