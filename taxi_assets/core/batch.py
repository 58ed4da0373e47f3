"""Batch monitoring, pure parts: one scored month against the deployed model's reference profile and against the
month before it, its errors and outliers, as figures and as the tidy rows of `drift_metrics`.

Everything here is the project's own vectorised maths over the profile (`taxi_assets.core.drift`); Evidently only
renders the human-facing report (`taxi_assets.core.evidently_report`), with these verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from taxi_assets.core import drift, drift_scores, profile
from taxi_assets.core.drift import DriftVerdict, FeatureDrift
from taxi_assets.core.drift_scores import BATCH_FEATURES, NUMERICAL
from taxi_assets.core.evidently_report import SegmentError, borough_rmse_gap, segment_errors
from taxi_assets.core.model import PREDICTION, TARGET, ErrorSummary, error_summary

if TYPE_CHECKING:
    import pandas as pd

DATASET = "all"
# Outlier examples kept in the asset metadata per rule.
OUTLIER_EXAMPLES = 3
EQUAL_WEIGHTS = "equal weights (the deployed model stores no permutation_importance)"


class MetricRow(NamedTuple):
    metric: str
    column_or_segment: str
    value: float


@dataclass(frozen=True)
class BatchFigures:
    """What batch monitoring says about one month."""

    rows: int
    since_training: DriftVerdict
    month_over_month: DriftVerdict | None
    previous_month: str | None
    prediction: FeatureDrift
    target: FeatureDrift
    errors: ErrorSummary
    segments: list[SegmentError]
    outliers: dict[str, float]
    outlier_examples: dict[str, list[dict[str, Any]]]
    ranking: list[tuple[FeatureDrift, float, float]]
    weights_from: str


def outlier_examples(frame: pd.DataFrame, prof: profile.ReferenceProfile) -> dict[str, list[dict[str, Any]]]:
    """A few flagged rides per outlier rule, as plain records."""
    import pandas as pd

    flags = prof.outliers.flags(frame)
    columns = [c for c in ("pickup_datetime", "PULocationID", "DOLocationID", "trip_distance", TARGET) if c in frame]
    examples = {}
    for rule in profile.OUTLIER_RULES:
        rows = frame.loc[flags[rule].to_numpy(), columns].head(OUTLIER_EXAMPLES)
        examples[rule] = [
            {k: (str(v) if isinstance(v, pd.Timestamp) else float(v)) for k, v in record.items()}
            for record in rows.to_dict(orient="records")
        ]
    return examples


def month_figures(
    current: pd.DataFrame,
    prof: profile.ReferenceProfile,
    reference: drift_scores.ReferenceArrays,
    previous: pd.DataFrame | None = None,
    previous_month: str | None = None,
    importance: Mapping[str, float] | None = None,
) -> BatchFigures:
    """The month (`current`: scored trips with `borough`) against the profile and, when given, the month before it
    (scored by the same model); drifted features ranked by the model's permutation `importance`."""
    since_training = drift.assess(prof, reference, current, "batch", BATCH_FEATURES, month=True)
    outputs = drift.assess(prof, reference, current, "batch", {PREDICTION: NUMERICAL, TARGET: NUMERICAL}, month=True)
    month_over_month = None
    if previous is not None and not previous.empty:
        before = profile.describe(previous, BATCH_FEATURES).arrays()
        month_over_month = drift.assess(prof, before, current, "batch", BATCH_FEATURES, month=True)
    return BatchFigures(
        rows=len(current),
        since_training=since_training,
        month_over_month=month_over_month,
        previous_month=previous_month if month_over_month is not None else None,
        prediction=outputs.feature(PREDICTION),
        target=outputs.feature(TARGET),
        errors=error_summary((current[PREDICTION] - current[TARGET]).to_numpy()),
        segments=segment_errors(current),
        outliers=prof.outliers.shares(current),
        outlier_examples=outlier_examples(current, prof),
        ranking=drift.importance_ranking(since_training, importance),
        weights_from="permutation_importance" if importance else EQUAL_WEIGHTS,
    )


def _verdict_rows(prefix: str, verdict: DriftVerdict) -> list[MetricRow]:
    rows = []
    for feature in verdict.features:
        rows += [
            MetricRow(f"{prefix}drift_score", feature.feature, feature.score),
            MetricRow(f"{prefix}drift_statistic", feature.feature, feature.statistic),
            MetricRow(f"{prefix}drift_threshold", feature.feature, feature.threshold),
            MetricRow(f"{prefix}drift_effect", feature.feature, feature.effect),
            MetricRow(f"{prefix}drifted", feature.feature, float(feature.drifted)),
        ]
        if feature.kind == NUMERICAL:
            # Evidently's drift score for numbers, for comparison with reports made before the calibrated tests.
            rows.append(MetricRow(f"{prefix}drift_wasserstein", feature.feature, feature.wasserstein))
    return rows + [
        MetricRow(f"{prefix}drifted_features", DATASET, float(verdict.drifted_count)),
        MetricRow(f"{prefix}drift_share", DATASET, verdict.share_drifted),
        MetricRow(f"{prefix}dataset_drift", DATASET, float(verdict.dataset_drift)),
    ]


def metric_rows(figures: BatchFigures) -> list[MetricRow]:
    """The tidy rows of `drift_metrics`: drift since training (`drift_*`, `drifted`, `dataset_drift`), month over
    month (`mom_*`, when the month before is loaded), importance-weighted ranks, errors, segments and outliers."""
    out = [MetricRow("rows", DATASET, float(figures.rows))]
    out += _verdict_rows("", figures.since_training)
    if figures.month_over_month is not None:
        out += _verdict_rows("mom_", figures.month_over_month)
    for rank, (feature, weight, priority) in enumerate(figures.ranking, start=1):
        out += [
            MetricRow("drift_rank", feature.feature, float(rank)),
            MetricRow("drift_priority", feature.feature, priority),
            MetricRow("importance_weight", feature.feature, weight),
        ]
    for output, name in ((figures.prediction, "prediction"), (figures.target, "target")):
        out += [
            MetricRow(f"{name}_drift_score", output.feature, output.score),
            MetricRow(f"{name}_drift_effect", output.feature, output.effect),
            MetricRow(f"{name}_drifted", output.feature, float(output.drifted)),
        ]
    out += [
        MetricRow("rmse", DATASET, figures.errors.rmse),
        MetricRow("mae", DATASET, figures.errors.mae),
        MetricRow("mean_error", DATASET, figures.errors.mean_error),
    ]
    out += [MetricRow("outlier_share", rule, share) for rule, share in figures.outliers.items()]
    for segment in figures.segments:
        name = f"{segment.segment_type}={segment.segment}"
        out += [
            MetricRow("segment_rows", name, float(segment.rows)),
            MetricRow("segment_rmse", name, segment.rmse),
            MetricRow("segment_mae", name, segment.mae),
        ]
    gap = borough_rmse_gap(figures.segments)
    if gap is not None:
        worst, best = gap
        out.append(MetricRow("borough_rmse_gap", f"{worst.segment} vs {best.segment}", worst.rmse - best.rmse))
    return [MetricRow(row.metric, row.column_or_segment, float(row.value)) for row in out]


def _table_rows(figures: BatchFigures) -> list[tuple[FeatureDrift, FeatureDrift | None, int | str]]:
    """Each feature's verdict since training, its month-over-month verdict (None: the month before is not loaded)
    and its importance rank ('' when it did not drift): the rows of the metadata table and of the report's."""
    mom = {f.feature: f for f in figures.month_over_month.features} if figures.month_over_month else {}
    ranks = {feature.feature: rank for rank, (feature, _, _) in enumerate(figures.ranking, start=1)}
    return [
        (f, mom.get(f.feature), ranks.get(f.feature, ""))
        for f in (*figures.since_training.features, figures.prediction, figures.target)
    ]


def verdict_table(figures: BatchFigures) -> str:
    """Markdown table of the verdicts, since training and month over month, with effects and importance ranks."""
    lines = [
        "| feature | test | statistic / threshold | effect | drifted since training | rank | month over month |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for f, other, rank in _table_rows(figures):
        lines.append(
            f"| {f.feature} | {f.test} | {f.statistic:.3g} / {f.threshold:.3g} | {f.effect_name} {f.effect:.3f} | "
            f"{'**yes**' if f.drifted else 'no'} | {rank} | "
            f"{('**yes**' if other.drifted else 'no') + f' ({other.effect:.3f})' if other else ''} |"
        )
    return "\n".join(lines)


def month_start_seconds(month: str) -> float:
    """Unix time of the first instant of `month` (UTC): lets an alert pick the newest month monitored."""
    return float(np.datetime64(f"{month}-01T00:00:00", "s").astype("int64"))


def verdict_html(figures: BatchFigures, month: str, reference_month: str) -> str:
    """The verdict table as an HTML block for the top of the Evidently page: the alarms' own verdicts."""
    cells = []
    for f, other, rank in _table_rows(figures):
        cells.append(
            f"<tr data-feature='{f.feature}' data-drifted='{int(f.drifted)}'><td>{f.feature}</td><td>{f.test}</td>"
            f"<td>{f.statistic:.3g} / {f.threshold:.3g}</td><td>{f.effect_name} {f.effect:.3f}</td>"
            f"<td>{'DRIFTED' if f.drifted else 'no'}</td><td>{rank}</td>"
            f"<td>{('DRIFTED' if other.drifted else 'no') if other else 'n/a'}</td></tr>"
        )
    since = figures.since_training
    mom_text = "month over month: the month before is not loaded"
    if figures.month_over_month is not None:
        verdict = "DRIFTED" if figures.month_over_month.dataset_drift else "quiet"
        mom_text = f"month over month ({figures.previous_month}): {verdict}"
    return (
        "<section id='taxi-alarm-verdicts' style='font-family:sans-serif;margin:16px'>"
        f"<h2>Alarm verdicts: {month} vs the training month {reference_month}</h2>"
        f"<p>Drifted since training: {'DRIFTED' if since.dataset_drift else 'quiet'} "
        f"({since.drifted_count} of {len(since.features)} features); {mom_text}. These verdicts drive the alerts; "
        "the per-column drift widgets below show the same verdicts (CalibratedDrift: drift score = statistic over the "
        "calibrated threshold).</p>"
        "<table border='1' cellpadding='4'><tr><th>feature</th><th>test</th><th>statistic / threshold</th>"
        "<th>effect</th><th>since training</th><th>importance rank</th><th>month over month</th></tr>"
        + "".join(cells)
        + "</table><p>Rides outside the reference's plausible ranges: "
        + ", ".join(f"{rule} {share:.2%}" for rule, share in figures.outliers.items())
        + "</p></section>"
    )
