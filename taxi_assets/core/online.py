"""Online monitoring, pure parts: window bounds, window drift against the reference, online error, samples.

The windows are small and recomputed on every ingest, so drift comes from `drift.py` directly (the same statistics
and thresholds as the Evidently report) rather than from a full report.
"""

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from taxi_assets.core.drift import ColumnDrift, DatasetDrift, column_drift, dataset_drift
from taxi_assets.core.evidently_report import FEATURE_TYPES, MAX_TRIP_MILES
from taxi_assets.core.metrics import Sample, drift_samples
from taxi_assets.core.model import PREDICTION, error_summary

ACTUAL = "actual_duration"
# The logged ride fields as the batch report names them; fares and passengers are not known at prediction time.
ONLINE_FEATURE_TYPES = {
    name: FEATURE_TYPES[name] for name in ("PULocationID", "DOLocationID", "trip_distance", "pickup_hour")
}


@dataclass(frozen=True)
class WindowFigures:
    window: str
    rows: int
    feedback_rows: int
    features: DatasetDrift | None
    prediction: ColumnDrift | None
    rmse: float | None
    mae: float | None


def last_complete_hour(as_of: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the last clock hour that ended at or before `as_of` (naive UTC)."""
    end = as_of.replace(minute=0, second=0, microsecond=0)
    return end - dt.timedelta(hours=1), end


def drift_frame(rides: pd.DataFrame) -> pd.DataFrame:
    """The monitored columns of logged or scored rides, cleaned as the batch report cleans them."""
    return pd.DataFrame(
        {
            "PULocationID": rides["PULocationID"],
            "DOLocationID": rides["DOLocationID"],
            "trip_distance": rides["trip_distance"].where(rides["trip_distance"] <= MAX_TRIP_MILES),
            "pickup_hour": rides["pickup_datetime"].dt.hour,
            PREDICTION: rides[PREDICTION],
        }
    )


def window_figures(window: str, current: pd.DataFrame, reference: pd.DataFrame) -> WindowFigures:
    """Drift of a window of logged predictions (with `actual_duration` where feedback arrived) vs the reference.

    An empty window has rows only; error figures need at least one feedback row.
    """
    if current.empty:
        return WindowFigures(window, 0, 0, None, None, None, None)
    current_frame, reference_frame = drift_frame(current), drift_frame(reference)
    features = dataset_drift(reference_frame, current_frame, ONLINE_FEATURE_TYPES)
    prediction = column_drift(PREDICTION, reference_frame[PREDICTION], current_frame[PREDICTION], "numerical")
    error = (current[PREDICTION] - current[ACTUAL]).dropna()
    if error.empty:
        return WindowFigures(window, len(current), 0, features, prediction, None, None)
    summary = error_summary(error)
    return WindowFigures(window, len(current), summary.rows, features, prediction, summary.rmse, summary.mae)


def online_samples(figures: WindowFigures, model_tag: str, validation_rmse: float) -> list[Sample]:
    """Everything the `taxi_online_monitoring` job pushes for one window.

    The validation RMSE goes with every window because the RMSE alert matches it on (job, window).
    """
    samples = [
        Sample("taxi_online_window_rows", {}, float(figures.rows)),
        Sample("taxi_online_feedback_rows", {}, float(figures.feedback_rows)),
        Sample("taxi_model_validation_rmse", {"model_tag": model_tag}, validation_rmse),
    ]
    if figures.features is not None and figures.prediction is not None:
        samples += drift_samples("taxi_online", figures.features, figures.prediction)
    if figures.rmse is not None and figures.mae is not None:
        samples += [
            Sample("taxi_online_rmse", {}, figures.rmse),
            Sample("taxi_online_mae", {}, figures.mae),
        ]
    return samples


def ingest_samples(waiting: int, oldest_age_seconds: float, last_success: float | None) -> list[Sample]:
    """What the sensor pushes as job `taxi_ingest`; the last success is left out until there is one."""
    samples = [
        Sample("taxi_ingest_records_waiting", {}, float(waiting)),
        Sample("taxi_ingest_oldest_pending_age_seconds", {}, oldest_age_seconds),
    ]
    if last_success is not None:
        samples.append(Sample("taxi_ingest_last_success_timestamp_seconds", {}, last_success))
    return samples
