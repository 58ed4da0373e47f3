"""Pickup times as the drift tests see them: New York slots, elapsed hours over DST, stray pickups, window sizes."""

import numpy as np
import pandas as pd
import pytest

from taxi_assets.core import drift, drift_scores, timeslots
from taxi_assets.core.drift import CALIBRATION_SIZES, MIN_WINDOW_ROWS

pytestmark = pytest.mark.unit


def local(*stamps: str) -> np.ndarray:
    return pd.to_datetime(list(stamps)).to_numpy("datetime64[ns]")


def test_the_spring_forward_night_has_23_hours_and_the_fall_back_night_25():
    spring = timeslots.epoch_hours(local("2023-03-12 00:00", "2023-03-13 00:00"))
    autumn = timeslots.epoch_hours(local("2023-11-05 00:00", "2023-11-06 00:00"))
    assert spring[1] - spring[0] == pytest.approx(23.0)
    assert autumn[1] - autumn[0] == pytest.approx(25.0)
    # The hours covered on the spring-forward night are slotted on the wall clock: no 2 a.m. hour exists.
    hours = timeslots.slot_hours(*spring)
    assert hours.sum() == pytest.approx(23.0)
    assert hours[3 * 24 + 2] == 0.0 and hours[3 * 24 + 3] == 1.0  # a Sunday
    # A whole day of a reference counts its real hours too.
    assert timeslots.day_slot_hours(local("2023-03-12 10:00")).sum() == pytest.approx(23.0)


def test_slot_hours_read_from_the_cached_blocks_match_the_wall_clock_hour_by_hour():
    """Across a block boundary, both 2023 DST changes and New Year: the slot of every elapsed hour, as the blocks
    give it, is the one its New York wall-clock time has."""
    start = int(timeslots.epoch_hours(local("2022-12-25 00:00"))[0])
    hours = np.arange(start, start + 24 * 330)
    assert hours[0] // timeslots._BLOCK_HOURS != hours[-1] // timeslots._BLOCK_HOURS
    wall = pd.DatetimeIndex(hours.astype("datetime64[h]")).tz_localize("UTC").tz_convert(timeslots.ZONE)
    expected = timeslots.slot_of(wall.tz_localize(None).to_numpy("datetime64[ns]"))
    assert np.array_equal(timeslots._local_slots_of_hours(hours), expected)
    # any stretch of them, one hour included
    for first, length in ((0, 1), (1000, 30), (hours.size - 50, 50)):
        stretch = hours[first : first + length]
        assert np.array_equal(timeslots._local_slots_of_hours(stretch), expected[first : first + length])


def test_a_stray_pickup_does_not_stretch_a_small_window():
    hour = pd.date_range("2023-01-10 17:00", periods=40, freq="90s")
    stray = pd.Timestamp("2022-12-11 09:00")
    hours = timeslots.epoch_hours(local(*hour.astype(str), str(stray)))
    start, end = timeslots.time_span(hours)
    assert end - start < 1.0
    assert drift_scores.window_kind(hours) == drift_scores.CONSECUTIVE
    # Without a stray the span is the window's own.
    assert timeslots.time_span(hours[:-1]) == pytest.approx((hours[0], hours[-2]))


def test_a_window_too_small_for_a_test_is_insufficient_not_quiet():
    scores = drift_scores.categorical_scores(np.array([[3.0, 2.0]]), np.array([[0.5, 0.5]]))
    verdict = drift.judge("PULocationID", drift_scores.CATEGORICAL, scores, 1.0, 0.0, 0, MIN_WINDOW_ROWS)
    assert not verdict.sufficient and not verdict.drifted
    assert not drift.DriftVerdict((verdict,), 0.05).sufficient


def test_last_n_is_bounded_by_the_calibrated_sizes():
    from pydantic import ValidationError

    from taxi_assets.defs.online_monitoring.assets import OnlineDriftConfig

    assert OnlineDriftConfig(last_n=CALIBRATION_SIZES[-1]).last_n == CALIBRATION_SIZES[-1]
    for size in (CALIBRATION_SIZES[-1] + 1, 10_000, CALIBRATION_SIZES[0] - 1):
        with pytest.raises(ValidationError):
            OnlineDriftConfig(last_n=size)


def test_the_gate_refuses_a_validation_month_that_is_not_the_next_one():
    from taxi_assets.defs.model.assets import quality_gate

    metrics = {"rmse": 5.0, "nan_predictions": 0}
    assert quality_gate(metrics, 6.0, "2021-03", "2021-04").passed
    refused = quality_gate(metrics, 6.0, "2021-03", "2022-01")
    assert not refused.passed
    assert "not on 2021-04, the month after 2021-03" in refused.description
    assert "trips[2021-04]" in refused.description


def test_the_span_trims_the_extremes_as_numpys_nearest_quantile_does():
    """No strays (gaps of minutes): the span is numpy's nearest quantiles at SPAN_TRIM, for every window size."""
    rng = np.random.default_rng(7)
    for size in (*range(1, 1200), 4999, 5000, 5001, 20000):
        hours = 400_000 + np.sort(rng.uniform(0, size / 60, size))  # a ride a minute
        expected = np.quantile(hours, [timeslots.SPAN_TRIM, 1 - timeslots.SPAN_TRIM], method="nearest")
        assert timeslots.time_span(rng.permutation(hours)) == tuple(expected), size
