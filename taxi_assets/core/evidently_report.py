"""The monitoring report: Evidently 0.7 data, prediction and target drift plus regression quality, and its figures.

`build_snapshot` runs Evidently; everything else here is pure: figures read back from the snapshot's `.dict()`,
performance per segment computed directly (Evidently has no per-segment RMSE), and the tidy rows
`(metric, column_or_segment, value)` that the `drift_metrics` table stores.
Evidently is imported inside `build_snapshot` only: it takes seconds to import and Dagster loads this module.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from taxi_assets.core.evidently_defaults import (
    CATEGORICAL,
    DATASET_DRIFT_SHARE,
    METHOD_BY_DISPLAY_NAME,
    NUMERICAL,
    ColumnDrift,
    DatasetDrift,
    is_drifted,
)
from taxi_assets.core.model import PREDICTION, TARGET, error_summary

if TYPE_CHECKING:
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
DATASET = "all"
# A green-taxi ride of at most 60 minutes cannot cover more miles than this. TLC months carry a few dozen
# odometer glitches (up to ~250,000 miles) that would make the reference std, which normalises the Wasserstein
# distance, thousands of miles wide and hide any real shift; the report treats them as missing and counts them.
MAX_TRIP_MILES = 100.0
# A borough with fewer scored trips than this gets its own RMSE but stays out of the largest-gap figure:
# a handful of airport rides would otherwise decide it.
MIN_GAP_SEGMENT_ROWS = 100


class MetricRow(NamedTuple):
    metric: str
    column_or_segment: str
    value: float


@dataclass(frozen=True)
class ReportFigures:
    """What the report says, as numbers: feature drift, prediction and target drift, regression quality."""

    features: DatasetDrift
    prediction: ColumnDrift
    target: ColumnDrift
    rmse: float
    mae: float
    mean_error: float


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


def build_snapshot(current: pd.DataFrame, reference: pd.DataFrame) -> "Snapshot":
    """Run the Evidently report on two `report_frame`s."""
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift
    from evidently.presets import RegressionPreset

    definition = DataDefinition(
        numerical_columns=[name for name, kind in FEATURE_TYPES.items() if kind == NUMERICAL] + [PREDICTION, TARGET],
        categorical_columns=[name for name, kind in FEATURE_TYPES.items() if kind == CATEGORICAL],
        regression=[Regression(target=TARGET, prediction=PREDICTION)],
    )
    # DataDriftPreset's own metrics, without the preset: its summary table recomputes every column's drift a
    # second time, which costs a quarter of the report's CPU time for a table the asset metadata already shows.
    report = Report(
        [
            DriftedColumnsCount(columns=list(FEATURE_TYPES), drift_share=DATASET_DRIFT_SHARE),
            *(ValueDrift(column=column) for column in [*FEATURE_TYPES, PREDICTION, TARGET]),
            RegressionPreset(),
        ]
    )
    return report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


def extract_figures(snapshot: dict) -> ReportFigures:
    """Read the figures back from an Evidently snapshot's `.dict()`."""
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


def _errors(frame: pd.DataFrame, segment_type: str, by: pd.Series) -> list[SegmentError]:
    errors = (frame[PREDICTION] - frame[TARGET]).groupby(by.to_numpy())
    summaries = [(segment, error_summary(group)) for segment, group in errors]
    return [SegmentError(segment_type, str(segment), e.rows, e.rmse, e.mae) for segment, e in summaries]


def segment_errors(scored: pd.DataFrame) -> list[SegmentError]:
    """RMSE and MAE per pickup borough (`borough` column) and per pickup hour (`pickup_datetime`)."""
    return _errors(scored, "borough", scored["borough"].fillna("Unknown")) + _errors(
        scored, "hour", scored["pickup_datetime"].dt.hour.map("{:02d}".format)
    )


def implausible_distances(frame: pd.DataFrame) -> int:
    """How many trip distances of a `report_frame` were impossible, hence left out of the drift."""
    return int(frame["trip_distance"].isna().sum())


def borough_rmse_gap(segments: list[SegmentError]) -> tuple[SegmentError, SegmentError] | None:
    """The worst and the best borough by RMSE among those with enough trips, or None with fewer than two."""
    boroughs = [s for s in segments if s.segment_type == "borough" and s.rows >= MIN_GAP_SEGMENT_ROWS]
    if len(boroughs) < 2:
        return None
    return max(boroughs, key=lambda s: s.rmse), min(boroughs, key=lambda s: s.rmse)


def metric_rows(
    figures: ReportFigures, segments: list[SegmentError], rows: int, implausible_distances: int
) -> list[MetricRow]:
    """The tidy rows for the `drift_metrics` table."""
    out = [
        MetricRow("rows", DATASET, float(rows)),
        MetricRow("implausible_values", "trip_distance", float(implausible_distances)),
    ]
    for drift in figures.features.columns:
        out += [MetricRow("drift_score", drift.column, drift.score), MetricRow("drifted", drift.column, drift.drifted)]
    out += [
        MetricRow("drifted_features", DATASET, float(figures.features.drifted_count)),
        MetricRow("drift_share", DATASET, figures.features.share_drifted),
        MetricRow("dataset_drift", DATASET, float(figures.features.dataset_drift)),
        MetricRow("prediction_drift_score", PREDICTION, figures.prediction.score),
        MetricRow("prediction_drifted", PREDICTION, float(figures.prediction.drifted)),
        MetricRow("target_drift_score", TARGET, figures.target.score),
        MetricRow("target_drifted", TARGET, float(figures.target.drifted)),
        MetricRow("rmse", DATASET, figures.rmse),
        MetricRow("mae", DATASET, figures.mae),
        MetricRow("mean_error", DATASET, figures.mean_error),
    ]
    for segment in segments:
        name = f"{segment.segment_type}={segment.segment}"
        out += [
            MetricRow("segment_rows", name, float(segment.rows)),
            MetricRow("segment_rmse", name, segment.rmse),
            MetricRow("segment_mae", name, segment.mae),
        ]
    gap = borough_rmse_gap(segments)
    if gap is not None:
        worst, best = gap
        out.append(MetricRow("borough_rmse_gap", f"{worst.segment} vs {best.segment}", worst.rmse - best.rmse))
    return [MetricRow(row.metric, row.column_or_segment, float(row.value)) for row in out]
