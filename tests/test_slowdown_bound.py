"""A spread window's slowdown bound (`calibration.slowdown_bounds`): the mean log ratio of actual to predicted duration
an unchanged window of random rides stays below, wider for fewer rides and for days that differ more, and part of
the window's RMSE verdict (`online.alarms`). Synthetic rides: a month of days, each with its own offset."""

import numpy as np
import pytest

from taxi_assets.core.calibration import slowdown_bounds

pytestmark = pytest.mark.unit

SIZES = (100, 1000, 5000)


def month(day_sd: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log ratios of 1,000 rides a day for 28 days (spread 0.4 within a day, `day_sd` between days), and pickups."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, day_sd, 28)
    day = np.repeat(np.arange(28), 1000)
    pickup = np.datetime64("2023-02-01T00:00", "ns") + day * np.timedelta64(1, "D")
    pickup = pickup + rng.integers(0, 86_400, len(day)) * np.timedelta64(1, "s")
    return offsets[day] + rng.normal(0.0, 0.4, len(day)), pickup


def test_the_bound_is_above_the_mean_and_tighter_for_more_rides() -> None:
    ratios, pickup = month(day_sd=0.0)
    table = slowdown_bounds(ratios, pickup, SIZES)
    assert table.sizes == list(SIZES)
    excess = np.array(table.bounds) - ratios.mean()
    assert (excess > 0).all() and excess[0] > excess[1] > excess[2]
    # Rides alone: about 2.9 standard errors of a window's mean at alpha 0.2%.
    assert excess[1] == pytest.approx(2.88 * 0.4 / np.sqrt(1000), rel=0.2)
    # A window 10% slower (0.095) is beyond it at every size but the smallest.
    assert (excess[1:] < np.log(1.10)).all()


def test_days_that_differ_widen_the_bound() -> None:
    quiet = slowdown_bounds(*month(day_sd=0.0), SIZES)
    varied_ratios, pickup = month(day_sd=0.05)
    varied = slowdown_bounds(varied_ratios, pickup, SIZES)
    assert varied.bounds[-1] - varied_ratios.mean() > 2 * (quiet.bounds[-1] - month(day_sd=0.0)[0].mean())


def test_a_month_too_small_to_bound_is_refused() -> None:
    ratios, pickup = month(day_sd=0.0)
    with pytest.raises(ValueError, match="too few validation rides"):
        slowdown_bounds(ratios[:50], pickup[:50], SIZES)
