"""The RMSE alarm's CUSUMs (`online.rmse_cusum`, `online.slowdown_cusum`): a lasting excess of the RMSE over the
validation RMSE, or of rides taking longer than predicted, adds up to an alarm, a bad day or an old excess does not.
Pure arithmetic on chunks whose errors are all alike, so each chunk's statistic is exact."""

import numpy as np
import pytest

from taxi_assets.core.online import (
    RMSE_CHUNK,
    RMSE_CUSUM_ALLOWANCE,
    RMSE_CUSUM_CHUNKS,
    RMSE_CUSUM_LIMIT,
    SLOWDOWN_CUSUM_LIMIT,
    cusum_alarm,
    rmse_cusum,
    slowdown_cusum,
)
from taxi_assets.core.profile import log_ratios

pytestmark = pytest.mark.unit

REFERENCE = 5.0


def chunks(*ratios: float) -> np.ndarray:
    """Errors of one chunk per ratio, each chunk's RMSE that ratio of the reference's, oldest first (signs mixed)."""
    signs = np.where(np.arange(RMSE_CHUNK) % 2, 1.0, -1.0)
    return np.concatenate([signs * REFERENCE * ratio for ratio in ratios])


def test_under_one_chunk_of_feedback_there_is_no_verdict() -> None:
    assert rmse_cusum(chunks(2.0)[1:], REFERENCE) is None
    assert rmse_cusum(np.zeros(0), REFERENCE) is None


def test_an_ordinary_rmse_never_adds_up() -> None:
    assert rmse_cusum(chunks(*[1.0] * 40), REFERENCE) == 0.0
    # Within the allowance, however long it lasts.
    assert rmse_cusum(chunks(*[1.03] * 40), REFERENCE) == 0.0


def test_rides_25_percent_slower_alarm_within_five_chunks() -> None:
    step = np.log(1.25) - RMSE_CUSUM_ALLOWANCE
    assert rmse_cusum(chunks(*[1.25] * 4), REFERENCE) == pytest.approx(4 * step)
    assert rmse_cusum(chunks(*[1.25] * 4), REFERENCE) < RMSE_CUSUM_LIMIT < rmse_cusum(chunks(*[1.25] * 5), REFERENCE)


def test_a_bad_day_is_forgotten_and_only_the_newest_chunks_count() -> None:
    # Two chunks half as bad again (a snowstorm's evening), then ordinary traffic: below the limit, and draining.
    storm = [1.5, 1.5]
    peak = rmse_cusum(chunks(*storm), REFERENCE)
    assert peak == pytest.approx(2 * (np.log(1.5) - RMSE_CUSUM_ALLOWANCE)) and peak < RMSE_CUSUM_LIMIT
    assert rmse_cusum(chunks(*storm, *[1.0] * 5), REFERENCE) == pytest.approx(peak - 5 * RMSE_CUSUM_ALLOWANCE)
    # A lasting excess beyond the lookback is not counted: the newest chunk ends at the newest error.
    old = chunks(*[2.0] * 5, *[1.0] * RMSE_CUSUM_CHUNKS)
    assert rmse_cusum(old, REFERENCE) == 0.0
    assert rmse_cusum(np.concatenate([old, chunks(2.0)[:500]]), REFERENCE) > 0.0


def slowdown(*factors: float, predicted: float = 12.0) -> np.ndarray:
    """`log_ratios` of one chunk per factor, each ride taking `factor` times its prediction, oldest first."""
    return np.concatenate(
        [log_ratios(np.full(RMSE_CHUNK, predicted), np.full(RMSE_CHUNK, predicted * f)) for f in factors]
    )


def test_rides_10_percent_slower_than_validation_alarm_in_the_seventh_chunk() -> None:
    # Against a validation month whose rides took 2% less than predicted: each chunk adds log(1.10) + 0.02.
    reference = np.log(0.98)
    step = np.log(1.10) - reference
    assert slowdown_cusum(slowdown(*[1.10] * 5), reference) == pytest.approx(5 * step)
    assert slowdown_cusum(slowdown(*[1.10] * 5), reference) < SLOWDOWN_CUSUM_LIMIT
    assert slowdown_cusum(slowdown(*[1.10] * 6), reference) > SLOWDOWN_CUSUM_LIMIT
    assert slowdown_cusum(slowdown(1.10)[1:], reference) is None


def test_rides_faster_than_predicted_or_as_in_validation_never_add_up() -> None:
    assert slowdown_cusum(slowdown(*[0.8] * 20), 0.0) == 0.0
    # Slower than predicted, but no slower than in validation.
    assert slowdown_cusum(slowdown(*[1.04] * 20), np.log(1.05)) == 0.0


def test_ratios_are_taken_within_the_durations_the_model_knows() -> None:
    # A feedback of 0 minutes, or a prediction near 0, is clipped to the 1-60 minutes the model is trained on.
    assert log_ratios(np.array([10.0, 0.2, 90.0]), np.array([0.0, 2.0, 30.0])) == pytest.approx(
        [np.log(1 / 10), np.log(2), np.log(30 / 60)]
    )


def test_either_cusum_beyond_its_limit_raises_the_rmse_alarm() -> None:
    assert not cusum_alarm(None, None) and not cusum_alarm(RMSE_CUSUM_LIMIT, SLOWDOWN_CUSUM_LIMIT)
    assert cusum_alarm(RMSE_CUSUM_LIMIT + 0.01, None) and cusum_alarm(0.0, SLOWDOWN_CUSUM_LIMIT + 0.01)
