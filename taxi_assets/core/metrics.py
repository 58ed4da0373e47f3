"""Prometheus samples for the Pushgateway, named exactly as docs/contracts.md lists them (alerts query these)."""

from typing import NamedTuple

from taxi_assets.core.drift import ColumnDrift, DatasetDrift
from taxi_assets.core.evidently_report import ReportFigures, SegmentError

BATCH_JOB = "taxi_batch_monitoring"
ONLINE_JOB = "taxi_online_monitoring"
# One group, replaced by each push of the newest evaluation month: the alarm speaks of the deployed model now.
CHALLENGE_JOB = "taxi_model_challenge"


class Sample(NamedTuple):
    name: str
    documentation: str
    labels: dict[str, str]
    value: float


def drift_samples(prefix: str, features: DatasetDrift, prediction: ColumnDrift) -> list[Sample]:
    """Feature drift, drift share, dataset drift and prediction drift, under `taxi_batch` or `taxi_online`."""
    samples = []
    for drift in features.columns:
        samples += [
            Sample(
                f"{prefix}_feature_drift_score",
                "Drift score of one feature vs the reference",
                {"feature": drift.column, "method": drift.method},
                drift.score,
            ),
            Sample(
                f"{prefix}_feature_drifted",
                "1 if the feature drifted",
                {"feature": drift.column},
                float(drift.drifted),
            ),
        ]
    return samples + [
        Sample(f"{prefix}_drift_share", "Share of drifted features", {}, features.share_drifted),
        Sample(f"{prefix}_dataset_drift", "1 if the dataset drifted", {}, float(features.dataset_drift)),
        Sample(
            f"{prefix}_prediction_drift_score",
            "Drift score of the predictions vs the reference",
            {"method": prediction.method},
            prediction.score,
        ),
    ]


def batch_samples(figures: ReportFigures, segments: list[SegmentError], rows: int) -> list[Sample]:
    """Everything the `taxi_batch_monitoring` job pushes for one month."""
    return [
        *drift_samples("taxi_batch", figures.features, figures.prediction),
        Sample(
            "taxi_batch_target_drift_score",
            "Drift score of the actual durations vs the reference",
            {"method": figures.target.method},
            figures.target.score,
        ),
        Sample("taxi_batch_rmse", "RMSE of the predicted duration, minutes", {}, figures.rmse),
        Sample("taxi_batch_mae", "MAE of the predicted duration, minutes", {}, figures.mae),
        Sample("taxi_batch_mean_error", "Mean of prediction - actual, minutes", {}, figures.mean_error),
        *(
            Sample(
                "taxi_batch_segment_rmse",
                "RMSE per segment, minutes",
                {"segment_type": segment.segment_type, "segment": segment.segment},
                segment.rmse,
            )
            for segment in segments
        ),
        Sample("taxi_batch_rows", "Rows scored", {}, float(rows)),
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
        Sample(
            "taxi_model_challenger_gain",
            "Relative RMSE gain of the challenger over the deployed champion on the evaluation month",
            pair,
            gain,
        ),
        Sample(
            "taxi_model_champion_rmse", "RMSE of the deployed champion on the evaluation month", pair, champion_rmse
        ),
        Sample("taxi_model_challenger_rmse", "RMSE of the challenger on the evaluation month", pair, challenger_rmse),
        Sample(
            "taxi_model_promotion_min_gain",
            "Relative RMSE gain at which a challenger is promoted (TAXI_PROMOTION_MIN_GAIN)",
            {"month": month},
            min_gain,
        ),
    ]
