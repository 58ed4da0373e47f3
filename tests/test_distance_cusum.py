"""The dataset alarm's distance CUSUM (`online.distance_cusum`): a lasting change of the rides' distances, longer or
shorter, against the profile's slot means adds up to an alarm that needs no window before it to agree; a change
within the allowance, or rides without a plausible distance, do not. Pure arithmetic on chunks of identical
deviations, so each chunk's mean is exact."""

import numpy as np
import pandas as pd
import pytest

from taxi_assets.core import online, profile
from taxi_assets.core.drift_scores import CONSECUTIVE, SLOT_SHRINKAGE
from taxi_assets.core.online import (
    DISTANCE_CUSUM_ALLOWANCE,
    DISTANCE_CUSUM_LIMIT,
    RMSE_CHUNK,
    WindowFigures,
    distance_cusum,
)
from taxi_assets.core.timeslots import slot_of
from tests.test_profile import STORED

pytestmark = pytest.mark.unit


def chunks(*shifts: float) -> np.ndarray:
    """Deviations of one chunk per shift (log of the distances' factor), oldest first."""
    return np.concatenate([np.full(RMSE_CHUNK, shift) for shift in shifts])


def test_distances_10_percent_longer_or_shorter_alarm_in_the_seventh_chunk() -> None:
    step = np.log(1.10) - DISTANCE_CUSUM_ALLOWANCE
    assert distance_cusum(chunks(*[np.log(1.10)] * 6)) == pytest.approx(6 * step)
    assert distance_cusum(chunks(*[np.log(1.10)] * 6)) < DISTANCE_CUSUM_LIMIT
    assert distance_cusum(chunks(*[np.log(1.10)] * 7)) > DISTANCE_CUSUM_LIMIT
    # Shorter: the other side of the CUSUM.
    assert distance_cusum(chunks(*[-np.log(1.10)] * 7)) == pytest.approx(7 * step)


def test_a_change_within_the_allowance_never_adds_up_and_a_day_is_forgotten() -> None:
    assert distance_cusum(chunks(*[0.9 * DISTANCE_CUSUM_ALLOWANCE] * 40)) == 0.0
    assert distance_cusum(chunks(*[-0.9 * DISTANCE_CUSUM_ALLOWANCE] * 40)) == 0.0
    # A day of long rides (two chunks 20% longer), then ordinary ones: below the limit, and draining.
    day = [np.log(1.2)] * 2
    peak = distance_cusum(chunks(*day))
    assert peak < DISTANCE_CUSUM_LIMIT
    assert distance_cusum(chunks(*day, *[0.0] * 5)) == pytest.approx(peak - 5 * DISTANCE_CUSUM_ALLOWANCE)


def test_rides_without_a_plausible_distance_are_left_out_of_the_chunks() -> None:
    deviations = chunks(np.log(1.5))
    assert distance_cusum(deviations[1:]) is None
    with_missing = np.insert(deviations[1:], 10, np.nan)
    assert distance_cusum(with_missing) is None
    assert distance_cusum(np.insert(deviations, 10, np.nan)) == pytest.approx(np.log(1.5) - DISTANCE_CUSUM_ALLOWANCE)


def test_each_ride_is_set_against_its_slots_mean_shrunk_towards_the_months() -> None:
    # 100 morning rides of 1 mile (log 0) and 100 evening rides of e miles (log 1), one Monday.
    morning, evening = np.datetime64("2023-01-09T08:10"), np.datetime64("2023-01-09T20:10")
    frame = pd.DataFrame(
        {
            "pickup_datetime": pd.to_datetime([morning] * 100 + [evening] * 100),
            "trip_distance": [1.0] * 100 + [np.e] * 100,
        }
    )
    means = profile.slot_log_distance(frame)
    slots = slot_of(np.array([morning, evening], dtype="datetime64[ns]"))
    shrunk = SLOT_SHRINKAGE * 0.5 / (100 + SLOT_SHRINKAGE)
    assert means[slots[0]] == pytest.approx(shrunk) and means[slots[1]] == pytest.approx(1 - shrunk)
    # A slot with no rides gets the month's mean.
    assert means[(slots[0] + 3) % len(means)] == pytest.approx(0.5)
    prof = _with_slot_means(means)
    pickup = np.array([morning, morning, evening, evening], dtype="datetime64[ns]")
    deviations = prof.distance_deviations(np.array([1.0, 0.0, 150.0, np.e]), pickup)
    # 0 miles counts as a tenth of a mile; 150 miles is an odometer glitch (an outlier), not a distance.
    assert deviations[0] == pytest.approx(-shrunk) and deviations[1] == pytest.approx(np.log(0.1) - shrunk)
    assert np.isnan(deviations[2]) and deviations[3] == pytest.approx(shrunk)


def _with_slot_means(means: list[float]) -> profile.ReferenceProfile:
    return profile.ReferenceProfile.from_dict({**STORED, "distance_slot_means": means})


def _consecutive(dataset: bool, cusum: float | None) -> WindowFigures:
    return WindowFigures(
        "last_5000", 5000, 0, CONSECUTIVE, None, None, None, None, None, {}, {"dataset": dataset}, distance_cusum=cusum
    )


def test_the_distance_cusum_raises_the_dataset_alarm_without_the_window_before() -> None:
    quiet = _consecutive(False, 0.0)
    assert online.confirmed(_consecutive(False, DISTANCE_CUSUM_LIMIT + 0.01), [quiet])["dataset"]
    assert not online.confirmed(_consecutive(False, DISTANCE_CUSUM_LIMIT), [quiet])["dataset"]
    # The per-window verdict still needs the window before it to agree.
    assert not online.confirmed(_consecutive(True, 0.0), [quiet])["dataset"]
    assert online.confirmed(_consecutive(True, None), [_consecutive(True, None)])["dataset"]
    samples = {s.name: s.value for s in online.online_samples(_consecutive(False, 0.7), [quiet], "tag", 6.0)}
    assert samples["taxi_online_distance_cusum"] == 0.7
    assert samples["taxi_online_distance_cusum_limit"] == DISTANCE_CUSUM_LIMIT
