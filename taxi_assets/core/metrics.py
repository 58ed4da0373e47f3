"""Prometheus samples for the Pushgateway, named exactly as docs/contracts.md lists them (alerts query these)."""

from typing import NamedTuple

from taxi_assets.core.drift import ColumnDrift, DatasetDrift
from taxi_assets.core.evidently_report import ReportFigures, SegmentError

BATCH_JOB = "taxi_batch_monitoring"
ONLINE_JOB = "taxi_online_monitoring"
INGEST_JOB = "taxi_ingest"
# One group, replaced by each push of the newest evaluation month: the alarm speaks of the deployed model now.
CHALLENGE_JOB = "taxi_model_challenge"

_DRIFT_HELP = {
    "feature_drift_score": "Drift score of one feature vs the reference",
    "feature_drifted": "1 if the feature drifted",
    "drift_share": "Share of drifted features",
    "dataset_drift": "1 if the dataset drifted",
    "prediction_drift_score": "Drift score of the predictions vs the reference",
}

# The one help text of every pushed metric, whoever pushes it. The Pushgateway keeps the help text it saw first and
# logs "inconsistent help strings" for every later push of the same name that differs, so a name never gets two.
HELP: dict[str, str] = {
    **{f"{prefix}_{name}": text for prefix in ("taxi_batch", "taxi_online") for name, text in _DRIFT_HELP.items()},
    "taxi_batch_target_drift_score": "Drift score of the actual durations vs the reference",
    "taxi_batch_rmse": "RMSE of the predicted duration, minutes",
    "taxi_batch_mae": "MAE of the predicted duration, minutes",
    "taxi_batch_mean_error": "Mean of prediction - actual, minutes",
    "taxi_batch_segment_rmse": "RMSE per segment, minutes",
    "taxi_batch_rows": "Rows scored",
    "taxi_online_window_rows": "Predictions in the window",
    "taxi_online_feedback_rows": "Predictions in the window with feedback",
    "taxi_model_validation_rmse": "Validation RMSE of the deployed model, minutes",
    "taxi_online_rmse": "RMSE where feedback arrived, minutes",
    "taxi_online_mae": "MAE where feedback arrived, minutes",
    "taxi_ingest_records_waiting": "Prediction-log records not yet in DuckDB",
    "taxi_ingest_oldest_pending_age_seconds": "Age of the oldest prediction-log record not yet in DuckDB",
    "taxi_ingest_last_success_timestamp_seconds": "Unix time of the last successful prediction_logs materialization",
    "taxi_model_challenger_gain": "Relative RMSE gain of the challenger over the deployed champion on the evaluation "
    "month",
    "taxi_model_champion_rmse": "RMSE of the deployed champion on the evaluation month",
    "taxi_model_challenger_rmse": "RMSE of the challenger on the evaluation month",
    "taxi_model_promotion_min_gain": "Relative RMSE gain at which a challenger is promoted (TAXI_PROMOTION_MIN_GAIN)",
}


class Sample(NamedTuple):
    """One series to push; its help text is the table's (a name missing from `HELP` fails at once)."""

    name: str
    labels: dict[str, str]
    value: float

    @property
    def documentation(self) -> str:
        return HELP[self.name]


def drift_samples(prefix: str, features: DatasetDrift, prediction: ColumnDrift) -> list[Sample]:
    """Feature drift, drift share, dataset drift and prediction drift, under `taxi_batch` or `taxi_online`."""
    samples = []
    for drift in features.columns:
        samples += [
            Sample(f"{prefix}_feature_drift_score", {"feature": drift.column, "method": drift.method}, drift.score),
            Sample(f"{prefix}_feature_drifted", {"feature": drift.column}, float(drift.drifted)),
        ]
    return samples + [
        Sample(f"{prefix}_drift_share", {}, features.share_drifted),
        Sample(f"{prefix}_dataset_drift", {}, float(features.dataset_drift)),
        Sample(f"{prefix}_prediction_drift_score", {"method": prediction.method}, prediction.score),
    ]


def batch_samples(figures: ReportFigures, segments: list[SegmentError], rows: int) -> list[Sample]:
    """Everything the `taxi_batch_monitoring` job pushes for one month."""
    return [
        *drift_samples("taxi_batch", figures.features, figures.prediction),
        Sample("taxi_batch_target_drift_score", {"method": figures.target.method}, figures.target.score),
        Sample("taxi_batch_rmse", {}, figures.rmse),
        Sample("taxi_batch_mae", {}, figures.mae),
        Sample("taxi_batch_mean_error", {}, figures.mean_error),
        *(
            Sample("taxi_batch_segment_rmse", {"segment_type": s.segment_type, "segment": s.segment}, s.rmse)
            for s in segments
        ),
        Sample("taxi_batch_rows", {}, float(rows)),
    ]


def challenge_samples(
    month: str,
    champion: str,
    challenger: str,
    champion_rmse: float,
    challenger_rmse: float,
    gain: float,
    min_gain: float,
) -> list[Sample]:
    """What `model_challenge` pushes (job `taxi_model_challenge`) for its evaluation month: both RMSEs, the
    relative gain, and the minimum gain (the TAXI_PROMOTION_MIN_GAIN setting) that the alert compares with."""
    pair = {"month": month, "champion": champion, "challenger": challenger}
    return [
        Sample("taxi_model_challenger_gain", pair, gain),
        Sample("taxi_model_champion_rmse", pair, champion_rmse),
        Sample("taxi_model_challenger_rmse", pair, challenger_rmse),
        Sample("taxi_model_promotion_min_gain", {"month": month}, min_gain),
    ]
