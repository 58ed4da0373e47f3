"""How far a window of rides is from a reference profile, per feature: the statistics the drift verdicts judge
(`taxi_assets.core.drift`) and their effect sizes.

Every figure is computed from binned counts against the profile (`taxi_assets.core.profile`), vectorised over many
windows at once, so the same code scores one live window, a whole month, and the thousands of held-out windows
that calibrate the thresholds.

Tests, per feature kind (the statistic is scaled so that its null distribution hardly depends on the window size):
- numerical (trip distance, fares, passengers, prediction, duration): Kolmogorov-Smirnov distance between the
  window's distribution and the reference's, on the reference's quantile bins, times sqrt(n). Effect sizes beside
  it: the KS distance itself (the largest change in the share of rides below some value) and the Wasserstein
  distance in reference standard deviations (Evidently's drift score).
- categorical (pickup and dropoff zone): Pearson chi-square with the zones expected fewer than `MIN_EXPECTED` times
  in the window pooled into one cell, as (chi2 - df) / sqrt(2 df). Effect size: Jensen-Shannon distance on the
  same pooled cells.
- time (pickup hour): the rides' (day type, hour) slots against the reference's rides per slot-hour over the
  hours the window covers; chi-square as for zones.

Time-aware windows. A window of consecutive rides covers part of a day, so comparing it with a whole-day reference
flags the hour (and the zones and distances, which follow the hour) on every unchanged day. The rule:
1. Slots: each ride falls in one of 96 (day type, hour of day) slots, in New York time (`timeslots`); day types
   are Monday-Thursday, Friday, Saturday, and Sunday or a US federal holiday (New York rides on Presidents' Day
   like on a Sunday).
2. The window's time span is the elapsed time between its first and last pickup (23 hours on a spring-forward
   day), the 0.2% earliest and latest and any stray pickup a day away from the rest left out, at any size.
3. Pickup hour: the reference's rides per slot-hour are laid over the hours the span covers (partial hours pro
   rata); the window's rides per slot are tested against that. A random window spans the month and meets the
   whole-day profile; a window of one afternoon meets that afternoon's profile.
4. Every other feature is compared with the reference re-weighted to the window's own slot mix: the expected
   distribution is sum over slots of (window's share of the slot) x (reference distribution in that slot), each
   slot shrunk towards the whole reference by `SLOT_SHRINKAGE` rides. A window of evening rides meets the reference's
   evening rides, on the window's day types in its proportions.
5. Window kinds: a window whose span is a week or more is `spread` (random rides, a month), a shorter one
   `consecutive`. A stretch of consecutive rides carries its day's weather and events, so consecutive windows get
   thresholds of their own, calibrated on consecutive windows.
What it cannot see: when every pickup of a consecutive stretch is shifted by the same hour, the stretch still looks
like a plausible stretch of hours (measured: flagged as often as an unchanged one). Spread windows catch that shift
(>= 90%); so would comparing pickups with the service's own clock, which the TLC months cannot calibrate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from taxi_assets.core.model import PREDICTION, TARGET
from taxi_assets.core.timeslots import SLOTS, epoch_hours, slot_hours, slot_of, time_span

if TYPE_CHECKING:
    import pandas as pd

NUMERICAL = "numerical"
CATEGORICAL = "categorical"
TIME = "time"

# Quantile bins per numerical feature (the KS distance is read at the bin edges: at most 1% of rides off).
NUMERIC_BINS = 100
# A zone expected fewer times than this in a window is pooled with the other rare zones for the chi-square.
MIN_EXPECTED = 5.0
# Each (day type, hour) slot's distributions are shrunk towards the whole reference by this many rides.
SLOT_SHRINKAGE = 50.0
# Window kinds, each with its own thresholds: rides spread over at least a week (random rides, a month) vary less
# than a stretch of consecutive rides, which carries the weather and events of its day.
SPREAD, CONSECUTIVE = "spread", "consecutive"
WINDOW_KINDS = (SPREAD, CONSECUTIVE)
SPREAD_HOURS = 7 * 24.0
# A green-taxi ride of at most 60 minutes cannot cover more miles than this; larger odometer values are glitches,
# treated as missing by the drift tests and counted as outliers.
MAX_TRIP_MILES = 100.0

# The features of the dataset verdicts. The online windows see what the service logs; months also have fares.
ONLINE_FEATURES: dict[str, str] = {
    "PULocationID": CATEGORICAL,
    "DOLocationID": CATEGORICAL,
    "trip_distance": NUMERICAL,
    "pickup_hour": TIME,
}
BATCH_FEATURES: dict[str, str] = {
    **ONLINE_FEATURES,
    "fare_amount": NUMERICAL,
    "total_amount": NUMERICAL,
    "passenger_count": NUMERICAL,
}
# Model output and actual duration: profiled like features, judged on their own.
OUTPUTS: dict[str, str] = {PREDICTION: NUMERICAL, TARGET: NUMERICAL}
PROFILED: dict[str, str] = {**BATCH_FEATURES, **OUTPUTS}


def clean(name: str, values: np.ndarray) -> np.ndarray:
    """Float values of a numerical feature with impossible ones as NaN."""
    values = np.asarray(values, dtype="float64")
    values = np.where(np.isfinite(values), values, np.nan)
    if name == "trip_distance":
        values = np.where(values <= MAX_TRIP_MILES, values, np.nan)
    return values


@dataclass(frozen=True)
class FeatureReference:
    """One feature of the profile as arrays: the coding of values into cells and the expected shares per slot."""

    name: str
    kind: str
    edges: np.ndarray  # numerical: inner quantile edges (cells = len + 1); categorical: the known category values
    support: np.ndarray  # numerical: a representative value per cell (for the Wasserstein distance)
    std: float
    conditional: np.ndarray  # (SLOTS, cells): expected shares given the slot, shrunk towards the whole reference

    @property
    def cells(self) -> int:
        return self.conditional.shape[1]

    def codes(self, values: np.ndarray) -> np.ndarray:
        """Cell of every value; -1 for a missing one."""
        import pandas as pd

        if self.kind == NUMERICAL:
            values = clean(self.name, values)
            codes = np.searchsorted(self.edges, values, side="right")
            return np.where(np.isnan(values), -1, codes)
        values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy("float64")
        index = np.searchsorted(self.edges, values)
        index = np.minimum(index, len(self.edges) - 1)
        known = self.edges[index] == values
        # Unknown categories share the last cell.
        return np.where(np.isnan(values), -1, np.where(known, index, len(self.edges)))


def feature_reference(name: str, spec: Mapping) -> FeatureReference:
    counts = np.asarray(spec["counts"], dtype="float64")
    overall = counts.sum(axis=0) / max(counts.sum(), 1.0)
    per_slot = counts.sum(axis=1, keepdims=True)
    conditional = (counts + SLOT_SHRINKAGE * overall) / (per_slot + SLOT_SHRINKAGE)
    return FeatureReference(
        name,
        spec["kind"],
        np.asarray(spec["edges"], dtype="float64"),
        np.asarray(spec.get("support", []), dtype="float64"),
        float(spec.get("std", 1.0)),
        conditional,
    )


def cell_counts(codes: np.ndarray, cells: int) -> np.ndarray:
    """(windows, cells) counts from (windows, rows) codes; negative codes (missing values) are not counted."""
    codes = np.atleast_2d(codes)
    windows = codes.shape[0]
    offset = np.arange(windows)[:, None] * cells + codes
    return np.bincount(offset[codes >= 0], minlength=windows * cells).reshape(windows, cells)


def _shares(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = counts.sum(axis=1)
    return counts / np.maximum(n, 1.0)[:, None], n


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon distance (base e, as SciPy's and Evidently's)."""
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum(axis=1)
    return np.sqrt(np.maximum((kl_p + kl_q) / 2, 0.0))


@dataclass(frozen=True)
class Scores:
    """Per-window figures of one feature: `statistic` is what the threshold judges, `effect` the size of the change.

    `ks` and `wasserstein` (numerical) or `js` (categorical, time) are effect sizes; `shift` is the signed
    Mann-Whitney deviation P(window > reference) - 1/2 of a numerical feature (0 for the others).
    """

    statistic: np.ndarray
    effect: np.ndarray
    shift: np.ndarray
    rows: np.ndarray
    second_effect: np.ndarray  # numerical: the Wasserstein distance in reference stds; else the total variation
    testable: np.ndarray  # False where the test has nothing to compare (no rows; every zone pooled into one cell)


# The mean KS distance of n rides drawn from the reference itself is about KS_NOISE / sqrt(n) (Kolmogorov).
KS_NOISE = 0.87


def debiased(distance: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """An effect size with the part sampling noise alone produces taken out (in squares): 0 for a window that
    differs from the reference by no more than chance."""
    return np.sqrt(np.maximum(distance**2 - noise, 0.0))


def numerical_scores(observed: np.ndarray, expected: np.ndarray, feature: FeatureReference) -> Scores:
    """KS (scaled by sqrt(n)), the Mann-Whitney shift and the normed Wasserstein distance, per window."""
    shares, n = _shares(observed)
    cdf_window, cdf_reference = np.cumsum(shares, axis=1), np.cumsum(expected, axis=1)
    gap = cdf_window[:, :-1] - cdf_reference[:, :-1]
    ks = np.abs(gap).max(axis=1) if gap.shape[1] else np.zeros(len(n))
    below = cdf_reference - expected
    shift = (shares * (below + expected / 2)).sum(axis=1) - 0.5
    steps = np.diff(feature.support)
    wasserstein = (np.abs(gap) * steps).sum(axis=1) / max(feature.std, 1e-3)
    return Scores(ks * np.sqrt(n), debiased(ks, KS_NOISE**2 / np.maximum(n, 1.0)), shift, n, wasserstein, n > 0)


def categorical_scores(observed: np.ndarray, expected: np.ndarray) -> Scores:
    """Chi-square with rare cells pooled, as (chi2 - df) / sqrt(2 df), and the Jensen-Shannon distance, per window."""
    shares, n = _shares(observed)
    expected_counts = expected * n[:, None]
    kept = expected_counts >= MIN_EXPECTED
    pooled_observed = np.where(kept, 0.0, observed).sum(axis=1)
    pooled_expected = np.where(kept, 0.0, expected_counts).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cells = np.where(kept, (observed - expected_counts) ** 2 / expected_counts, 0.0).sum(axis=1)
        pooled = np.where(pooled_expected > 0, (pooled_observed - pooled_expected) ** 2 / pooled_expected, 0.0)
    df = kept.sum(axis=1) + (pooled_expected > 0) - 1
    z = np.where(df > 0, (cells + pooled - df) / np.sqrt(2 * np.maximum(df, 1)), 0.0)
    # The effect sizes on the same pooled cells, so sampling noise over ~250 rare zones does not inflate them.
    pooled_shares = np.column_stack([np.where(kept, shares, 0.0), pooled_observed / np.maximum(n, 1.0)])
    pooled_reference = np.column_stack([np.where(kept, expected, 0.0), pooled_expected / np.maximum(n, 1.0)])
    # Sampling noise alone gives a Jensen-Shannon divergence of about df / (8 n): taken out, so that the effect of a
    # window of 500 rides and of a month mean the same thing and can meet the same floor.
    js = debiased(_jensen_shannon(pooled_shares, pooled_reference), np.maximum(df, 0) / (8 * np.maximum(n, 1.0)))
    total_variation = np.abs(pooled_shares - pooled_reference).sum(axis=1) / 2
    return Scores(z, js, np.zeros(len(n)), n, total_variation, df > 0)


@dataclass(frozen=True)
class TimeReference:
    """The reference's rides per slot-hour, from its rides per slot and the hours of each slot it spans."""

    rate: np.ndarray  # (SLOTS,)

    @classmethod
    def from_slots(cls, counts: Sequence[int], hours: Sequence[float]) -> TimeReference:
        """From the reference's rides per slot and the hours of each slot it spans."""
        counts = np.asarray(counts, dtype="float64")
        hours = np.asarray(hours, dtype="float64")
        rate = np.where(hours > 0, counts / np.maximum(hours, 1e-9), 0.0)
        # A slot the reference never saw gets the average rate, not zero (which no ride could match).
        return cls(np.where(hours > 0, rate, rate[hours > 0].mean() if (hours > 0).any() else 1.0))


# A window's slot coverage is laid out hour by hour: spans longer than this are capped to their last stretch of
# this length (more than a month of hours gives the same shares as the month itself).
MAX_SPAN_HOURS = 24 * 62


def time_scores(pickup_hours: np.ndarray, slots: np.ndarray, reference: TimeReference) -> Scores:
    """The pickup-slot test of each window (rows of `pickup_hours`, hours since the epoch, and of their `slots`)
    against the reference's rides per slot-hour laid over the window's own span."""
    pickup_hours, slots = np.atleast_2d(pickup_hours), np.atleast_2d(slots)
    observed = np.zeros((len(pickup_hours), SLOTS))
    expected = np.zeros((len(pickup_hours), SLOTS))
    for row, hours in enumerate(pickup_hours):
        start, end = time_span(hours)
        start = max(start, end - MAX_SPAN_HOURS)
        inside = (hours >= start) & (hours <= end)
        observed[row] = np.bincount(slots[row][inside], minlength=SLOTS)
        weights = slot_hours(start, end) * reference.rate
        expected[row] = weights / weights.sum() if weights.sum() > 0 else 1.0 / SLOTS
    return categorical_scores(observed, expected)


@dataclass(frozen=True)
class ReferenceArrays:
    """A profile as the arrays the tests need; built once per profile (`profile.Description.arrays`)."""

    features: dict[str, FeatureReference]
    time: TimeReference


def reweighted(slot_counts: np.ndarray, feature: FeatureReference) -> np.ndarray:
    """Expected cell shares of each window: the reference re-weighted to the window's (day type, hour) mix."""
    weights, _ = _shares(slot_counts)
    return weights @ feature.conditional


@dataclass(frozen=True)
class Rides:
    """Rides coded against a profile once, to be cut into any number of windows: cell codes per feature, slots and
    pickup times (hours since the epoch)."""

    codes: dict[str, np.ndarray]
    slots: np.ndarray
    hours: np.ndarray

    def __len__(self) -> int:
        return len(self.slots)

    def joint(self, name: str, cells: int) -> np.ndarray:
        """Code of each ride's (slot, cell) pair; -1 where the value is missing."""
        codes = self.codes[name]
        return np.where(codes >= 0, self.slots * cells + codes, -1)


def encode(reference: ReferenceArrays, frame: pd.DataFrame, names: Mapping[str, str] | list[str]) -> Rides:
    """Code the columns `names` of `frame` (with `pickup_datetime`) against the profile."""
    import pandas as pd

    pickup = pd.to_datetime(frame["pickup_datetime"]).to_numpy("datetime64[ns]")
    codes = {name: reference.features[name].codes(frame[name].to_numpy()) for name in names if PROFILED[name] != TIME}
    return Rides(codes, slot_of(pickup), epoch_hours(pickup))


def feature_scores(reference: ReferenceArrays, rides: Rides, name: str, rows: np.ndarray | None = None) -> Scores:
    """Scores of feature `name` for each window (row numbers `rows`, shape (windows, n)); all rides when None."""
    rows = np.arange(len(rides))[None, :] if rows is None else np.atleast_2d(rows)
    if PROFILED[name] == TIME:
        return time_scores(rides.hours[rows], rides.slots[rows], reference.time)
    feature = reference.features[name]
    # One gather and one count of (slot, cell) pairs; the slot mix and the cell counts are its margins.
    joint = rides.joint(name, feature.cells)[rows]
    counts = cell_counts(joint, SLOTS * feature.cells).reshape(len(rows), SLOTS, feature.cells)
    expected = reweighted(counts.sum(axis=2).astype("float64"), feature)
    observed = counts.sum(axis=1).astype("float64")
    if feature.kind == NUMERICAL:
        return numerical_scores(observed, expected, feature)
    return categorical_scores(observed, expected)


def window_kind(hours: np.ndarray) -> str:
    """`consecutive` for rides whose time span is shorter than SPREAD_HOURS, else `spread`."""
    start, end = time_span(np.asarray(hours, dtype="float64"))
    return CONSECUTIVE if end - start < SPREAD_HOURS else SPREAD
