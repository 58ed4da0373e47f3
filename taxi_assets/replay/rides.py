"""The rides a replay sends: a month's TLC rows on one timeline, a drift scenario, and the request bodies."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from taxi_assets.core.tlc import MAX_DURATION_MINUTES, MIN_DURATION_MINUTES, RAW_COLUMNS
from taxi_assets.trip_files import month_file

PICKUP, DROPOFF = "lpep_pickup_datetime", "lpep_dropoff_datetime"
RIDE_FIELDS = ("PULocationID", "DOLocationID", "trip_distance")
_LOG = logging.getLogger(__name__)


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


def load_rides(
    months: list[str],
    source: str,
    cache_dir: str,
    all_rides: bool,
    raw: bool,
    scenario: Scenario = Scenario(),
    log: logging.Logger = _LOG,
) -> pd.DataFrame:
    """The rides of `months`, on one timeline: `offset_s` is the pickup's time since the start of its own month
    (clamped to the month), so mixed months interleave as if they were one. With `all_rides` false only rides of
    1 to 60 minutes are kept (the seed filter: the model's domain). The scenario shifts the times and scales the
    distances sent; the timeline and `duration_min` (the feedback) stay the real ones. A remote source's months are
    downloaded once into `cache_dir` (`taxi_assets.trip_files`, as the Dagster side's), with progress on `log`."""
    frames = []
    for month in months:
        columns = list(RAW_COLUMNS) if raw else [PICKUP, DROPOFF, *RIDE_FIELDS]
        with month_file(source, month, Path(cache_dir), log) as trip_file:
            frame = pq.read_table(trip_file.path, columns=columns).to_pandas()
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
