"""The reference profile of a deployed model: what its training month looked like, and how far an unchanged window
of any size may stray from it.

Computed once per deployed model, stored as JSON (DuckDB table `reference_profile`, keyed by model tag), read by
the batch and the online monitoring instead of the reference rows:
- per feature (`taxi_assets.core.drift.PROFILED`): cell counts per (weekday/weekend, hour) slot, on quantile bins
  for numerical features and per category for zones, with bin representatives and the standard deviation;
- the reference's rides and hours per slot (the time-aware windows);
- thresholds per window size: the (1 - alpha) quantile of each feature's statistic over `CALIBRATION_WINDOWS`
  windows of the reference, random and consecutive (the larger of the two), for the online and the batch verdicts;
- the validation residuals (the month after training, out of sample): RMSE, quantiles and the RMSE bound per
  window size, the (1 - RMSE_ALPHA) quantile of the RMSE of resampled windows of residuals;
- plausible ranges for the outlier counts: the reference's 99.9th percentiles of distance and implied speed.

Pure: numpy and pandas only; `save`/`load` take a DuckDB connection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from taxi_assets.core import drift
from taxi_assets.core.drift import (
    BATCH_FEATURES,
    CALIBRATION_SIZES,
    CALIBRATION_WINDOWS,
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
    epoch_hours,
    feature_reference,
    slot_hours,
    slot_of,
    time_span,
)
from taxi_assets.core.model import PREDICTION, TARGET
from taxi_assets.core.warehouse import REFERENCE_PROFILE_DDL

PROFILE_VERSION = 1
RANDOM_SEED = 20220101
# Plausible-range quantile for the outlier counts, and the duration beyond which a zero-distance ride is suspect.
OUTLIER_QUANTILE = 0.999
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


# ---- calibration: the statistics of windows drawn from the reference itself ----


def _window_rows(rng: np.random.Generator, total: int, size: int, windows: int, kind: str) -> np.ndarray:
    """Row numbers of `windows` windows of `size` rows: random rows (with replacement) for `spread`, or consecutive
    rows starting at evenly spaced points, so that every stretch of the month is represented once."""
    if kind == CONSECUTIVE:
        starts = np.linspace(0, total - size, windows).astype("int64")
        return starts[:, None] + np.arange(size)
    return rng.integers(0, total, (windows, size))


def calibrate(
    reference: ReferenceArrays,
    frames: list[pd.DataFrame],
    sizes: tuple[int, ...] = CALIBRATION_SIZES,
    windows: int = CALIBRATION_WINDOWS,
    seed: int = RANDOM_SEED,
) -> dict[str, Any]:
    """Thresholds per verdict set, window kind, feature and window size: the (1 - alpha) quantile of the statistic
    over random windows (kind `spread`) and over consecutive windows (`frames` sorted by pickup), the largest over
    `frames` (the reference month and the month after it: ordinary month-to-month change is no alarm)."""
    rng = np.random.default_rng(seed)
    sizes = tuple(size for size in sizes if all(size <= len(frame) for frame in frames))
    thresholds: dict[str, Any] = {
        verdict_set: {kind: {name: [0.0] * len(sizes) for name in alphas} for kind in WINDOW_KINDS}
        for verdict_set, alphas in VERDICT_SETS.items()
    }
    for frame in frames:
        rides = drift.encode(reference, frame, PROFILED)
        for index, size in enumerate(sizes):
            for kind in WINDOW_KINDS:
                rows = _window_rows(rng, len(frame), size, windows, kind)
                for name in PROFILED:
                    statistic = drift.feature_scores(reference, rides, name, rows).statistic
                    for verdict_set, alphas in VERDICT_SETS.items():
                        if name in alphas:
                            table = thresholds[verdict_set][kind][name]
                            table[index] = max(table[index], float(np.quantile(statistic, 1 - alphas[name])))
    return {"sizes": list(sizes), "windows": windows, "seed": seed, "alphas": VERDICT_SETS, "sets": thresholds}


def rmse_bounds(
    errors: np.ndarray,
    sizes: tuple[int, ...] = CALIBRATION_SIZES,
    windows: int = CALIBRATION_WINDOWS,
    alpha: float = RMSE_ALPHA,
    seed: int = RANDOM_SEED,
) -> dict[str, Any]:
    """Per window kind and size, the (1 - alpha) quantile of the RMSE of windows of validation residuals
    (`errors` in pickup order): random ones for `spread`, consecutive ones for `consecutive`."""
    rng = np.random.default_rng(seed + 1)
    squared = np.asarray(errors, dtype="float64") ** 2
    sizes = tuple(size for size in sizes if size <= len(squared))
    bounds = {
        kind: [
            float(
                np.quantile(
                    np.sqrt(squared[_window_rows(rng, len(squared), size, windows, kind)].mean(axis=1)), 1 - alpha
                )
            )
            for size in sizes
        ]
        for kind in WINDOW_KINDS
    }
    return {"sizes": list(sizes), "bounds": bounds, "alpha": alpha, "windows": windows}


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
    start, end = time_span(epoch_hours(pickup))
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
            "hours": slot_hours(start, end).tolist(),
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
    sizes: tuple[int, ...] = CALIBRATION_SIZES,
    windows: int = CALIBRATION_WINDOWS,
    seed: int = RANDOM_SEED,
) -> dict[str, Any]:
    """The profile of a model, JSON-ready: its scored reference rides (pickup_datetime, the PROFILED columns)
    described, thresholds calibrated on windows of them and of the validation month (the same columns, scored by
    the same model), and the validation residuals."""
    if reference.empty:
        raise ValueError(f"the reference month {reference_month} has no rides")
    if validation.empty:
        raise ValueError(f"the validation month {validation_month} has no rides")
    profile = {
        "model_tag": model_tag,
        "reference_month": reference_month,
        "validation_month": validation_month,
        **describe(reference),
    }
    frames = [
        month.sort_values("pickup_datetime", kind="stable").reset_index(drop=True) for month in (reference, validation)
    ]
    profile["thresholds"] = calibrate(arrays(profile), frames, sizes, windows, seed)
    ordered = frames[1]
    errors = (ordered[PREDICTION] - ordered[TARGET]).to_numpy("float64")
    errors = errors[np.isfinite(errors)]
    profile["residuals"] = {
        "rows": len(errors),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mean_error": float(np.mean(errors)),
        "quantiles": {f"p{q:g}": float(np.quantile(errors, q / 100)) for q in (1, 5, 25, 50, 75, 95, 99)},
        "rmse_bound": rmse_bounds(errors, sizes, windows, seed=seed),
    }
    return profile


def rmse_bound(profile: Mapping[str, Any], rows: float, kind: str) -> float:
    """The RMSE an unchanged window of `rows` feedback rows of kind `kind` (spread or consecutive; see
    `drift.window_kind`) stays below with probability 1 - RMSE_ALPHA."""
    table = profile["residuals"]["rmse_bound"]
    return drift.interpolate_threshold(table["sizes"], table["bounds"][kind], rows)


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
