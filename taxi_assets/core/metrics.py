"""Prometheus samples for the Pushgateway, named exactly as docs/contracts.md lists them (alerts query these)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from taxi_assets.core.drift import DriftVerdict, FeatureDrift

if TYPE_CHECKING:
    from taxi_assets.core.batch import BatchFigures

BATCH_JOB = "taxi_batch_monitoring"
ONLINE_JOB = "taxi_online_monitoring"
# One group, replaced by each push of the newest evaluation month: the alarm speaks of the deployed model now.
CHALLENGE_JOB = "taxi_model_challenge"


class Sample(NamedTuple):
    name: str
    documentation: str
    labels: dict[str, str]
    value: float


def verdict_samples(prefix: str, verdict: DriftVerdict) -> list[Sample]:
    """Per feature: score (statistic / calibrated threshold), effect size and verdict; the share drifted and the
    dataset verdict (any feature drifted), under `prefix` (`taxi_batch`, `taxi_batch_mom`, `taxi_online`)."""
    samples = []
    for feature in verdict.features:
        samples += [
            Sample(
                f"{prefix}_feature_drift_score",
                "Drift statistic of one feature over its calibrated threshold (above 1: beyond it)",
                {"feature": feature.feature, "test": feature.test},
                feature.score,
            ),
            Sample(
                f"{prefix}_feature_drift_effect",
                "Effect size of one feature's drift (KS distance for numbers, Jensen-Shannon for zones and hours)",
                {"feature": feature.feature, "effect": feature.effect_name},
                feature.effect,
            ),
            Sample(
                f"{prefix}_feature_drifted", "1 if the feature drifted", {"feature": feature.feature}, feature.drifted
            ),
        ]
    return [
        *(sample._replace(value=float(sample.value)) for sample in samples),
        Sample(f"{prefix}_drift_share", "Share of drifted features", {}, verdict.share_drifted),
        Sample(f"{prefix}_dataset_drift", "1 if any feature drifted", {}, float(verdict.dataset_drift)),
    ]


def output_samples(prefix: str, name: str, drift: FeatureDrift, what: str) -> list[Sample]:
    """Drift of the predictions (`name` = prediction) or of the actual durations (`name` = target)."""
    return [
        Sample(
            f"{prefix}_{name}_drift_score",
            f"Drift statistic of the {what} over its calibrated threshold (above 1: beyond it)",
            {"test": drift.test},
            drift.score,
        ),
        Sample(f"{prefix}_{name}_drifted", f"1 if the {what} drifted", {}, float(drift.drifted)),
    ]


def outlier_samples(prefix: str, shares: dict[str, float]) -> list[Sample]:
    return [
        Sample(
            f"{prefix}_outlier_share",
            "Share of rides outside the reference's plausible ranges, per rule (`any`: any rule)",
            {"rule": rule},
            share,
        )
        for rule, share in shares.items()
    ]


def batch_samples(figures: BatchFigures, month_start: float) -> list[Sample]:
    """Everything the `taxi_batch_monitoring` job pushes for one month."""
    samples = [
        *verdict_samples("taxi_batch", figures.since_training),
        *output_samples("taxi_batch", "prediction", figures.prediction, "predictions"),
        *output_samples("taxi_batch", "target", figures.target, "actual durations"),
        Sample("taxi_batch_rmse", "RMSE of the predicted duration, minutes", {}, figures.errors.rmse),
        Sample("taxi_batch_mae", "MAE of the predicted duration, minutes", {}, figures.errors.mae),
        Sample("taxi_batch_mean_error", "Mean of prediction - actual, minutes", {}, figures.errors.mean_error),
        *(
            Sample(
                "taxi_batch_segment_rmse",
                "RMSE per segment, minutes",
                {"segment_type": segment.segment_type, "segment": segment.segment},
                segment.rmse,
            )
            for segment in figures.segments
        ),
        *(
            Sample(
                "taxi_batch_feature_drift_priority",
                "Drifted feature's score weighted by the deployed model's permutation importance",
                {"feature": feature.feature},
                priority,
            )
            for feature, _, priority in figures.ranking
        ),
        *outlier_samples("taxi_batch", figures.outliers),
        Sample("taxi_batch_rows", "Rows scored", {}, float(figures.rows)),
        Sample(
            "taxi_batch_month_start_timestamp_seconds",
            "Unix time the month starts (alerts look at the newest month only)",
            {},
            month_start,
        ),
    ]
    if figures.month_over_month is not None:
        samples += verdict_samples("taxi_batch_mom", figures.month_over_month)
    return samples


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
