"""The column-wise fast path of `/predict_batch` accepts only what the single-ride pydantic rules accept, and reads
it to the same values (bento_service/columnar.py); anything else goes to the pydantic models."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter

from bento_service import service

pytestmark = pytest.mark.unit

RIDES = TypeAdapter(
    Annotated[list[service.Ride], Field(min_length=1, max_length=service.MAX_BATCH_RIDES)],
)
RIDE = {"PULocationID": 74, "DOLocationID": 42, "trip_distance": 1.7, "pickup_datetime": "2022-01-03T08:15:00"}
NO_PICKUP = {k: v for k, v in RIDE.items() if k != "pickup_datetime"}

JSON_VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
FIELD_VALUES = {
    "PULocationID": st.integers(-5, 300) | st.integers() | JSON_VALUES,
    "DOLocationID": st.integers(-5, 300) | JSON_VALUES,
    "trip_distance": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-3, 10**30) | JSON_VALUES,
    "pickup_datetime": st.datetimes(min_value=dt.datetime(1900, 1, 1)).map(dt.datetime.isoformat)
    | st.datetimes().map(lambda value: value.isoformat(sep=" ", timespec="minutes"))
    | st.sampled_from(["2022-02-30T10:00:00", "2022-01-01T24:00:00", "2022-01-01T10:00:00Z", "2022-01-01"])
    | JSON_VALUES,
    "lpep_pickup_datetime": st.datetimes().map(dt.datetime.isoformat) | JSON_VALUES,
    "id": st.text(max_size=130) | st.sampled_from(["r1", "r2", "r\x001"]) | JSON_VALUES,
}
RIDE_BODIES = st.fixed_dictionaries(
    {k: FIELD_VALUES[k] for k in ("PULocationID", "DOLocationID", "trip_distance")},
    optional={k: FIELD_VALUES[k] for k in ("pickup_datetime", "lpep_pickup_datetime", "id")},
)


def _parse(rides: list) -> service.columnar.RideColumns | None:
    return service._parse_batch(json.dumps({"rides": rides}).encode())


def _assert_same_as_pydantic(rides: list) -> service.columnar.RideColumns | None:
    columns = _parse(rides)
    try:
        validated = service._distinct_ids(RIDES.validate_json(json.dumps(rides)))
    except ValueError:  # pydantic.ValidationError included
        assert columns is None, f"the fast path accepted what the single-ride rules refuse: {rides!r}"
        return None
    if columns is not None:
        expected = service._ride_columns(validated)
        assert columns.id == expected.id
        for field in ("PULocationID", "DOLocationID", "trip_distance", "pickup_datetime"):
            np.testing.assert_array_equal(getattr(columns, field), getattr(expected, field))
            assert getattr(columns, field).dtype == getattr(expected, field).dtype
    return columns


@settings(max_examples=400, deadline=None)
@given(rides=st.lists(RIDE_BODIES | st.just(RIDE), min_size=0, max_size=4))
def test_the_fast_path_accepts_only_what_each_ride_would_and_reads_the_same_values(rides: list) -> None:
    _assert_same_as_pydantic(rides)


@pytest.mark.parametrize(
    "rides",
    [
        [RIDE],
        [RIDE, {**RIDE, "id": "r1"}, {**RIDE, "id": "r2", "trip_distance": 0}],
        [{**RIDE, "trip_distance": 260_000, "pickup_datetime": "2022-01-03 08:15:00.25"}],
        [{**RIDE, "trip_distance": 3}],
        [{"lpep_pickup_datetime": "2022-01-03T08:15", "VendorID": 2, "fare_amount": 7.5, **NO_PICKUP}],
    ],
)
def test_plainly_valid_batches_take_the_fast_path(rides: list) -> None:
    assert _assert_same_as_pydantic(rides) is not None


@pytest.mark.parametrize(
    "rides",
    [
        [RIDE, {**RIDE, "PULocationID": 0}],
        [RIDE, {**RIDE, "pickup_datetime": "1999-12-31T23:59:59"}],
        [{**RIDE, "id": "dup"}, {**RIDE, "id": "dup"}],
        [{**RIDE, "id": ""}],
        [{**RIDE, "lpep_pickup_datetime": "2022-01-03T09:15:00"}],
        [NO_PICKUP],
        [{**RIDE, "PULocationID": 2**70}],
        [],
    ],
)
def test_invalid_batches_are_left_to_the_pydantic_rules(rides: list) -> None:
    assert _parse(rides) is None


@pytest.mark.parametrize(
    "pickup", ["2022-01-03 08:15", "2022-01-03T08:15:00", "2022-01-03T08:15:00.5", "2022-01-03 08:15:00.123456"]
)
def test_every_plain_pickup_spelling_takes_the_fast_path(pickup: str) -> None:
    assert _assert_same_as_pydantic([RIDE, {**RIDE, "pickup_datetime": pickup}]) is not None


@pytest.mark.parametrize(
    "pickup",
    [
        "2022-01-03T08:15:00.",
        "2022-01-03T08:15:00.1234567",
        "2022-01-03t08:15:00",
        "2022-01-03T08:15:0",
        "2022-01-03T08-15:00",
        "２022-01-03T08:15:00",
        "2022-01-03T08:15:00\x00",
        "2022-01-03T08:15:00Z",
        "2022-01-03",
    ],
)
def test_other_pickup_spellings_are_left_to_the_pydantic_rules(pickup: str) -> None:
    rides = [RIDE, {**RIDE, "pickup_datetime": pickup}]
    assert _parse(rides) is None
    _assert_same_as_pydantic(rides)
