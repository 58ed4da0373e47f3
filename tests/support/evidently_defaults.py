"""Evidently 0.7's default drift tests, recomputed directly, and Evidently's default report: the comparison the
tests and the benchmarks make (the platform's own verdicts are the calibrated tests of `taxi_assets.core.drift`).

The statistics, their selection and their thresholds are Evidently 0.7's defaults
(`evidently.legacy.calculations.stattests`), so a figure computed here and the same figure in an Evidently report
agree on the same rows (tests/test_drift.py). `default_snapshot` is the report a bare Evidently script makes
(bench/bench_batch_monitoring.py's baseline); `extract_figures` reads its figures back.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from taxi_assets.core.drift_scores import NUMERICAL
from taxi_assets.core.evidently_report import FEATURE_TYPES, REPORT_COLUMNS, report_datasets
from taxi_assets.core.model import PREDICTION, TARGET

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

# Evidently picks the test from the reference size: p-value tests up to this many rows, distances above it.
SMALL_REFERENCE_ROWS = 1000
# A numerical column with at most this many distinct values is treated like a categorical one.
FEW_VALUES = 5
# Evidently's dataset-drift rule: the dataset drifted when at least this share of its columns did.
DATASET_DRIFT_SHARE = 0.5


@dataclass(frozen=True)
class StatTest:
    name: str
    display_name: str
    threshold: float
    p_value: bool
    """True: a p-value, small means drift. False: a distance, large means drift."""


STAT_TESTS = {
    test.name: test
    for test in (
        StatTest("ks", "K-S p_value", 0.05, p_value=True),
        StatTest("z", "Z-test p_value", 0.05, p_value=True),
        StatTest("chisquare", "chi-square p_value", 0.05, p_value=True),
        StatTest("jensenshannon", "Jensen-Shannon distance", 0.1, p_value=False),
        StatTest("wasserstein", "Wasserstein distance (normed)", 0.1, p_value=False),
    )
}
# Evidently's snapshot names a resolved method by its display name.
METHOD_BY_DISPLAY_NAME = {test.display_name: test.name for test in STAT_TESTS.values()}


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DatasetDrift:
    columns: tuple[ColumnDrift, ...]
    drift_share_threshold: float = DATASET_DRIFT_SHARE

    @property
    def drifted_count(self) -> int:
        return sum(column.drifted for column in self.columns)

    @property
    def share_drifted(self) -> float:
        return self.drifted_count / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.columns) and self.share_drifted >= self.drift_share_threshold

    def column(self, name: str) -> ColumnDrift:
        return next(column for column in self.columns if column.column == name)


def is_drifted(method: str, score: float, threshold: float) -> bool:
    """Evidently's decision per test; K-S alone counts a p-value equal to the threshold as drift."""
    if method == "ks":
        return score <= threshold
    if STAT_TESTS[method].p_value:
        return score < threshold
    return score >= threshold


def default_method(reference: pd.Series, current: pd.Series, column_type: str) -> str:
    """Evidently's default test for a column of this type and these (cleaned) samples."""
    n_values = pd.concat([reference, current]).nunique()
    if len(reference) <= SMALL_REFERENCE_ROWS:
        if column_type == NUMERICAL and n_values > FEW_VALUES:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if column_type == NUMERICAL and n_values > FEW_VALUES:
        return "wasserstein"
    return "jensenshannon"


def _clean(values: pd.Series) -> pd.Series:
    return values.replace([-np.inf, np.inf], np.nan).dropna()


def _aligned_counts(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    counts = pd.concat([reference.value_counts(), current.value_counts()], axis=1).fillna(0)
    return counts.iloc[:, 0].to_numpy(float), counts.iloc[:, 1].to_numpy(float)


def _shares(reference: pd.Series, current: pd.Series, column_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-bucket shares: value counts, or Sturges bins for numerical columns with many values."""
    if column_type == NUMERICAL and reference.nunique() > 20:
        bins = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
        return np.histogram(reference, bins)[0] / len(reference), np.histogram(current, bins)[0] / len(current)
    ref_counts, cur_counts = _aligned_counts(reference, current)
    return ref_counts / len(reference), cur_counts / len(current)


def _score(method: str, reference: pd.Series, current: pd.Series, column_type: str) -> float:
    # SciPy's stats take a second to import, and every Dagster run process loads this module.
    from scipy import stats
    from scipy.spatial import distance

    if method == "wasserstein":
        return float(stats.wasserstein_distance(reference, current) / max(float(np.std(reference)), 0.001))
    if method == "ks":
        return float(stats.ks_2samp(reference, current).pvalue)
    if method == "jensenshannon":
        return float(distance.jensenshannon(*_shares(reference, current, column_type)))
    if method == "chisquare":
        ref_counts, cur_counts = _aligned_counts(reference, current)
        return float(stats.chisquare(cur_counts, ref_counts * len(current) / len(reference)).pvalue)
    if method == "z":
        return _z_test_p_value(reference, current)
    raise ValueError(f"unknown drift method {method!r}")


def _z_test_p_value(reference: pd.Series, current: pd.Series) -> float:
    """Two-proportion z-test on 'not the smallest value', as Evidently computes it."""
    if reference.nunique() == 1 and current.nunique() == 1 and reference.iloc[0] == current.iloc[0]:
        return 1.0
    first = min(set(reference.unique()) | set(current.unique()))
    p_ref, p_cur = float((reference != first).mean()), float((current != first).mean())
    pooled = (p_ref * len(reference) + p_cur * len(current)) / (len(reference) + len(current))
    z = (p_ref - p_cur) / np.sqrt(pooled * (1 - pooled) * (1 / len(reference) + 1 / len(current)))
    from scipy import stats

    return float(2 * (1 - stats.norm.cdf(abs(z))))


def column_drift(
    column: str,
    reference: pd.Series,
    current: pd.Series,
    column_type: str,
    method: str | None = None,
    threshold: float | None = None,
) -> ColumnDrift:
    """Drift of one column, current vs reference; missing and infinite values are left out, as Evidently does."""
    reference, current = _clean(reference), _clean(current)
    if reference.empty or current.empty:
        raise ValueError(f"column {column!r} has no values to compare")
    method = method or default_method(reference, current, column_type)
    threshold = STAT_TESTS[method].threshold if threshold is None else threshold
    score = _score(method, reference, current, column_type)
    return ColumnDrift(column, method, score, threshold, is_drifted(method, score, threshold))


def dataset_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    column_types: Mapping[str, str],
    drift_share_threshold: float = DATASET_DRIFT_SHARE,
) -> DatasetDrift:
    """Drift of every column in `column_types` ({name: NUMERICAL | CATEGORICAL}) and of the dataset as a whole."""
    return DatasetDrift(
        tuple(column_drift(name, reference[name], current[name], kind) for name, kind in column_types.items()),
        drift_share_threshold,
    )


def default_snapshot(current: pd.DataFrame, reference: pd.DataFrame) -> "Snapshot":
    """Evidently's own report on two `report_frame`s: the count of drifted columns and each column's drift by
    Evidently's default tests, and the regression quality."""
    from evidently import Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift
    from evidently.presets import RegressionPreset

    count = DriftedColumnsCount(columns=list(FEATURE_TYPES), drift_share=DATASET_DRIFT_SHARE)
    report = Report([count, *(ValueDrift(column=column) for column in REPORT_COLUMNS), RegressionPreset()])
    return report.run(*report_datasets(current, reference))


@dataclass(frozen=True)
class ReportFigures:
    """What a default report says, as numbers: feature drift, prediction and target drift, regression quality."""

    features: DatasetDrift
    prediction: ColumnDrift
    target: ColumnDrift
    rmse: float
    mae: float
    mean_error: float


def extract_figures(snapshot: dict) -> ReportFigures:
    """Read the figures back from a `default_snapshot`'s `.dict()`."""
    drifts: dict[str, ColumnDrift] = {}
    values: dict[str, float] = {}
    for metric in snapshot["metrics"]:
        config, value = metric["config"], metric["value"]
        kind = config["type"].rsplit(":", 1)[-1]
        if kind == "ValueDrift":
            method = METHOD_BY_DISPLAY_NAME.get(config["method"], config["method"])
            score, threshold = float(value), float(config["threshold"])
            drifts[config["column"]] = ColumnDrift(
                config["column"], method, score, threshold, is_drifted(method, score, threshold)
            )
        elif kind in ("RMSE", "MAE", "MeanError"):
            values[kind] = float(value["mean"] if isinstance(value, dict) else value)
    return ReportFigures(
        features=DatasetDrift(tuple(drifts[name] for name in FEATURE_TYPES), DATASET_DRIFT_SHARE),
        prediction=drifts[PREDICTION],
        target=drifts[TARGET],
        rmse=values["RMSE"],
        mae=values["MAE"],
        mean_error=values["MeanError"],
    )
