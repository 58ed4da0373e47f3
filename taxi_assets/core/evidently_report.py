"""The human-facing monitoring report: an Evidently 0.7 page of drift and regression quality, showing the alarms'
own verdicts.

The figures and verdicts come from the project's maths (`taxi_assets.core.batch`, `taxi_assets.core.drift`);
the page draws them. The count of drifted features and each column's drift widget are metrics of the project's own
(`taxi_assets.core.evidently_drift`), which carry the verdict already computed for that column (score = statistic /
calibrated threshold, drifted when the alarm says so) and draw the column from NumPy bins, so the report cannot
disagree with the alerts. The regression-quality section is one too (`taxi_assets.core.evidently_quality`): the
panels of Evidently's `RegressionPreset`, the same figures to the digit, from NumPy in a tenth of the preset's time.
Evidently runs the metrics, stores the snapshot and renders the page; its UI shows it without this project.
Per-segment errors are computed directly (Evidently has no per-segment RMSE). Evidently's own default report, the
benchmarks' baseline, lives in tests/support/evidently_defaults.py. Evidently is imported inside the functions only:
it takes seconds to import and Dagster loads this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taxi_assets.core.drift import FeatureDrift
from taxi_assets.core.drift_scores import CATEGORICAL, MAX_TRIP_MILES, NUMERICAL
from taxi_assets.core.model import PREDICTION, TARGET, error_summary

if TYPE_CHECKING:
    import pandas as pd
    from evidently import Dataset
    from evidently.core.report import Snapshot

# The monitored ride fields. Location IDs are categories; the pickup/dropoff pair (PU_DO) is left out on purpose:
# with ~20k values Evidently's categorical path is quadratic in the number of categories.
FEATURE_TYPES = {
    "PULocationID": CATEGORICAL,
    "DOLocationID": CATEGORICAL,
    "trip_distance": NUMERICAL,
    "fare_amount": NUMERICAL,
    "total_amount": NUMERICAL,
    "passenger_count": NUMERICAL,
    "pickup_hour": NUMERICAL,
}
REPORT_COLUMNS = [*FEATURE_TYPES, PREDICTION, TARGET]
# A borough with fewer scored trips than this gets its own RMSE but stays out of the largest-gap figure:
# a handful of airport rides would otherwise decide it.
MIN_GAP_SEGMENT_ROWS = 100


@dataclass(frozen=True)
class SegmentError:
    segment_type: str
    segment: str
    rows: int
    rmse: float
    mae: float


def report_frame(scored: pd.DataFrame) -> pd.DataFrame:
    """The report's columns from scored trips (`pickup_datetime`, ride fields, `prediction`, `duration`),
    with impossible trip distances as missing values."""
    distance = scored["trip_distance"].where(scored["trip_distance"] <= MAX_TRIP_MILES)
    return scored.assign(pickup_hour=scored["pickup_datetime"].dt.hour, trip_distance=distance)[REPORT_COLUMNS]


def report_datasets(current: pd.DataFrame, reference: pd.DataFrame) -> tuple[Dataset, Dataset]:
    """Two `report_frame`s as Evidently datasets: the ride fields by type, the prediction and the target."""
    from evidently import DataDefinition, Dataset, Regression

    definition = DataDefinition(
        numerical_columns=[name for name, kind in FEATURE_TYPES.items() if kind == NUMERICAL] + [PREDICTION, TARGET],
        categorical_columns=[name for name, kind in FEATURE_TYPES.items() if kind == CATEGORICAL],
        regression=[Regression(target=TARGET, prediction=PREDICTION)],
    )
    return (
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


def build_snapshot(current: pd.DataFrame, reference: pd.DataFrame, verdicts: Mapping[str, FeatureDrift]) -> Snapshot:
    """Run the Evidently report on two `report_frame`s: the count of drifted features and each column's drift widget
    show the verdicts in `verdicts` ({column: FeatureDrift} for every column of `REPORT_COLUMNS`), then the regression
    quality."""
    from evidently import Report

    from taxi_assets.core.evidently_drift import drift_metrics
    from taxi_assets.core.evidently_quality import PredictionQuality

    drifts = drift_metrics(list(FEATURE_TYPES), {column: verdicts[column] for column in REPORT_COLUMNS})
    quality = PredictionQuality(target=TARGET, prediction=PREDICTION)
    return Report([*drifts, quality]).run(*report_datasets(current, reference))


def _errors(frame: pd.DataFrame, segment_type: str, by: pd.Series) -> list[SegmentError]:
    errors = (frame[PREDICTION] - frame[TARGET]).groupby(by.to_numpy())
    summaries = [(segment, error_summary(group)) for segment, group in errors]
    return [SegmentError(segment_type, str(segment), e.rows, e.rmse, e.mae) for segment, e in summaries]


def segment_errors(scored: pd.DataFrame) -> list[SegmentError]:
    """RMSE and MAE per pickup borough (`borough` column) and per pickup hour (`pickup_datetime`)."""
    return _errors(scored, "borough", scored["borough"].fillna("Unknown")) + _errors(
        scored, "hour", scored["pickup_datetime"].dt.hour.map("{:02d}".format)
    )


def borough_rmse_gap(segments: list[SegmentError]) -> tuple[SegmentError, SegmentError] | None:
    """The worst and the best borough by RMSE among those with enough trips, or None with fewer than two."""
    boroughs = [s for s in segments if s.segment_type == "borough" and s.rows >= MIN_GAP_SEGMENT_ROWS]
    if len(boroughs) < 2:
        return None
    return max(boroughs, key=lambda s: s.rmse), min(boroughs, key=lambda s: s.rmse)
