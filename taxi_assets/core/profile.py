"""The reference profile of a deployed model: what its training month looked like, and how far an unchanged window
of any size may stray from it.

Computed once per deployed model (`taxi_assets.core.calibration.build_profile`), a `ReferenceProfile`; stored as
JSON (DuckDB table `reference_profile`, keyed by model tag), read by the batch and the online monitoring instead of
the reference rows:
- per feature (`taxi_assets.core.drift_scores.PROFILED`): cell counts per (day type, hour) slot, on quantile bins
  for numerical features and per category for zones, with bin representatives and the standard deviation;
- the reference's rides and hours per slot (the time-aware windows);
- thresholds per window size and kind (spread or consecutive), for the online and the batch verdicts, calibrated
  on windows of days the compared description never saw, and the outlier-share thresholds (`Thresholds`);
- effect floors per feature: ordinary month-to-month change, which a window must exceed to matter, and the
  typical effect of an unchanged window of held-out days;
- the validation residuals (the month after training, out of sample): RMSE, quantiles and the RMSE bound per
  window size and kind, from windows set against days they never saw (`Residuals`, `RmseBounds`);
- plausible ranges for the outlier counts: the reference's 99.9th percentiles of distance and implied speed
  (`OutlierLimits`);
- per slot, the mean log distance of the training and validation months' rides (`distance_slot_means`, what the
  distance CUSUM of a consecutive window is set against: `online.distance_cusum`).

Pure: numpy and pandas only; `save`/`load` take a DuckDB connection.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from taxi_assets.core.drift_scores import (
    CATEGORICAL,
    NUMERIC_BINS,
    NUMERICAL,
    PROFILED,
    SLOT_SHRINKAGE,
    TIME,
    ReferenceArrays,
    TimeReference,
    clean,
    feature_reference,
)
from taxi_assets.core.model import TARGET
from taxi_assets.core.timeslots import SLOTS, day_slot_hours, slot_of
from taxi_assets.core.tlc import MAX_DURATION_MINUTES, MIN_DURATION_MINUTES
from taxi_assets.core.warehouse import REFERENCE_PROFILE_DDL

if TYPE_CHECKING:
    import pandas as pd

PROFILE_VERSION = 2
# Plausible-range quantile for the outlier counts, and the duration beyond which a zero-distance ride is suspect.
OUTLIER_QUANTILE = 0.999
# The outlier-share alarm: a window's share of rides flagged by any outlier rule, against the (1 - OUTLIER_ALPHA)
# quantile of that share over held-out windows of its size and kind.
OUTLIERS = "outlier_share"
OUTLIER_ALPHA = 0.002
LONG_DURATION_QUANTILE = 0.9
OUTLIER_RULES = ("distance_above_p999", "speed_above_p999", "zero_distance_long_ride")
# The least distance `log_distances` takes, in miles: a tenth of a mile, a block or two.
MIN_LOG_MILES = 0.1


def interpolate_threshold(sizes: list[int], thresholds: list[float], n: float) -> float:
    """Threshold at window size `n`, linear in 1/sqrt(n) between calibrated sizes, constant beyond them."""
    x = 1 / np.sqrt(np.asarray(sizes, dtype="float64"))
    order = np.argsort(x)
    return float(np.interp(1 / np.sqrt(max(n, 1.0)), x[order], np.asarray(thresholds, dtype="float64")[order]))


# ---- the typed profile; field names and order are the stored JSON's keys (`ReferenceProfile.to_dict`) ----


@dataclass(frozen=True)
class OutlierLimits:
    """Plausible ranges from the reference's rides (odometer glitches beyond MAX_TRIP_MILES left out), and the
    share of the reference's rides each rule in OUTLIER_RULES (and any of them) flags."""

    max_distance: float
    max_speed_mph: float
    long_duration: float
    reference_shares: dict[str, float]

    def ranges(self) -> dict[str, float]:
        """The plausible ranges alone."""
        return {
            "max_distance": self.max_distance,
            "max_speed_mph": self.max_speed_mph,
            "long_duration": self.long_duration,
        }

    def flags(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One boolean column per rule in OUTLIER_RULES (rules on the duration are False where it is unknown)."""
        import pandas as pd

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
                "distance_above_p999": distance > self.max_distance,
                "speed_above_p999": np.isfinite(speed) & (speed > self.max_speed_mph),
                "zero_distance_long_ride": (distance == 0) & (duration > self.long_duration),
            },
            index=frame.index,
        )

    def shares(self, frame: pd.DataFrame) -> dict[str, float]:
        """Share of rides flagged by each rule and by any of them."""
        flags = self.flags(frame)
        if flags.empty:
            return {**dict.fromkeys(OUTLIER_RULES, 0.0), "any": 0.0}
        return {**{rule: float(flags[rule].mean()) for rule in OUTLIER_RULES}, "any": float(flags.any(axis=1).mean())}


@dataclass(frozen=True)
class Slots:
    """The reference's rides per (day type, hour) slot, and the hours of each slot its pickups span."""

    counts: list[int]
    hours: list[float]


@dataclass(frozen=True)
class Description:
    """The uncalibrated part of a profile (`describe`): per-feature cell counts per slot (`features`, the specs
    `drift_scores.feature_reference` reads), the slots' rides and hours, and the outlier limits when the described
    rides had durations."""

    version: int
    rows: int
    slots: Slots
    features: dict[str, dict[str, Any]]
    outliers: OutlierLimits | None

    def arrays(self) -> ReferenceArrays:
        """The description as the arrays the drift tests use."""
        features = {name: feature_reference(name, spec) for name, spec in self.features.items() if spec["kind"] != TIME}
        return ReferenceArrays(features, TimeReference.from_slots(self.slots.counts, self.slots.hours))


@dataclass(frozen=True)
class Thresholds:
    """The calibration (`calibration.calibrate`): per verdict set (online, batch), window kind and feature, the
    threshold at each calibrated window size (`sets`), with the false-alarm budgets they were calibrated for
    (`alphas`) and the held-out windows each size had; the outlier-share thresholds per kind; the typical effect of
    an unchanged window per kind, feature and size (`day_effects`)."""

    sizes: list[int]
    windows: dict[str, int]
    block_days: int
    seed: int
    alphas: dict[str, dict[str, float]]
    sets: dict[str, dict[str, dict[str, list[float]]]]
    outlier_share: dict[str, list[float]]
    day_effects: dict[str, dict[str, list[float]]]


@dataclass(frozen=True)
class RmseBounds:
    """Per window kind, the RMSE an unchanged window stays below at each calibrated size (`calibration.rmse_bounds`)."""

    sizes: list[int]
    bounds: dict[str, list[float]]
    alpha: float
    resampled: str


@dataclass(frozen=True)
class SlowdownBounds:
    """The mean `log_ratios` an unchanged spread window stays below at each calibrated size
    (`calibration.slowdown_bounds`)."""

    sizes: list[int]
    bounds: list[float]
    alpha: float


@dataclass(frozen=True)
class Residuals:
    """The validation month's residuals (prediction minus duration), out of sample, the mean of their `log_ratios`
    and its bound for spread windows (both None in a profile stored before they were kept: the slowdown CUSUM and
    the spread windows' slowdown bound need them)."""

    rows: int
    rmse: float
    mean_error: float
    quantiles: dict[str, float]
    rmse_bound: RmseBounds
    mean_log_ratio: float | None = None
    slowdown_bound: SlowdownBounds | None = None


def log_ratios(prediction: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Log of each actual duration over its prediction, both clipped to the durations the model is trained on (a
    feedback of 0 minutes or a prediction near 0 would otherwise weigh without bound)."""
    bounds = (MIN_DURATION_MINUTES, MAX_DURATION_MINUTES)
    return np.log(np.clip(actual, *bounds) / np.clip(prediction, *bounds))


def log_distances(distance: np.ndarray) -> np.ndarray:
    """Log of each trip distance, at least MIN_LOG_MILES (a 0-mile ride would otherwise weigh without bound);
    impossible ones (`drift_scores.clean`: beyond MAX_TRIP_MILES, negative) NaN."""
    return np.log(np.maximum(clean("trip_distance", np.asarray(distance, dtype="float64")), MIN_LOG_MILES))


def slot_log_distance(frame: pd.DataFrame) -> list[float]:
    """Per (day type, hour) slot, the mean `log_distances` of `frame`'s rides, shrunk towards the whole frame's by
    SLOT_SHRINKAGE rides as the drift tests' slots are: a chunk of a thousand consecutive rides is half a day, and
    a night's rides are longer than a morning's."""
    values = log_distances(frame["trip_distance"].to_numpy("float64"))
    known = np.isfinite(values)
    slots = slot_of(frame["pickup_datetime"].to_numpy("datetime64[ns]"))[known]
    values = values[known]
    total, count = np.bincount(slots, values, SLOTS), np.bincount(slots, minlength=SLOTS)
    return ((total + SLOT_SHRINKAGE * values.mean()) / (count + SLOT_SHRINKAGE)).tolist()


@dataclass(frozen=True)
class ReferenceProfile(Description):
    """A deployed model's profile: its training month described and calibrated (`calibration.build_profile`)."""

    # A profile's reference always has durations, so it always has outlier limits (the field keeps its place).
    outliers: OutlierLimits
    model_tag: str
    reference_month: str
    validation_month: str
    thresholds: Thresholds
    floors: dict[str, float]
    residuals: Residuals
    # `slot_log_distance` of the training and validation months' rides; None in a profile stored before it was kept
    # (its consecutive windows then have no distance CUSUM).
    distance_slot_means: list[float] | None = None

    def threshold(self, verdict_set: str, kind: str, feature: str, rows: float) -> float:
        """The calibrated threshold of `feature` in `verdict_set` (online or batch) for a window of `rows` rows of
        kind `kind` (`spread` or `consecutive`)."""
        return interpolate_threshold(self.thresholds.sizes, self.thresholds.sets[verdict_set][kind][feature], rows)

    def effect_floor(self, kind: str, feature: str, rows: float) -> float:
        """The effect a window of `rows` rides of kind `kind` must reach to matter: the floor for `feature`
        (ordinary month-to-month change) on top of the typical effect of an unchanged window of that size and kind
        (the character of its own days), added in squares as independent variations are."""
        day = interpolate_threshold(self.thresholds.sizes, self.thresholds.day_effects[kind][feature], rows)
        return float(np.hypot(self.floors[feature], day))

    def rmse_bound(self, rows: float, kind: str) -> float:
        """The RMSE an unchanged window of `rows` feedback rows of kind `kind` (spread or consecutive; see
        `drift_scores.window_kind`) stays below with probability 1 - RMSE_ALPHA."""
        table = self.residuals.rmse_bound
        return interpolate_threshold(table.sizes, table.bounds[kind], rows)

    def slowdown_bound(self, rows: float) -> float | None:
        """The mean log ratio of actual to predicted duration an unchanged spread window of `rows` feedback rows
        stays below with probability 1 - its alpha; None for a profile without the bound."""
        table = self.residuals.slowdown_bound
        return None if table is None else interpolate_threshold(table.sizes, table.bounds, rows)

    def distance_deviations(self, distance: np.ndarray, pickup: np.ndarray) -> np.ndarray | None:
        """Each ride's `log_distances` less its slot's mean in the profile (`distance_slot_means`), NaN for a ride
        without a plausible distance; None for a profile without slot means."""
        if self.distance_slot_means is None:
            return None
        slots = slot_of(np.asarray(pickup, dtype="datetime64[ns]"))
        return log_distances(distance) - np.asarray(self.distance_slot_means)[slots]

    def outlier_threshold(self, rows: float, kind: str) -> float:
        """The share of outlier rides an unchanged window of `rows` rides of kind `kind` stays below with
        probability 1 - OUTLIER_ALPHA."""
        return interpolate_threshold(self.thresholds.sizes, self.thresholds.outlier_share[kind], rows)

    def to_dict(self) -> dict[str, Any]:
        """The profile as the JSON-ready dict stored since PROFILE_VERSION 2: the model's names first, then the
        description and the calibration (the order the inherited fields would otherwise change)."""
        return {
            "model_tag": self.model_tag,
            "reference_month": self.reference_month,
            "validation_month": self.validation_month,
            **dataclasses.asdict(self),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        """The profile of a dict in `to_dict`'s shape (a stored profile); a missing or unknown key raises."""
        residuals = {**data["residuals"], "rmse_bound": RmseBounds(**data["residuals"]["rmse_bound"])}
        # A profile stored before the slowdown bound existed has no such key (or a null one): it stays None.
        if residuals.get("slowdown_bound"):
            residuals["slowdown_bound"] = SlowdownBounds(**residuals["slowdown_bound"])
        return cls(
            **{
                **data,
                "slots": Slots(**data["slots"]),
                "outliers": OutlierLimits(**data["outliers"]),
                "thresholds": Thresholds(**data["thresholds"]),
                "residuals": Residuals(**residuals),
            }
        )


# ---- description: the reference's rides binned per slot ----


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
    import pandas as pd

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


def _outlier_limits(frame: pd.DataFrame) -> OutlierLimits:
    """Plausible ranges from the reference's rides, odometer glitches (beyond MAX_TRIP_MILES) left out, and the
    share of the reference's rides outside them."""
    distance = clean("trip_distance", frame["trip_distance"].to_numpy("float64"))
    duration = frame[TARGET].to_numpy("float64")
    speed = distance / (duration / 60)
    limits = OutlierLimits(
        max_distance=float(np.nanquantile(distance, OUTLIER_QUANTILE)),
        max_speed_mph=float(np.nanquantile(speed[np.isfinite(speed)], OUTLIER_QUANTILE)),
        long_duration=float(np.nanquantile(duration, LONG_DURATION_QUANTILE)),
        reference_shares={},
    )
    return dataclasses.replace(limits, reference_shares=limits.shares(frame))


def describe(reference: pd.DataFrame, features: Mapping[str, str] = PROFILED) -> Description:
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
    return Description(
        version=PROFILE_VERSION,
        rows=len(frame),
        slots=Slots(
            counts=np.bincount(slots, minlength=SLOTS).astype(int).tolist(),
            hours=day_slot_hours(pickup).tolist(),
        ),
        features=described,
        outliers=_outlier_limits(frame) if TARGET in frame else None,
    )


# ---- storage ----


def save(conn: duckdb.DuckDBPyConnection, profile: ReferenceProfile) -> None:
    """Store `profile` under its model tag, replacing that tag's previous profile in one transaction."""
    conn.execute(REFERENCE_PROFILE_DDL)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute("DELETE FROM reference_profile WHERE model_tag = $tag", {"tag": profile.model_tag})
        conn.execute(
            "INSERT INTO reference_profile VALUES ($tag, $month, $validation, now(), $profile)",
            {
                "tag": profile.model_tag,
                "month": profile.reference_month,
                "validation": profile.validation_month,
                "profile": json.dumps(profile.to_dict()),
            },
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def load(conn: duckdb.DuckDBPyConnection, model_tag: str) -> ReferenceProfile | None:
    """The stored profile of `model_tag`, or None."""
    row = _stored(conn, model_tag, "profile")
    return ReferenceProfile.from_dict(json.loads(row[0])) if row else None


def version(conn: duckdb.DuckDBPyConnection, model_tag: str) -> int | None:
    """A fingerprint of the stored profile of `model_tag` (a hash of its JSON), or None without one."""
    row = _stored(conn, model_tag, "hash(profile)")
    return int(row[0]) if row else None


def _stored(conn: duckdb.DuckDBPyConnection, model_tag: str, expression: str) -> tuple | None:
    if not conn.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'reference_profile'").fetchall():
        return None
    return conn.execute(
        f"SELECT {expression} FROM reference_profile WHERE model_tag = $tag", {"tag": model_tag}
    ).fetchone()
