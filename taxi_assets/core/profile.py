"""The reference profile of a deployed model: what its training month looked like, and how far an unchanged window
of any size may stray from it.

Computed once per deployed model, stored as JSON (DuckDB table `reference_profile`, keyed by model tag), read by
the batch and the online monitoring instead of the reference rows:
- per feature (`taxi_assets.core.drift.PROFILED`): cell counts per (day type, hour) slot, on quantile bins
  for numerical features and per category for zones, with bin representatives and the standard deviation;
- the reference's rides and hours per slot (the time-aware windows);
- thresholds per window size and kind (spread or consecutive), for the online and the batch verdicts, calibrated
  on windows of days the compared description never saw (see "calibration" below), and the outlier-share
  thresholds;
- effect floors per feature: ordinary month-to-month change, which a window must exceed to matter, and the
  typical effect of an unchanged window of held-out days;
- the validation residuals (the month after training, out of sample): RMSE, quantiles and the RMSE bound per
  window size and kind, cross-fitted over blocks of days;
- plausible ranges for the outlier counts: the reference's 99.9th percentiles of distance and implied speed.

Pure: numpy and pandas only; `save`/`load` take a DuckDB connection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from taxi_assets.core import drift
from taxi_assets.core.drift import (
    BATCH_FEATURES,
    CALIBRATION_SIZES,
    CATEGORICAL,
    CONSECUTIVE,
    DATASET_ALPHA,
    NUMERIC_BINS,
    NUMERICAL,
    ONLINE_FEATURES,
    PREDICTION_ALPHA,
    PROFILED,
    RMSE_ALPHA,
    SLOTS,
    TIME,
    WINDOW_KINDS,
    ReferenceArrays,
    TimeReference,
    clean,
    feature_reference,
)
from taxi_assets.core.model import PREDICTION, TARGET
from taxi_assets.core.timeslots import day_slot_hours, slot_of
from taxi_assets.core.warehouse import REFERENCE_PROFILE_DDL

PROFILE_VERSION = 2
RANDOM_SEED = 20220101
# Plausible-range quantile for the outlier counts, and the duration beyond which a zero-distance ride is suspect.
OUTLIER_QUANTILE = 0.999
# The outlier-share alarm: a window's share of rides flagged by any outlier rule, against the (1 - OUTLIER_ALPHA)
# quantile of that share over held-out windows of its size and kind.
OUTLIERS = "outlier_share"
OUTLIER_ALPHA = 0.002
LONG_DURATION_QUANTILE = 0.9

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


def _numerical_spec(name: str, values: np.ndarray, slots: np.ndarray) -> dict[str, Any]:
    values = clean(name, values)
    present = values[~np.isnan(values)]
    edges = np.unique(np.quantile(present, np.arange(1, NUMERIC_BINS) / NUMERIC_BINS))
    codes = np.searchsorted(edges, values, side="right")
    cells = len(edges) + 1
    valid = ~np.isnan(values)
    sums = np.bincount(codes[valid], weights=values[valid], minlength=cells)
    totals = np.bincount(codes[valid], minlength=cells)
    # Each cell's mean value; an empty cell sits on its lower edge.
    lower = np.concatenate([[present.min()], edges])
    support = np.where(totals > 0, sums / np.maximum(totals, 1), lower)
    counts = np.zeros((SLOTS, cells))
    np.add.at(counts, (slots[valid], codes[valid]), 1)
    return {
        "kind": NUMERICAL,
        "edges": edges.tolist(),
        "support": support.tolist(),
        "std": float(np.std(present)),
        "mean": float(np.mean(present)),
        "quantiles": {f"p{q:g}": float(np.quantile(present, q / 100)) for q in (1, 5, 25, 50, 75, 95, 99)},
        "counts": counts.astype(int).tolist(),
        "missing": int((~valid).sum()),
    }


def _categorical_spec(values: np.ndarray, slots: np.ndarray) -> dict[str, Any]:
    values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy("float64")
    valid = ~np.isnan(values)
    categories = np.unique(values[valid])
    codes = np.searchsorted(categories, values[valid])
    counts = np.zeros((SLOTS, len(categories) + 1))
    np.add.at(counts, (slots[valid], codes), 1)
    return {
        "kind": CATEGORICAL,
        "edges": categories.tolist(),
        "counts": counts.astype(int).tolist(),
        "missing": int((~valid).sum()),
    }


def arrays(profile: Mapping[str, Any]) -> ReferenceArrays:
    """The profile as the arrays the drift tests use."""
    features = {
        name: feature_reference(name, spec) for name, spec in profile["features"].items() if spec["kind"] != TIME
    }
    return ReferenceArrays(features, TimeReference.from_profile(profile))


# ---- calibration: statistics of windows of days the statistics they are compared with never saw ----
#
# Rides of one day share its weather and events, so windows are drawn from whole days the compared description
# was not built from, and consecutive windows do not overlap (overlapping ones would let one day set a quantile):
# every month given (the training month, the validation month, earlier months) cross-fitted on its own: its days
# in blocks of BLOCK_DAYS, alternate blocks in two folds, windows of one fold against the description of the other,
# both ways round. That is sampling noise and day-to-day variation, and nothing else.
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


def _sources(frames: list[pd.DataFrame]) -> list[tuple[ReferenceArrays, pd.DataFrame]]:
    """(description, held-out rides) pairs: each month of `frames` cross-fitted over its blocks of days."""
    sources = []
    for frame in frames:
        # Alternate blocks among those present (a month given without some of its days still splits in two).
        _, rank = np.unique(day_blocks(frame["pickup_datetime"].to_numpy("datetime64[ns]")), return_inverse=True)
        for fold in (0, 1):
            held = rank % 2 == fold
            if held.all() or not held.any():
                continue
            part = describe(frame[~held].reset_index(drop=True), PROFILED)
            sources.append((arrays(part), frame[held].reset_index(drop=True)))
    return sources


def fitted_quantiles(
    sizes: tuple[int, ...], samples: list[np.ndarray], alpha: float, *, growing: bool = True
) -> list[float]:
    """The (1 - alpha) quantile of a normal per window size, whose mean and standard deviation are smooth in the
    size: each a quadratic in sqrt(size) fitted (weighted by the windows each size has) to the samples' means and
    standard deviations. Large sizes have few non-overlapping windows; the smaller sizes lend them strength."""
    root = np.sqrt(np.asarray(sizes, dtype="float64"))
    means = np.array([np.mean(values) for values in samples])
    stds = np.array([np.std(values, ddof=1) for values in samples])
    weights = np.sqrt([len(values) for values in samples]) / np.maximum(stds, 1e-6)
    degree = min(2, len(sizes) - 1)
    mean = np.polyval(np.polyfit(root, means, degree, w=weights), root)
    std = np.maximum(np.polyval(np.polyfit(root, stds, degree, w=weights), root), stds.min())
    quantiles = mean + NormalDist().inv_cdf(1 - alpha) * std
    # A drift statistic of an unchanged window of more rides strays at least as far (its days' own character adds
    # up): `growing` never gives a larger size a lower threshold. (An RMSE ratio shrinks with the size instead.)
    return (np.maximum.accumulate(quantiles) if growing else quantiles).tolist()


def calibrate(
    described: Mapping[str, Any],
    frames: list[pd.DataFrame],
    sizes: tuple[int, ...] = CALIBRATION_SIZES,
    seed: int = RANDOM_SEED,
) -> dict[str, Any]:
    """Thresholds per verdict set, window kind, feature and window size, and the outlier-share thresholds, from
    windows of held-out days (see above). `frames`: the training month, then the validation month and any earlier
    months, each sorted by pickup with the PROFILED columns."""
    rng = np.random.default_rng(seed)
    pooled: dict[tuple[str, int, str], list[np.ndarray]] = {}
    effects: dict[tuple[str, int, str], list[np.ndarray]] = {}
    for reference, frame in _sources(frames):
        rides = drift.encode(reference, frame, PROFILED)
        blocks = day_blocks(frame["pickup_datetime"].to_numpy("datetime64[ns]"))
        flagged = outlier_flags(frame, described).any(axis=1).to_numpy()
        for size in sizes:
            if size > len(frame):
                continue
            for kind in WINDOW_KINDS:
                rows = _windows(rng, blocks, size, kind)
                if not len(rows):
                    continue
                for name in PROFILED:
                    scores = drift.feature_scores(reference, rides, name, rows)
                    pooled.setdefault((kind, size, name), []).append(scores.statistic)
                    effects.setdefault((kind, size, name), []).append(scores.effect)
                pooled.setdefault((kind, size, OUTLIERS), []).append(flagged[rows].mean(axis=1))
    counts = {
        size: min(sum(len(v) for v in pooled.get((kind, size, TARGET), [])) for kind in WINDOW_KINDS) for size in sizes
    }
    sizes = tuple(size for size in sizes if counts[size] >= MIN_CALIBRATION_WINDOWS)
    if not sizes:
        raise ValueError("too few rides to calibrate a window of the smallest size on held-out days")

    def table(kind: str, name: str, alpha: float) -> list[float]:
        return fitted_quantiles(sizes, [np.concatenate(pooled[(kind, size, name)]) for size in sizes], alpha)

    return {
        "sizes": list(sizes),
        "windows": {str(size): counts[size] for size in sizes},
        "block_days": BLOCK_DAYS,
        "seed": seed,
        "alphas": VERDICT_SETS,
        "sets": {
            verdict_set: {
                kind: {name: table(kind, name, alpha) for name, alpha in alphas.items()} for kind in WINDOW_KINDS
            }
            for verdict_set, alphas in VERDICT_SETS.items()
        },
        OUTLIERS: {kind: table(kind, OUTLIERS, OUTLIER_ALPHA) for kind in WINDOW_KINDS},
        # The typical effect of an unchanged window of held-out days (its days' own character): the floors add
        # the month-to-month change on top of it (`drift.effect_floor`).
        "day_effects": {
            kind: {
                name: [float(np.median(np.concatenate(effects[(kind, size, name)]))) for size in sizes]
                for name in PROFILED
            }
            for kind in WINDOW_KINDS
        },
    }


# Months before the training month the profile pools into its calibration and floors, where the warehouse has them.
EARLIER_MONTHS = 2


def earlier_months(month: str) -> list[str]:
    """The EARLIER_MONTHS months before `month` (YYYY-MM), the closest first."""
    period = pd.Period(month, freq="M")
    return [str(period - back) for back in range(1, EARLIER_MONTHS + 1)]


def effect_floors(months: list[pd.DataFrame]) -> dict[str, float]:
    """Per feature, the effect a window must reach to matter: FLOOR_MARGIN times the largest effect between two
    consecutive months of `months` (in calendar order), and at least ONLINE_MIN_EFFECT: a change that large
    happens from one month to the next without anything being wrong."""
    largest = dict.fromkeys(PROFILED, 0.0)
    for before, after in zip(months, months[1:], strict=False):
        reference = arrays(describe(before, PROFILED))
        rides = drift.encode(reference, after, PROFILED)
        for name in PROFILED:
            largest[name] = max(largest[name], float(drift.feature_scores(reference, rides, name).effect[0]))
    return {
        name: max(drift.ONLINE_MIN_EFFECT[PROFILED[name]], drift.FLOOR_MARGIN * effect)
        for name, effect in largest.items()
    }


def rmse_bounds(
    errors: np.ndarray,
    pickup: np.ndarray,
    sizes: tuple[int, ...] = CALIBRATION_SIZES,
    alpha: float = RMSE_ALPHA,
    seed: int = RANDOM_SEED,
) -> dict[str, Any]:
    """Per window kind and size, the RMSE an unchanged window of validation residuals (`errors` in pickup order,
    `pickup` their times) stays below with probability 1 - alpha. Errors go together by day and by week (weather,
    road works), so the bound is cross-fitted like the drift thresholds: the validation month's blocks of days in
    two folds; the RMSE of each window of one fold (non-overlapping stretches inside a block, or random rides) over
    the RMSE of the other fold; a normal fitted to those ratios (smooth in the size) gives the (1 - alpha) ratio,
    times the whole month's RMSE."""
    rng = np.random.default_rng(seed + 1)
    squared = np.asarray(errors, dtype="float64") ** 2
    blocks = day_blocks(np.asarray(pickup, dtype="datetime64[ns]"))
    _, rank = np.unique(blocks, return_inverse=True)
    ratios: dict[tuple[str, int], list[np.ndarray]] = {}
    for fold in (0, 1):
        held = rank % 2 == fold
        if held.all() or not held.any():
            continue
        base = np.sqrt(squared[~held].mean())
        for size in sizes:
            for kind in WINDOW_KINDS:
                rows = _windows(rng, blocks[held], size, kind) if size <= held.sum() else np.zeros((0, size), int)
                if len(rows):
                    ratio = np.sqrt(squared[held][rows].mean(axis=1)) / base
                    ratios.setdefault((kind, size), []).append(ratio)
    sizes = tuple(
        size
        for size in sizes
        if all(sum(map(len, ratios.get((kind, size), []))) >= MIN_CALIBRATION_WINDOWS for kind in WINDOW_KINDS)
    )
    if not sizes:
        raise ValueError("too few validation rides to bound the RMSE of a window of the smallest size")
    rmse = float(np.sqrt(squared.mean()))
    bounds = {
        kind: [
            rmse * ratio
            for ratio in fitted_quantiles(
                sizes, [np.concatenate(ratios[(kind, size)]) for size in sizes], alpha, growing=False
            )
        ]
        for kind in WINDOW_KINDS
    }
    return {"sizes": list(sizes), "bounds": bounds, "alpha": alpha, "resampled": "blocks of days, cross-fitted"}


def _outlier_limits(frame: pd.DataFrame) -> dict[str, float]:
    """Plausible ranges from the reference's rides, odometer glitches (beyond MAX_TRIP_MILES) left out."""
    distance = clean("trip_distance", frame["trip_distance"].to_numpy("float64"))
    duration = frame[TARGET].to_numpy("float64")
    speed = distance / (duration / 60)
    return {
        "max_distance": float(np.nanquantile(distance, OUTLIER_QUANTILE)),
        "max_speed_mph": float(np.nanquantile(speed[np.isfinite(speed)], OUTLIER_QUANTILE)),
        "long_duration": float(np.nanquantile(duration, LONG_DURATION_QUANTILE)),
    }


def describe(reference: pd.DataFrame, features: Mapping[str, str] = PROFILED) -> dict[str, Any]:
    """The uncalibrated part of a profile: per-feature cell counts per slot, the slots' rides and hours, and the
    outlier limits, of rides with `pickup_datetime` and the columns `features` (TARGET for the outlier limits)."""
    frame = reference.sort_values("pickup_datetime", kind="stable").reset_index(drop=True)
    pickup = frame["pickup_datetime"].to_numpy("datetime64[ns]")
    slots = slot_of(pickup)
    described: dict[str, Any] = {}
    for name, kind in features.items():
        if kind == TIME:
            described[name] = {"kind": TIME}
        elif kind == NUMERICAL:
            described[name] = _numerical_spec(name, frame[name].to_numpy(), slots)
        else:
            described[name] = _categorical_spec(frame[name].to_numpy(), slots)
    profile = {
        "version": PROFILE_VERSION,
        "rows": len(frame),
        "slots": {
            "counts": np.bincount(slots, minlength=SLOTS).astype(int).tolist(),
            "hours": day_slot_hours(pickup).tolist(),
        },
        "features": described,
    }
    if TARGET in frame:
        profile["outliers"] = _outlier_limits(frame)
        profile["outliers"]["reference_shares"] = outlier_shares(frame, profile)
    return profile


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
) -> dict[str, Any]:
    """The profile of a model, JSON-ready: its scored reference rides (pickup_datetime, the PROFILED columns)
    described; thresholds calibrated on held-out days of them, of the validation month and of `earlier` months
    (consecutive months before the training month, oldest first; the same columns, scored by the same model);
    effect floors from the change between consecutive months; the validation residuals' RMSE bounds."""
    if reference.empty:
        raise ValueError(f"the reference month {reference_month} has no rides")
    if validation.empty:
        raise ValueError(f"the validation month {validation_month} has no rides")
    ordered = [
        month.sort_values("pickup_datetime", kind="stable").reset_index(drop=True)
        for month in (*earlier, reference, validation)
    ]
    training, later = ordered[len(earlier)], ordered[len(earlier) + 1]
    profile = {
        "model_tag": model_tag,
        "reference_month": reference_month,
        "validation_month": validation_month,
        **describe(training),
    }
    profile["thresholds"] = calibrate(profile, [training, later, *ordered[: len(earlier)]], sizes, seed)
    profile["floors"] = effect_floors(ordered)
    errors = (later[PREDICTION] - later[TARGET]).to_numpy("float64")
    known = np.isfinite(errors)
    pickup = later["pickup_datetime"].to_numpy("datetime64[ns]")[known]
    errors = errors[known]
    profile["residuals"] = {
        "rows": len(errors),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mean_error": float(np.mean(errors)),
        "quantiles": {f"p{q:g}": float(np.quantile(errors, q / 100)) for q in (1, 5, 25, 50, 75, 95, 99)},
        "rmse_bound": rmse_bounds(errors, pickup, sizes, seed=seed),
    }
    return profile


def rmse_bound(profile: Mapping[str, Any], rows: float, kind: str) -> float:
    """The RMSE an unchanged window of `rows` feedback rows of kind `kind` (spread or consecutive; see
    `drift.window_kind`) stays below with probability 1 - RMSE_ALPHA."""
    table = profile["residuals"]["rmse_bound"]
    return drift.interpolate_threshold(table["sizes"], table["bounds"][kind], rows)


def outlier_threshold(profile: Mapping[str, Any], rows: float, kind: str) -> float:
    """The share of outlier rides an unchanged window of `rows` rides of kind `kind` stays below with probability
    1 - OUTLIER_ALPHA."""
    table = profile["thresholds"]
    return drift.interpolate_threshold(table["sizes"], table[OUTLIERS][kind], rows)


# ---- outliers: rides outside the reference's plausible ranges ----

OUTLIER_RULES = ("distance_above_p999", "speed_above_p999", "zero_distance_long_ride")


def outlier_flags(frame: pd.DataFrame, profile: Mapping[str, Any]) -> pd.DataFrame:
    """One boolean column per rule in OUTLIER_RULES (rules on the duration are False where it is unknown)."""
    limits = profile["outliers"]
    distance = pd.to_numeric(frame["trip_distance"], errors="coerce").to_numpy("float64")
    duration = (
        pd.to_numeric(frame[TARGET], errors="coerce").to_numpy("float64")
        if TARGET in frame
        else np.full(len(frame), np.nan)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = distance / (duration / 60)
    return pd.DataFrame(
        {
            "distance_above_p999": distance > limits["max_distance"],
            "speed_above_p999": np.isfinite(speed) & (speed > limits["max_speed_mph"]),
            "zero_distance_long_ride": (distance == 0) & (duration > limits["long_duration"]),
        },
        index=frame.index,
    )


def outlier_shares(frame: pd.DataFrame, profile: Mapping[str, Any]) -> dict[str, float]:
    """Share of rides flagged by each rule and by any of them."""
    flags = outlier_flags(frame, profile)
    if flags.empty:
        return {**dict.fromkeys(OUTLIER_RULES, 0.0), "any": 0.0}
    return {**{rule: float(flags[rule].mean()) for rule in OUTLIER_RULES}, "any": float(flags.any(axis=1).mean())}


# ---- storage ----


def save(conn: duckdb.DuckDBPyConnection, profile: Mapping[str, Any]) -> None:
    """Store `profile` under its model tag, replacing that tag's previous profile in one transaction."""
    conn.execute(REFERENCE_PROFILE_DDL)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute("DELETE FROM reference_profile WHERE model_tag = $tag", {"tag": profile["model_tag"]})
        conn.execute(
            "INSERT INTO reference_profile VALUES ($tag, $month, $validation, now(), $profile)",
            {
                "tag": profile["model_tag"],
                "month": profile["reference_month"],
                "validation": profile["validation_month"],
                "profile": json.dumps(profile),
            },
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def load(conn: duckdb.DuckDBPyConnection, model_tag: str) -> dict[str, Any] | None:
    """The stored profile of `model_tag`, or None."""
    if not conn.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'reference_profile'").fetchall():
        return None
    row = conn.execute("SELECT profile FROM reference_profile WHERE model_tag = $tag", {"tag": model_tag}).fetchone()
    return json.loads(row[0]) if row else None
