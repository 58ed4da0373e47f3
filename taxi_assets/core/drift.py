"""Drift verdicts that mean something: a month or a window of rides against the deployed model's reference profile,
judged on the statistics of `taxi_assets.core.drift_scores`.

Verdicts. Each feature's statistic is compared with the threshold calibrated for the window's kind and size (the profile
holds a table, `ReferenceProfile.threshold`; sizes in between are interpolated in 1/sqrt(n)): the (1 - alpha / k)
quantile of the statistic over windows of days the compared description never saw (`calibration.calibrate`), for a
dataset budget `DATASET_ALPHA` split over the k features of the verdict. A window's feature also needs an effect beyond
its floor (`ReferenceProfile.effect_floor`: ordinary month-to-month change on top of what an unchanged window of
held-out days shows): a significant difference is not yet one that matters. A window under MIN_WINDOW_ROWS rides is
insufficient data. The dataset drifted when any feature drifted; an alarm needs the window before, with no ride in
common, to agree (`online.confirmed`). Months (tens of thousands of rides) make every statistic significant, so a month
also needs an effect size of at least `BATCH_MIN_EFFECT` to count as drifted: ordinary months differ from the month
before by KS distances up to 0.033 and Jensen-Shannon distances up to 0.053 (zones) and 0.041 (hours), while the
2022/2023 months differ from 2021-01 by at least 0.065, 0.22 and 0.11 (bench/bench_drift_calibration.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from taxi_assets.core.drift_scores import (
    CATEGORICAL,
    NUMERICAL,
    TIME,
    ReferenceArrays,
    Rides,
    Scores,
    encode,
    feature_scores,
    window_kind,
)
from taxi_assets.core.profile import ReferenceProfile

if TYPE_CHECKING:
    import pandas as pd

# ---- Settings (documented defaults; the profile records the values it was calibrated with) ----
# False-alarm budget of one evaluation's dataset verdict, split evenly (Bonferroni) over the features of the
# verdict. A user lives with a window evaluated every 1,000 rides and every hour, about 26 evaluations a day, and
# judges the alarms per day (at most 5% of ordinary days with any alarm): the budget of one evaluation is a share
# of the day's, spent once more by requiring the window before, with no ride in common, to agree (`online.confirmed`).
DATASET_ALPHA = 0.005
# False-alarm budget of the prediction-drift verdict and of the online RMSE bound, each on its own.
PREDICTION_ALPHA = 0.002
RMSE_ALPHA = 0.002
# Window sizes the thresholds and the RMSE bound are calibrated at.
CALIBRATION_SIZES = (100, 200, 500, 1000, 2000, 5000)
# A window of fewer rides is "insufficient data": too few for the smallest calibrated test, judged neither way.
MIN_WINDOW_ROWS = CALIBRATION_SIZES[0]
# The default size of the online `last_<n>` window, the largest calibrated size: a 10% longer trip distance is
# confirmed in 53-100% of its full windows of held-out weeks depending on the month (95.5-100% of 2023's), and, as
# deployed (the whole month's profile against the month after validation), in 77.5-100%, against 22-94% at 2,000
# rides (bench/bench_drift_calibration.py prints the sweep).
DEFAULT_WINDOW = 5000
# A window's verdict also needs an effect beyond ordinary change: the profile's floors are FLOOR_MARGIN times the
# largest effect between consecutive months in the warehouse (the model serves the month after its validation
# month, two months from its training month: up to 1.4x the one-month change on the real months), and at least
# ONLINE_MIN_EFFECT. Those minimums are measured on the ten real months (bench/bench_drift_calibration.py): the
# largest one-month change of a distance is a KS distance of 0.022; single days (a snowstorm, a holiday, an
# inauguration) move the pickup hours of a 5,000-ride window by Jensen-Shannon distances up to 0.07 and its zones
# up to 0.073 on held-out days, which is weather, not drift.
FLOOR_MARGIN = 1.5
ONLINE_MIN_EFFECT = {NUMERICAL: 0.025, CATEGORICAL: 0.08, TIME: 0.07}
# A month drifts only by an effect at least this large (the batch verdicts; measured on ordinary month pairs).
BATCH_MIN_EFFECT = {NUMERICAL: 0.05, CATEGORICAL: 0.1, TIME: 0.07}


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict on one feature of one window or month, with its statistic, threshold and effect sizes."""

    feature: str
    kind: str
    test: str
    statistic: float
    threshold: float
    effect_name: str
    effect: float
    rows: int
    drifted: bool
    wasserstein: float = 0.0
    shift: float = 0.0
    # The effect the change must reach to matter (ordinary month-to-month variation), and whether the window was
    # large enough to be judged at all: an insufficient window is neither drifted nor quiet.
    floor: float = 0.0
    sufficient: bool = True

    @property
    def score(self) -> float:
        """The statistic over its threshold: above 1 means drifted (for a month, with a large enough effect)."""
        return self.statistic / self.threshold if self.threshold > 0 else 0.0


@dataclass(frozen=True)
class DriftVerdict:
    """Every feature's verdict and the dataset's: drifted when any feature is beyond its corrected threshold."""

    features: tuple[FeatureDrift, ...]
    alpha: float

    @property
    def drifted_count(self) -> int:
        return sum(feature.drifted for feature in self.features)

    @property
    def share_drifted(self) -> float:
        return self.drifted_count / len(self.features) if self.features else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.drifted_count > 0

    @property
    def sufficient(self) -> bool:
        """False when the window is too small for any of its tests ("insufficient data", not "no drift")."""
        return any(feature.sufficient for feature in self.features)

    def feature(self, name: str) -> FeatureDrift:
        return next(feature for feature in self.features if feature.feature == name)


TEST_NAMES = {NUMERICAL: "ks", CATEGORICAL: "chisquare_pooled", TIME: "chisquare_slots"}
EFFECT_NAMES = {NUMERICAL: "ks_distance", CATEGORICAL: "jensenshannon", TIME: "jensenshannon"}


def judge(
    name: str,
    kind: str,
    scores: Scores,
    threshold: float,
    min_effect: float = 0.0,
    window: int = 0,
    min_rows: int = 1,
) -> FeatureDrift:
    """The verdict of window `window` of `scores`: significant (statistic beyond the threshold) and large enough to
    matter (effect at least `min_effect`); windows under `min_rows` rows are insufficient, not judged."""
    statistic, effect = float(scores.statistic[window]), float(scores.effect[window])
    rows = int(scores.rows[window])
    sufficient = bool(rows >= min_rows and scores.testable[window])
    return FeatureDrift(
        feature=name,
        kind=kind,
        test=TEST_NAMES[kind],
        statistic=statistic,
        threshold=threshold,
        effect_name=EFFECT_NAMES[kind],
        effect=effect,
        rows=rows,
        drifted=bool(sufficient and statistic > threshold and effect >= min_effect),
        wasserstein=float(scores.second_effect[window]) if kind == NUMERICAL else 0.0,
        shift=float(scores.shift[window]),
        floor=min_effect,
        sufficient=sufficient,
    )


def importance_ranking(
    verdict: DriftVerdict, importance: Mapping[str, float] | None
) -> list[tuple[FeatureDrift, float, float]]:
    """Drifted features, most important drift first: (feature, weight, priority = weight x score).

    The weight is the deployed model's permutation importance of the feature (pickup_hour also answers to
    pickup_datetime, the raw field the model derives it from), normalised to sum to 1 over the monitored features;
    a feature the model does not use weighs 0. Without importances every feature weighs the same.
    """
    names = [feature.feature for feature in verdict.features]
    if importance:
        aliases = {"pickup_hour": ("pickup_hour", "pickup_datetime")}
        raw = {name: max(float(importance.get(alias, 0.0)) for alias in aliases.get(name, (name,))) for name in names}
        raw = {name: max(value, 0.0) for name, value in raw.items()}
    else:
        raw = dict.fromkeys(names, 1.0)
    total = sum(raw.values()) or 1.0
    weights = {name: value / total for name, value in raw.items()}
    ranked = [
        (feature, weights[feature.feature], weights[feature.feature] * feature.score)
        for feature in verdict.features
        if feature.drifted
    ]
    return sorted(ranked, key=lambda item: -item[2])


def window_verdicts(
    profile: ReferenceProfile,
    reference: ReferenceArrays,
    rides: Rides,
    verdict_set: str,
    features: Mapping[str, str],
    rows: np.ndarray | None = None,
    *,
    month: bool = False,
) -> list[DriftVerdict]:
    """The verdict on each window (row numbers `rows` of `rides`, shape (windows, n); all rides when None) against
    `reference`, with the thresholds of `profile` for `verdict_set` and each window's kind and size. A
    window also needs an effect of at least the profile's floor (ordinary month-to-month change) and at least
    MIN_WINDOW_ROWS rides; a `month` needs effects of at least BATCH_MIN_EFFECT."""
    rows = np.arange(len(rides))[None, :] if rows is None else np.atleast_2d(rows)
    kinds = [window_kind(rides.hours[window]) for window in rows]
    per_feature = []
    for name, kind in features.items():
        scores = feature_scores(reference, rides, name, rows)
        per_feature.append(
            [
                judge(
                    name,
                    kind,
                    scores,
                    profile.threshold(verdict_set, kinds[window], name, float(scores.rows[window])),
                    BATCH_MIN_EFFECT[kind]
                    if month
                    else profile.effect_floor(kinds[window], name, float(scores.rows[window])),
                    window,
                    1 if month else MIN_WINDOW_ROWS,
                )
                for window in range(len(rows))
            ]
        )
    alphas = profile.thresholds.alphas[verdict_set]
    alpha = float(sum(alphas[name] for name in features))
    return [DriftVerdict(tuple(verdicts), alpha) for verdicts in zip(*per_feature, strict=True)]


def assess(
    profile: ReferenceProfile,
    reference: ReferenceArrays,
    frame: pd.DataFrame,
    verdict_set: str,
    features: Mapping[str, str],
    *,
    month: bool = False,
) -> DriftVerdict:
    """The verdict on `frame` (one window or one month, with `pickup_datetime` and the columns `features`)."""
    rides = encode(reference, frame, features)
    return window_verdicts(profile, reference, rides, verdict_set, features, month=month)[0]
