"""How a reference profile is built and calibrated: the description of the training month
(`taxi_assets.core.profile`), thresholds from windows of days the compared description never saw, effect floors
from ordinary month-to-month change, and the RMSE bound of the validation residuals from blocks of days.

Pure: numpy and pandas only.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from taxi_assets.core import drift, drift_scores
from taxi_assets.core.drift import CALIBRATION_SIZES, DATASET_ALPHA, PREDICTION_ALPHA, RMSE_ALPHA
from taxi_assets.core.drift_scores import (
    BATCH_FEATURES,
    CONSECUTIVE,
    ONLINE_FEATURES,
    PROFILED,
    SPREAD,
    SPREAD_HOURS,
    WINDOW_KINDS,
    ReferenceArrays,
)
from taxi_assets.core.model import PREDICTION, TARGET
from taxi_assets.core.profile import (
    OUTLIER_ALPHA,
    OUTLIERS,
    OutlierLimits,
    ReferenceProfile,
    Residuals,
    RmseBounds,
    SlowdownBounds,
    Thresholds,
    describe,
    interpolate_threshold,
    log_ratios,
    slot_log_distance,
)
from taxi_assets.core.timeslots import slot_of

if TYPE_CHECKING:
    import pandas as pd

RANDOM_SEED = 20220101
# The verdict sets the thresholds are calibrated for: their features and each feature's false-alarm budget.
VERDICT_SETS: dict[str, dict[str, float]] = {
    "online": {
        **{name: DATASET_ALPHA / len(ONLINE_FEATURES) for name in ONLINE_FEATURES},
        PREDICTION: PREDICTION_ALPHA,
    },
    "batch": {
        **{name: DATASET_ALPHA / len(BATCH_FEATURES) for name in BATCH_FEATURES},
        PREDICTION: PREDICTION_ALPHA,
        TARGET: PREDICTION_ALPHA,
    },
}


# ---- calibration: statistics of windows of days the statistics they are compared with never saw ----
#
# Rides of one day share its weather and events, so windows are drawn from whole days the compared description
# was not built from, and consecutive windows do not overlap (overlapping ones would let one day set a quantile):
# every month given (the training month, the validation month, earlier months) cross-fitted on its own: its days
# in blocks of BLOCK_DAYS, the windows of each block against the description of the month's other blocks. That is
# sampling noise and day-to-day variation, and nothing else. Each block against all the others, not one fold of
# alternate blocks against the other: the deployed description is a whole month, and one of half a month (two
# weeks) carries its weeks' own character and twice the sampling noise into every statistic. Measured by
# bench/bench_drift_calibration.py ("as deployed": the whole month's profile against the month after validation):
# with two folds the 2023-01 distance threshold at 5,000 rides was 3.65 against 2.91 now, and a 10% longer distance
# was confirmed in 73% of consecutive windows of 2023-03 against 100% now (at 2,000 rides 18% against 64%); the
# price, one more day of 31 with an alarm in 2021-03 (3.2%).
# (Spread windows' effects still come from two folds: a window of random rides of one block would span one week,
# where a deployed spread window spans more.)
# A spread window (random rides of a week or more) is judged for significance against sampling alone: its threshold
# comes from random rides of a month against a description of the month's other random rides (`_random_halves`).
# Which weeks it was drawn from is an effect, not noise, and the effect floor is what judges it (its day part is
# the typical effect of spread windows of held-out days, `day_effects`). Measured by
# bench/bench_drift_calibration.py on held-out days: with the threshold from windows of the other fold's weeks, a
# fold-to-fold offset went into it (2.3-3.6 for the distance at 5,000 rides against 1.8-2.7 from sampling), and a
# 10% longer distance went unseen in 37.5% of random 5,000-ride windows of 2021-01 (6.5-11% now, over three draws).
# Decision: ordinary month-to-month change (the validation month's change included) does not widen a threshold;
# it enters once, as the effect floors (`effect_floors`). Measured by bench/bench_drift_calibration.py: letting
# the validation month's windows into the thresholds set the distance threshold at 5,000 rides to 5.2 (2023-01)
# against 2.3-3.6 without, and a 10% longer distance went unseen in 81% of consecutive windows.
# Few non-overlapping windows of thousands of rides exist in a month (about 12 of 5,000), too few for a tail
# quantile, so a threshold is the (1 - alpha) quantile of a normal fitted to the pooled statistics (their mean and
# standard deviation, smooth in the window size), never the largest value of one bad day.

BLOCK_DAYS = 7
SPREAD_WINDOWS = 200
MIN_CALIBRATION_WINDOWS = 5


def day_blocks(pickup: np.ndarray) -> np.ndarray:
    """Block of BLOCK_DAYS days of the month of each (New York wall-clock) pickup: 0 for days 1-7, 1 for 8-14..."""
    import pandas as pd

    return (pd.DatetimeIndex(pickup).day.to_numpy() - 1) // BLOCK_DAYS


def _windows(rng: np.random.Generator, blocks: np.ndarray, size: int, kind: str) -> np.ndarray:
    """Row numbers of windows of `size` rides of a frame sorted by pickup whose rows fall in `blocks`: random rides
    for `spread`, non-overlapping stretches inside one block for `consecutive`."""
    if kind != CONSECUTIVE:
        return rng.integers(0, len(blocks), (SPREAD_WINDOWS, size))
    starts = []
    for block in np.unique(blocks):
        inside = np.flatnonzero(blocks == block)
        starts.append(inside[0] + np.arange(0, len(inside) - size + 1, size))
    starts = np.concatenate(starts) if starts else np.zeros(0, dtype="int64")
    return starts[:, None] + np.arange(size)


def _sources(frames: list[pd.DataFrame], folds: int | None) -> list[tuple[ReferenceArrays, pd.DataFrame]]:
    """(description, held-out rides) pairs: each month of `frames` cross-fitted over its blocks of days, the blocks
    dealt in turn into `folds` folds (None: one fold per block, each block against all the month's others)."""
    sources = []
    for frame in frames:
        # Ranks among the blocks present (a month given without some of its days still splits).
        _, rank = np.unique(day_blocks(frame["pickup_datetime"].to_numpy("datetime64[ns]")), return_inverse=True)
        fold_of_ride = rank if folds is None else rank % folds
        for fold in np.unique(fold_of_ride):
            held = fold_of_ride == fold
            if held.all():
                continue
            part = describe(frame[~held].reset_index(drop=True), PROFILED)
            sources.append((part.arrays(), frame[held].reset_index(drop=True)))
    return sources


def _random_halves(rng: np.random.Generator, frames: list[pd.DataFrame]) -> list[tuple[ReferenceArrays, pd.DataFrame]]:
    """(description, other rides) pairs: each month of `frames` split into two halves of random rides, each half
    described and set against the other, both ways round. Both halves cover the same days, so a window of one
    differs from the other's description by sampling alone."""
    sources = []
    for frame in frames:
        half = rng.permutation(len(frame)) < len(frame) // 2
        for described in (half, ~half):
            if described.all() or not described.any():
                continue
            part = describe(frame[described].reset_index(drop=True), PROFILED)
            sources.append((part.arrays(), frame[~described].reset_index(drop=True)))
    return sources


def fitted_quantiles(
    sizes: tuple[int, ...],
    samples: list[np.ndarray],
    alpha: float,
    *,
    growing: bool = True,
    extra_variance: float = 0.0,
) -> list[float]:
    """The (1 - alpha) quantile of a normal per window size, whose mean and standard deviation are smooth in the
    size: each a quadratic in sqrt(size) fitted (weighted by the windows each size has) to the samples' means and
    standard deviations, `extra_variance` (a variation the samples cannot show) added to the fitted variance.
    Large sizes have few non-overlapping windows; the smaller sizes lend them strength."""
    root = np.sqrt(np.asarray(sizes, dtype="float64"))
    means = np.array([np.mean(values) for values in samples])
    stds = np.array([np.std(values, ddof=1) for values in samples])
    weights = np.sqrt([len(values) for values in samples]) / np.maximum(stds, 1e-6)
    degree = min(2, len(sizes) - 1)
    mean = np.polyval(np.polyfit(root, means, degree, w=weights), root)
    std = np.maximum(np.polyval(np.polyfit(root, stds, degree, w=weights), root), stds.min())
    quantiles = mean + NormalDist().inv_cdf(1 - alpha) * np.sqrt(std**2 + extra_variance)
    # A drift statistic of an unchanged window of more rides strays at least as far (its days' own character adds
    # up): `growing` never gives a larger size a lower threshold. (An RMSE ratio shrinks with the size instead.)
    return (np.maximum.accumulate(quantiles) if growing else quantiles).tolist()


def calibrate(
    limits: OutlierLimits,
    frames: list[pd.DataFrame],
    sizes: tuple[int, ...] = CALIBRATION_SIZES,
    seed: int = RANDOM_SEED,
) -> Thresholds:
    """Thresholds per verdict set, window kind, feature and window size, and the outlier-share thresholds (rides
    outside the training month's `limits`), from windows of held-out days (see above). `frames`: the training
    month, then the validation month and any earlier months, each sorted by pickup with the PROFILED columns."""
    rng = np.random.default_rng(seed)
    pooled: dict[tuple[str, int, str], list[np.ndarray]] = {}
    effects: dict[tuple[str, int, str], list[np.ndarray]] = {}
    for kind, folds in ((SPREAD, 2), (CONSECUTIVE, None)):
        for reference, frame in _sources(frames, folds):
            rides = drift_scores.encode(reference, frame, PROFILED)
            blocks = day_blocks(frame["pickup_datetime"].to_numpy("datetime64[ns]"))
            flagged = limits.flags(frame).any(axis=1).to_numpy()
            for size in sizes:
                rows = _windows(rng, blocks, size, kind) if size <= len(frame) else ()
                if not len(rows):
                    continue
                for name in PROFILED:
                    scores = drift_scores.feature_scores(reference, rides, name, rows)
                    if kind == CONSECUTIVE:
                        pooled.setdefault((kind, size, name), []).append(scores.statistic[scores.testable])
                    effects.setdefault((kind, size, name), []).append(scores.effect)
                pooled.setdefault((kind, size, OUTLIERS), []).append(flagged[rows].mean(axis=1))
    for reference, frame in _random_halves(rng, frames):
        rides = drift_scores.encode(reference, frame, PROFILED)
        for size in sizes:
            if size > len(frame):
                continue
            rows = _windows(rng, np.zeros(len(frame)), size, SPREAD)
            for name in PROFILED:
                scores = drift_scores.feature_scores(reference, rides, name, rows)
                pooled.setdefault((SPREAD, size, name), []).append(scores.statistic[scores.testable])
    counts = {
        size: min(sum(len(v) for v in pooled.get((kind, size, TARGET), [])) for kind in WINDOW_KINDS) for size in sizes
    }
    sizes = tuple(size for size in sizes if counts[size] >= MIN_CALIBRATION_WINDOWS)
    if not sizes:
        raise ValueError("too few rides to calibrate a window of the smallest size on held-out days")

    def table(kind: str, name: str, alpha: float) -> list[float]:
        # Only windows the test can judge: one whose cells are all pooled is "insufficient data" to the verdict
        # (`drift.judge`), and its statistic of 0 (no spread at all) pinned the fit at the smallest sizes, which
        # bent the thresholds of the sizes above (2023-01: the pickup-hour threshold of random 100-ride windows came
        # out at 0.07, that of 1,000 rides 8-11% higher). Below its smallest testable size a feature's table stays
        # constant; no window there is judged.
        samples = {size: np.concatenate(pooled[(kind, size, name)]) for size in sizes}
        testable = [size for size in sizes if len(samples[size]) >= MIN_CALIBRATION_WINDOWS]
        if not testable:
            raise ValueError(f"no {kind} window of up to {sizes[-1]} rides can test {name} on held-out days")
        fitted = fitted_quantiles(tuple(testable), [samples[size] for size in testable], alpha)
        return [interpolate_threshold(testable, fitted, size) for size in sizes]

    return Thresholds(
        sizes=list(sizes),
        windows={str(size): counts[size] for size in sizes},
        block_days=BLOCK_DAYS,
        seed=seed,
        alphas=VERDICT_SETS,
        sets={
            verdict_set: {
                kind: {name: table(kind, name, alpha) for name, alpha in alphas.items()} for kind in WINDOW_KINDS
            }
            for verdict_set, alphas in VERDICT_SETS.items()
        },
        outlier_share={kind: table(kind, OUTLIERS, OUTLIER_ALPHA) for kind in WINDOW_KINDS},
        # The typical effect of an unchanged window of held-out days (its days' own character): the floors add
        # the month-to-month change on top of it (`ReferenceProfile.effect_floor`). The median, not a tail: measured
        # by bench/bench_drift_calibration.py, the 75th or 90th percentile of spread windows' effects cut the false
        # alarms of random 5,000-ride windows of 2022-03 against 2022-01's whole-month profile from 30% to 14% or
        # 5%, but a 10% longer distance in random held-out windows of 2021-01 was then caught in 83.5% or 67.5%
        # instead of 89% (goal 90%), and pickups an hour late in 2023-03's in 40% or 30.5% instead of 54%.
        day_effects={
            kind: {
                name: [float(np.median(np.concatenate(effects[(kind, size, name)]))) for size in sizes]
                for name in PROFILED
            }
            for kind in WINDOW_KINDS
        },
    )


# Months before the training month the profile pools into its calibration and floors, where the warehouse has them.
EARLIER_MONTHS = 2


def earlier_months(month: str) -> list[str]:
    """The EARLIER_MONTHS months before `month` (YYYY-MM), the closest first."""
    import pandas as pd

    period = pd.Period(month, freq="M")
    return [str(period - back) for back in range(1, EARLIER_MONTHS + 1)]


def effect_floors(months: list[pd.DataFrame]) -> dict[str, float]:
    """Per feature, the effect a window must reach to matter: FLOOR_MARGIN times the largest effect between two
    consecutive months of `months` (in calendar order), and at least ONLINE_MIN_EFFECT: a change that large
    happens from one month to the next without anything being wrong."""
    largest = dict.fromkeys(PROFILED, 0.0)
    for before, after in zip(months, months[1:], strict=False):
        reference = describe(before, PROFILED).arrays()
        rides = drift_scores.encode(reference, after, PROFILED)
        for name in PROFILED:
            largest[name] = max(largest[name], float(drift_scores.feature_scores(reference, rides, name).effect[0]))
    return {
        name: max(drift.ONLINE_MIN_EFFECT[PROFILED[name]], drift.FLOOR_MARGIN * effect)
        for name, effect in largest.items()
    }


def day_variance(squared: np.ndarray, pickup: np.ndarray) -> tuple[float, int]:
    """The between-day variance component of a day's log RMSE, and the days it was estimated from
    (`between_days`; the sampling of a day's log RMSE by the delta method: var(e^2) / (4 n mse^2))."""
    days, day, rides = np.unique(np.asarray(pickup, dtype="datetime64[D]"), return_inverse=True, return_counts=True)
    mse = np.bincount(day, weights=squared) / rides
    sampling = (np.bincount(day, weights=squared**2) / rides - mse**2) / (4 * rides * mse**2)
    full = (rides >= drift.MIN_WINDOW_ROWS) & (mse > 0)
    return between_days(days[full], 0.5 * np.log(mse[full]), sampling[full])


def between_days(days: np.ndarray, statistic: np.ndarray, sampling: np.ndarray) -> tuple[float, int]:
    """The between-day variance component of a daily `statistic` (one value per day of `days`, with its sampling
    variance from the day's own rides), and how many days it was estimated from (those with at least
    MIN_WINDOW_ROWS rides). Days of one type differ from another's by their traffic (a Sunday's errors are smaller
    than a Tuesday's), which a window spanning whole weeks, or set against a fold of whole weeks, averages out: each
    day is taken against the mean of its day type (`timeslots.slot_of`). One-way random effects by the method of
    moments: the variance of those deviations less the part the days' own rides' sampling explains."""
    types = slot_of(days.astype("datetime64[ns]")) // 24
    _, kind, per_type = np.unique(types, return_inverse=True, return_counts=True)
    deviation = statistic - (np.bincount(kind, weights=statistic) / per_type)[kind]
    freedom = len(days) - len(per_type)
    if freedom < 1:
        return 0.0, len(days)
    return max(0.0, float((deviation**2).sum() / freedom - sampling.mean())), len(days)


def spread_windows(rng: np.random.Generator, rides: int, size: int) -> np.ndarray:
    """SPREAD_WINDOWS random windows of `size` distinct rides of `rides`, as rows. Distinct: a ride drawn twice would
    be taken out of the rest twice, and the spread of a window's figure against the rest's overstated (by a fifth at
    5,000 of 30,000 rides)."""
    return np.stack([rng.choice(rides, size, replace=False) for _ in range(SPREAD_WINDOWS)])


def spread_day_variance(between: float, days: int) -> float:
    """What the days' variation adds to a spread window's figure set against the month's other rides: the
    between-day variance component `between` (`between_days`, from `days` days) over the days the window spans (at
    fewest those of SPREAD_HOURS, a week), and over the month's days it is set against."""
    return between * (24 / SPREAD_HOURS + 1 / days) if days else 0.0


def slowdown_bounds(
    ratios: np.ndarray,
    pickup: np.ndarray,
    sizes: tuple[int, ...] = CALIBRATION_SIZES,
    alpha: float = RMSE_ALPHA,
    seed: int = RANDOM_SEED,
) -> SlowdownBounds:
    """Per size, the mean log ratio (`profile.log_ratios` of the validation residuals, `pickup` their times) an
    unchanged spread window stays below with probability 1 - alpha, as `rmse_bounds` bounds a spread window's RMSE:
    random rides of the month against the month's rides outside them, the between-day variance of a day's mean
    (`between_days`) added over the days such a window spans (at fewest those of SPREAD_HOURS, a week). A
    consecutive window needs none: its slowdown is the CUSUM's (`online.slowdown_cusum`)."""
    rng = np.random.default_rng(seed + 2)
    ratios = np.asarray(ratios, dtype="float64")
    total, rides = ratios.sum(), len(ratios)
    sizes = tuple(size for size in sizes if size < rides)
    if not sizes:
        raise ValueError("too few validation rides to bound the mean log ratio of a window of the smallest size")
    differences = []
    for size in sizes:
        window = ratios[spread_windows(rng, rides, size)].sum(axis=1)
        differences.append(window / size - (total - window) / (rides - size))
    days, day, per_day = np.unique(np.asarray(pickup, dtype="datetime64[D]"), return_inverse=True, return_counts=True)
    mean = np.bincount(day, weights=ratios) / per_day
    sampling = (np.bincount(day, weights=ratios**2) / per_day - mean**2) / per_day
    full = per_day >= drift.MIN_WINDOW_ROWS
    extra = spread_day_variance(*between_days(days[full], mean[full], sampling[full]))
    excess = fitted_quantiles(sizes, differences, alpha, growing=False, extra_variance=extra)
    return SlowdownBounds(sizes=list(sizes), bounds=[float(ratios.mean() + e) for e in excess], alpha=alpha)


def rmse_bounds(
    errors: np.ndarray,
    pickup: np.ndarray,
    sizes: tuple[int, ...] = CALIBRATION_SIZES,
    alpha: float = RMSE_ALPHA,
    seed: int = RANDOM_SEED,
) -> RmseBounds:
    """Per window kind and size, the RMSE an unchanged window of validation residuals (`errors` in pickup order,
    `pickup` their times) stays below with probability 1 - alpha: the (1 - alpha) quantile of a normal fitted to the
    ratios of windows' RMSE to the RMSE of the month's rides outside them (smooth in the size), times the whole
    month's RMSE. Errors go together by day (weather, road works, events), so each window is set against days it
    never saw:
    - a consecutive window (non-overlapping stretches inside a block of days) against the month's other days: its
      ratios carry the day-to-day and week-to-week variation themselves;
    - a spread window (random rides of the month) against the month's rides outside it: its ratios carry the rides'
      sampling alone, and the variation of the days is added: the window's days (at fewest those of SPREAD_HOURS,
      a week) against all the month's, the between-day variance component (`day_variance`) over each's number.
    (Ratios to the other one of two folds of alternate weeks mixed one draw of the fold-to-fold offset into the
    spread: with two or three weeks per fold, one unusual week set the bound; bench/bench_drift_calibration.py,
    durations x1.10 in random 5,000-ride windows of held-out days: 13.5-56% detected before, 89-99.5% after.)"""
    rng = np.random.default_rng(seed + 1)
    squared = np.asarray(errors, dtype="float64") ** 2
    pickup = np.asarray(pickup, dtype="datetime64[ns]")
    blocks = day_blocks(pickup)
    _, day = np.unique(pickup.astype("datetime64[D]"), return_inverse=True)
    day_sums, day_rides = np.bincount(day, weights=squared), np.bincount(day)
    total, rides = squared.sum(), len(squared)
    ratios: dict[tuple[str, int], np.ndarray] = {}
    for size in sizes:
        for kind in WINDOW_KINDS:
            if size >= rides:
                rows = np.zeros((0, size), int)
            elif kind == CONSECUTIVE:
                rows = _windows(rng, blocks, size, kind)
            else:
                rows = spread_windows(rng, rides, size)
            window = squared[rows].sum(axis=1)
            if kind == CONSECUTIVE:
                # The days a stretch touches, whole: the rest of a day it covers shares that day's character.
                numbers = np.arange(len(day_rides))
                touched = (numbers >= day[rows[:, :1]]) & (numbers <= day[rows[:, -1:]])
                other, others = total - touched @ day_sums, rides - touched @ day_rides
            else:
                other, others = total - window, np.full(len(rows), rides - size)
            keep = others > 0
            ratios[(kind, size)] = np.sqrt(window[keep] / size) / np.sqrt(other[keep] / others[keep])
    # A kind's sizes with enough windows: a month's blocks hold few non-overlapping stretches of thousands of rides,
    # while random windows are drawn at every size; beyond a kind's largest such size its bound stays constant, as
    # `ReferenceProfile.rmse_bound` reads a table beyond its sizes.
    usable = {
        kind: tuple(size for size in sizes if len(ratios[(kind, size)]) >= MIN_CALIBRATION_WINDOWS)
        for kind in WINDOW_KINDS
    }
    if not all(usable.values()):
        raise ValueError("too few validation rides to bound the RMSE of a window of the smallest size")
    sizes = tuple(size for size in sizes if any(size in kind_sizes for kind_sizes in usable.values()))
    between, days = day_variance(squared, pickup)
    rmse = float(np.sqrt(squared.mean()))
    bounds = {}
    for kind, kind_sizes in usable.items():
        ratio = fitted_quantiles(
            kind_sizes,
            [ratios[(kind, size)] for size in kind_sizes],
            alpha,
            growing=False,
            extra_variance=spread_day_variance(between, days) if kind != CONSECUTIVE else 0.0,
        )
        bounds[kind] = [rmse * interpolate_threshold(list(kind_sizes), ratio, size) for size in sizes]
    return RmseBounds(
        sizes=list(sizes), bounds=bounds, alpha=alpha, resampled="windows against the other days, between-day variance"
    )


def build_profile(
    reference: pd.DataFrame,
    validation: pd.DataFrame,
    *,
    model_tag: str,
    reference_month: str,
    validation_month: str,
    earlier: list[pd.DataFrame] = (),
    sizes: tuple[int, ...] = CALIBRATION_SIZES,
    seed: int = RANDOM_SEED,
) -> ReferenceProfile:
    """The profile of a model: its scored reference rides (pickup_datetime, the PROFILED columns) described;
    thresholds calibrated on held-out days of them, of the validation month and of `earlier` months (consecutive
    months before the training month, oldest first; the same columns, scored by the same model); effect floors from
    the change between consecutive months; the validation residuals' RMSE bounds."""
    import pandas as pd

    if reference.empty:
        raise ValueError(f"the reference month {reference_month} has no rides")
    if validation.empty:
        raise ValueError(f"the validation month {validation_month} has no rides")
    ordered = [
        month.sort_values("pickup_datetime", kind="stable").reset_index(drop=True)
        for month in (*earlier, reference, validation)
    ]
    training, later = ordered[len(earlier)], ordered[len(earlier) + 1]
    described = describe(training)
    thresholds = calibrate(described.outliers, [training, later, *ordered[: len(earlier)]], sizes, seed)
    floors = effect_floors(ordered)
    errors = (later[PREDICTION] - later[TARGET]).to_numpy("float64")
    known = np.isfinite(errors)
    ratios = log_ratios(later[PREDICTION].to_numpy("float64")[known], later[TARGET].to_numpy("float64")[known])
    pickup = later["pickup_datetime"].to_numpy("datetime64[ns]")[known]
    errors = errors[known]
    return ReferenceProfile(
        **vars(described),
        model_tag=model_tag,
        reference_month=reference_month,
        validation_month=validation_month,
        thresholds=thresholds,
        floors=floors,
        residuals=Residuals(
            rows=len(errors),
            rmse=float(np.sqrt(np.mean(errors**2))),
            mean_error=float(np.mean(errors)),
            quantiles={f"p{q:g}": float(np.quantile(errors, q / 100)) for q in (1, 5, 25, 50, 75, 95, 99)},
            rmse_bound=rmse_bounds(errors, pickup, sizes, seed=seed),
            mean_log_ratio=float(ratios.mean()),
            slowdown_bound=slowdown_bounds(ratios, pickup, sizes, seed=seed),
        ),
        distance_slot_means=slot_log_distance(pd.concat([training, later], ignore_index=True)),
    )
