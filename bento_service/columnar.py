"""Column-wise parsing of a `/predict_batch` body: the fast path for the batches pydantic would accept as they are.

Validating one pydantic `Ride` per ride cost most of a 1,000-ride batch (the model itself takes a few ms). Here
msgspec decodes the body into typed rows and NumPy checks each rule on whole columns. The fast path is
conservative: it accepts only bodies whose every ride is plainly valid under the `Ride` rules (ISO date strings,
a single pickup name, ids within bounds), and returns None for anything else, which then goes through the
pydantic models, so that every answer and every 4xx message is the one the single-ride rules give.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass

import msgspec
import numpy as np


class _Row(msgspec.Struct):
    PULocationID: int
    DOLocationID: int
    trip_distance: float
    id: str | None = None
    pickup_datetime: str | None = None
    lpep_pickup_datetime: str | None = None


class _Body(msgspec.Struct):
    rides: list[_Row]


_DECODER = msgspec.json.Decoder(_Body)
# A naive ISO date and time that pydantic and NumPy read alike; offsets and other spellings take the slow path.
_PICKUP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d{1,6})?)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class RideColumns:
    """A validated batch, column-wise; `id` holds None where the caller gave none."""

    id: list[str | None]
    PULocationID: np.ndarray
    DOLocationID: np.ndarray
    trip_distance: np.ndarray
    pickup_datetime: np.ndarray  # datetime64[us], wall clock

    def __len__(self) -> int:
        return len(self.id)


class _Prediction(msgspec.Struct):
    id: str
    duration_minutes: float
    duration: float
    model_tag: str


class _Predictions(msgspec.Struct):
    predictions: list[_Prediction]


_ENCODER = msgspec.json.Encoder()


def encode_predictions(ids: list[str], durations: list[float], model_tag: str) -> bytes:
    """`BatchPrediction`'s JSON, without a pydantic model per prediction (a fifth of the time for 1,000)."""
    if len(ids) != len(durations):
        raise ValueError(f"{len(ids)} ids for {len(durations)} predictions")
    # `map` builds the rows without a Python frame per row: 0.3 against 0.42 ms for 1,000.
    rows = list(map(_Prediction, ids, durations, durations, itertools.repeat(model_tag)))
    return _ENCODER.encode(_Predictions(rows))


def parse(
    body: bytes, *, max_rides: int, max_location_id: int, earliest: dt.datetime, latest: dt.datetime
) -> RideColumns | None:
    """The batch in `body` when every ride is plainly valid, else None (the caller validates it ride by ride)."""
    try:
        rows = _DECODER.decode(body).rides
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not 1 <= len(rows) <= max_rides:
        return None
    pickups = [row.pickup_datetime if row.lpep_pickup_datetime is None else row.lpep_pickup_datetime for row in rows]
    if any(row.pickup_datetime is not None and row.lpep_pickup_datetime is not None for row in rows):
        return None  # both names: pydantic checks that they agree
    if None in pickups or not all(map(_PICKUP.fullmatch, pickups)):
        return None
    ids = [row.id for row in rows]
    given = [i for i in ids if i is not None]
    if len(set(given)) != len(given) or any(not 1 <= len(i) <= 128 or _CONTROL.search(i) for i in given):
        return None
    try:
        pu = np.array([row.PULocationID for row in rows], dtype=np.int64)
        do = np.array([row.DOLocationID for row in rows], dtype=np.int64)
        pickup = np.array(pickups, dtype="datetime64[us]")
    except (OverflowError, ValueError):  # an integer beyond int64, a date that does not exist
        return None
    distance = np.array([row.trip_distance for row in rows], dtype=np.float64)
    valid = (
        (pu >= 1).all()
        and (pu <= max_location_id).all()
        and (do >= 1).all()
        and (do <= max_location_id).all()
        and np.isfinite(distance).all()
        and (distance >= 0).all()
        and (pickup >= np.datetime64(earliest, "us")).all()
        and (pickup < np.datetime64(latest, "us")).all()
    )
    return RideColumns(ids, pu, do, distance, pickup) if valid else None
