"""The RMSE alarm's CUSUM (`online.rmse_cusum`): a lasting excess of the RMSE over the validation RMSE adds up to
an alarm, a bad day or an old excess does not. Pure arithmetic on chunks whose errors are all alike, so each chunk's
log RMSE ratio is exact."""

import numpy as np
import pytest

from taxi_assets.core.online import (
    RMSE_CHUNK,
    RMSE_CUSUM_ALLOWANCE,
    RMSE_CUSUM_CHUNKS,
    RMSE_CUSUM_LIMIT,
    rmse_cusum,
)

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
