"""The reference profile of a deployed model: what its training month looked like, and how far an unchanged window
of any size may stray from it.

Computed once per deployed model, stored as JSON (DuckDB table `reference_profile`, keyed by model tag), read by
the batch and the online monitoring instead of the reference rows:
- per feature (`taxi_assets.core.drift_scores.PROFILED`): cell counts per (day type, hour) slot, on quantile bins
  for numerical features and per category for zones, with bin representatives and the standard deviation;
- the reference's rides and hours per slot (the time-aware windows);
- thresholds per window size and kind (spread or consecutive), for the online and the batch verdicts, calibrated
  on windows of days the compared description never saw, and the outlier-share thresholds
  (`taxi_assets.core.calibration`, which builds the profile);
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
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from taxi_assets.core import drift
from taxi_assets.core.drift_scores import (
    CATEGORICAL,
    NUMERIC_BINS,
    NUMERICAL,
    PROFILED,
    TIME,
    ReferenceArrays,
    TimeReference,
    clean,
    feature_reference,
)
from taxi_assets.core.model import TARGET
from taxi_assets.core.timeslots import SLOTS, day_slot_hours, slot_of
from taxi_assets.core.warehouse import REFERENCE_PROFILE_DDL

PROFILE_VERSION = 2
# Plausible-range quantile for the outlier counts, and the duration beyond which a zero-distance ride is suspect.
OUTLIER_QUANTILE = 0.999
# The outlier-share alarm: a window's share of rides flagged by any outlier rule, against the (1 - OUTLIER_ALPHA)
# quantile of that share over held-out windows of its size and kind.
OUTLIERS = "outlier_share"
OUTLIER_ALPHA = 0.002
LONG_DURATION_QUANTILE = 0.9


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


def rmse_bound(profile: Mapping[str, Any], rows: float, kind: str) -> float:
    """The RMSE an unchanged window of `rows` feedback rows of kind `kind` (spread or consecutive; see
    `drift_scores.window_kind`) stays below with probability 1 - RMSE_ALPHA."""
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
