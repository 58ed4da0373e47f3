"""Prometheus samples for the Pushgateway, named exactly as docs/contracts.md lists them (alerts query these)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from taxi_assets.core.drift import DriftVerdict, FeatureDrift

if TYPE_CHECKING:
    from taxi_assets.core.batch import BatchFigures

BATCH_JOB = "taxi_batch_monitoring"
ONLINE_JOB = "taxi_online_monitoring"
INGEST_JOB = "taxi_ingest"
AUTOMATION_JOB = "taxi_automation"
# One group, replaced by each push of the newest evaluation month: the alarm speaks of the deployed model now.
CHALLENGE_JOB = "taxi_model_challenge"

_VERDICT_HELP = {
    "feature_drift_score": "Drift statistic of one feature over its calibrated threshold (above 1: beyond it)",
    "feature_drift_effect": "Effect size of one feature's drift (KS distance for numbers, Jensen-Shannon for zones "
    "and hours)",
    "feature_drifted": "1 if the feature drifted",
    "drift_share": "Share of drifted features",
    "dataset_drift": "1 if any feature drifted",
}
_OUTPUTS = {"prediction": "predictions", "target": "actual durations"}


def _output_help(prefix: str, name: str) -> dict[str, str]:
    what = _OUTPUTS[name]
    return {
        f"{prefix}_{name}_drift_score": f"Drift statistic of the {what} over its calibrated threshold (above 1: "
        "beyond it)",
        f"{prefix}_{name}_drifted": f"1 if the {what} drifted",
    }


_OUTLIER_HELP = "Share of rides outside the reference's plausible ranges, per rule (`any`: any rule)"

# The one help text of every pushed metric, whoever pushes it. The Pushgateway keeps the help text it saw first and
# logs "inconsistent help strings" for every later push of the same name that differs, so a name never gets two.
HELP: dict[str, str] = {
    **{
        f"{prefix}_{name}": text
        for prefix in ("taxi_batch", "taxi_batch_mom", "taxi_online")
        for name, text in _VERDICT_HELP.items()
    },
    **_output_help("taxi_batch", "prediction"),
    **_output_help("taxi_batch", "target"),
    **_output_help("taxi_online", "prediction"),
    "taxi_batch_outlier_share": _OUTLIER_HELP,
    "taxi_online_outlier_share": _OUTLIER_HELP,
    "taxi_batch_rmse": "RMSE of the predicted duration, minutes",
    "taxi_batch_mae": "MAE of the predicted duration, minutes",
    "taxi_batch_mean_error": "Mean of prediction - actual, minutes",
    "taxi_batch_segment_rmse": "RMSE per segment, minutes",
    "taxi_batch_feature_drift_priority": "Drifted feature's score weighted by the deployed model's permutation "
    "importance",
    "taxi_batch_rows": "Rows scored",
    "taxi_batch_month_start_timestamp_seconds": "Unix time the month starts (alerts look at the newest month only)",
    "taxi_online_window_rows": "Predictions in the window",
    "taxi_online_feedback_rows": "Predictions in the window with feedback",
    "taxi_model_validation_rmse": "Validation RMSE of the deployed model, minutes",
    "taxi_online_window_spread": "1 if the window's pickups span a week or more (spread), 0 for a stretch of "
    "consecutive rides",
    "taxi_online_rmse": "RMSE where feedback arrived, minutes",
    "taxi_online_window_sufficient": "1 if the window has enough rides to be judged, 0 for insufficient data (no "
    "verdicts pushed)",
    "taxi_online_alarm": "1 if this window and those before it (the n rides before the last n, or the two hours "
    "before) all reached the verdict (dataset, prediction, rmse, outliers), or for a consecutive last_n window's rmse "
    "or dataset alarm if one of its CUSUMs is beyond its limit: what the alert rules page on",
    "taxi_online_mae": "MAE where feedback arrived, minutes",
    "taxi_online_rmse_bound": "RMSE an unchanged window of this many feedback rows stays below with probability "
    "99.8%, minutes",
    "taxi_online_rmse_cusum": "CUSUM of the log RMSE of 1,000-ride chunks of the newest feedback over the "
    "validation RMSE's (a consecutive last_n window's rmse alarm)",
    "taxi_online_rmse_cusum_limit": "Value of taxi_online_rmse_cusum beyond which the rmse alarm is raised",
    "taxi_online_slowdown_cusum": "CUSUM of the mean log ratio of actual to predicted duration of 1,000-ride chunks "
    "of the newest feedback over the validation month's (a consecutive last_n window's rmse alarm)",
    "taxi_online_slowdown_cusum_limit": "Value of taxi_online_slowdown_cusum beyond which the rmse alarm is raised",
    "taxi_online_distance_cusum": "Two-sided CUSUM of the mean log trip distance of 1,000-ride chunks of the newest "
    "rides against the profile's slot means (a consecutive last_n window's dataset alarm)",
    "taxi_online_distance_cusum_limit": "Value of taxi_online_distance_cusum beyond which the dataset alarm is raised",
    "taxi_ingest_records_waiting": "Prediction-log records not yet in DuckDB",
    "taxi_ingest_oldest_pending_age_seconds": "Age of the oldest prediction-log record not yet in DuckDB",
    "taxi_ingest_last_success_timestamp_seconds": "Unix time of the last successful prediction_logs materialization",
    "taxi_model_challenger_gain": "Relative RMSE gain of the challenger over the deployed champion on the evaluation "
    "month",
    "taxi_model_champion_rmse": "RMSE of the deployed champion on the evaluation month",
    "taxi_model_challenger_rmse": "RMSE of the challenger on the evaluation month",
    "taxi_model_promotion_min_gain": "Relative RMSE gain at which a challenger is promoted (TAXI_PROMOTION_MIN_GAIN)",
    "taxi_automation_failed_for_good": "Automated runs that failed and whose retries are exhausted",
    "taxi_automation_retrying": "Automated runs that failed and wait for their next retry",
    "taxi_platform_process_up": "1 while a process make up started lives and answers its health check",
    "taxi_platform_process_restarts": "Times the supervisor restarted a process make up started (dead or wedged)",
}


class Sample(NamedTuple):
    """One series to push; its help text is the table's (a name missing from `HELP` fails at once)."""

    name: str
    labels: dict[str, str]
    value: float

    @property
    def documentation(self) -> str:
        return HELP[self.name]


def verdict_samples(prefix: str, verdict: DriftVerdict) -> list[Sample]:
    """Per feature: score (statistic / calibrated threshold), effect size and verdict; the share drifted and the
    dataset verdict (any feature drifted), under `prefix` (`taxi_batch`, `taxi_batch_mom`, `taxi_online`)."""
    samples = []
    for feature in verdict.features:
        samples += [
            Sample(f"{prefix}_feature_drift_score", {"feature": feature.feature, "test": feature.test}, feature.score),
            Sample(
                f"{prefix}_feature_drift_effect",
                {"feature": feature.feature, "effect": feature.effect_name},
                feature.effect,
            ),
            Sample(f"{prefix}_feature_drifted", {"feature": feature.feature}, feature.drifted),
        ]
    return [
        *(sample._replace(value=float(sample.value)) for sample in samples),
        Sample(f"{prefix}_drift_share", {}, verdict.share_drifted),
        Sample(f"{prefix}_dataset_drift", {}, float(verdict.dataset_drift)),
    ]


def output_samples(prefix: str, name: str, drift: FeatureDrift) -> list[Sample]:
    """Drift of the predictions (`name` = prediction) or of the actual durations (`name` = target)."""
    return [
        Sample(f"{prefix}_{name}_drift_score", {"test": drift.test}, drift.score),
        Sample(f"{prefix}_{name}_drifted", {}, float(drift.drifted)),
    ]


def outlier_samples(prefix: str, shares: dict[str, float]) -> list[Sample]:
    return [Sample(f"{prefix}_outlier_share", {"rule": rule}, share) for rule, share in shares.items()]


def batch_samples(figures: BatchFigures, month_start: float) -> list[Sample]:
    """Everything the `taxi_batch_monitoring` job pushes for one month."""
    samples = [
        *verdict_samples("taxi_batch", figures.since_training),
        *output_samples("taxi_batch", "prediction", figures.prediction),
        *output_samples("taxi_batch", "target", figures.target),
        Sample("taxi_batch_rmse", {}, figures.errors.rmse),
        Sample("taxi_batch_mae", {}, figures.errors.mae),
        Sample("taxi_batch_mean_error", {}, figures.errors.mean_error),
        *(
            Sample("taxi_batch_segment_rmse", {"segment_type": s.segment_type, "segment": s.segment}, s.rmse)
            for s in figures.segments
        ),
        *(
            Sample("taxi_batch_feature_drift_priority", {"feature": feature.feature}, priority)
            for feature, _, priority in figures.ranking
        ),
        *outlier_samples("taxi_batch", figures.outliers),
        Sample("taxi_batch_rows", {}, float(figures.rows)),
        Sample("taxi_batch_month_start_timestamp_seconds", {}, month_start),
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
        Sample("taxi_model_challenger_gain", pair, gain),
        Sample("taxi_model_champion_rmse", pair, champion_rmse),
        Sample("taxi_model_challenger_rmse", pair, challenger_rmse),
        Sample("taxi_model_promotion_min_gain", {"month": month}, min_gain),
    ]


def automation_samples(failed_for_good: int, retrying: int) -> list[Sample]:
    """What the automation retry sensor pushes as job `taxi_automation` on every tick."""
    return [
        Sample("taxi_automation_failed_for_good", {}, float(failed_for_good)),
        Sample("taxi_automation_retrying", {}, float(retrying)),
    ]
