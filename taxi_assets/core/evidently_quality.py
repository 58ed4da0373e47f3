"""The report's regression-quality section: an Evidently metric of the project's own, drawn with NumPy from the
month's predictions and durations.

Evidently's `RegressionPreset` draws these panels through its legacy metrics: it rebuilds its legacy data definition
for each of its 14 metrics, validates every intermediate result with pydantic, computes an error-bias table per
feature that the page never shows, and draws through plotly's validated figure objects: 1.1 s of the page's 1.3 s on
2022-02 against 2022-01. `PredictionQuality` takes 0.06 s there (the whole page 0.24 s). It draws what the preset
draws, in its order and with its titles: the model-quality counters (the same text, to the digit), predicted and
actual durations over the rows, the error and the absolute percentage error over the rows, the error's
distribution, MAPE, the largest absolute error and R² (`tests/test_drift.py` compares every widget with the
preset's on real months). Its result is Evidently's `SingleValue` (the month's RMSE, minutes) and its widgets
Evidently's widget types: the Evidently UI shows the snapshot without importing this module. Imported by
`evidently_report.build_snapshot` only (Evidently takes seconds to import).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric
from evidently.legacy.renderers.html_widgets import CounterData, WidgetSize, counter, header_text

from taxi_assets.core.evidently_drift import (
    CURRENT_COLOUR,
    REFERENCE_COLOUR,
    NoDefaultTests,
    band_and_line,
    big_graph,
    count_and_percent,
    percent_button,
    plain_template,
    row_bins,
)
from taxi_assets.core.model import error_summary

if TYPE_CHECKING:
    from evidently import Dataset
    from evidently.core.report import Context
    from evidently.legacy.model.widget import BaseWidgetInfo

# Evidently's MAPE treats a duration of (nearly) zero as its own: an error of 100 % in the month, left out in the
# reference. Durations are at least a minute here, but the page says what Evidently's says whatever the rows.
NEAR_ZERO = np.finfo(np.float64).eps
# The two subplots of a current/reference figure: name, title position, axes.
SIDES = (("current", 0.225, {"xaxis": "x", "yaxis": "y"}), ("reference", 0.775, {"xaxis": "x2", "yaxis": "y2"}))


class PredictionQuality(NoDefaultTests, SingleValueMetric):
    """The month's regression quality against the reference's (value: the month's RMSE, minutes)."""

    target: str
    prediction: str


@dataclass(frozen=True)
class _Side:
    """One side's rows with both a duration and a prediction, and its absolute percentage errors (fractions)."""

    actual: np.ndarray
    predicted: np.ndarray
    ape: np.ndarray

    @property
    def error(self) -> np.ndarray:
        return self.predicted - self.actual


def _side(data: Dataset, metric: PredictionQuality, near_zero_counts: bool) -> _Side:
    actual = data.column(metric.target).data.to_numpy(dtype="float64")
    predicted = data.column(metric.prediction).data.to_numpy(dtype="float64")
    finite = np.isfinite(actual) & np.isfinite(predicted)
    actual, predicted = actual[finite], predicted[finite]
    near_zero = ~(np.abs(actual) > NEAR_ZERO)
    ape = np.abs(predicted - actual) / np.maximum(actual, NEAR_ZERO)
    if near_zero_counts:
        ape[near_zero] = 1.0
    else:
        ape = ape[~near_zero]
    return _Side(actual, predicted, ape)


class PredictionQualityCalculation(SingleValueCalculation[PredictionQuality]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Dataset | None):
        if reference_data is None:
            raise ValueError("PredictionQuality draws the month against the reference: run the report with one")
        current = _side(current_data, self.metric, near_zero_counts=True)
        reference = _side(reference_data, self.metric, near_zero_counts=False)
        result = self.result(error_summary(current.error).rmse)
        pairs = (("current", current), ("reference", reference))
        result.widget = [
            header_text(label=f"Regression Model Performance. Target: '{self.metric.target}’"),
            *(_model_quality(name, side) for name, side in pairs),
            header_text(label="Predicted vs Actual in Time"),
            _predicted_and_actual(current),
            header_text(label="Error (Predicted - Actual)"),
            _over_rows_both(current.error, reference.error, "Predicted - Actual", "Error"),
            header_text(label="Error Distribution"),
            _error_distribution(current.error, reference.error),
            *_half_counters(lambda name: f"Mean Absolute Percentage Error: {name.capitalize()}", pairs, _mape),
            header_text(label="Absolute Percentage Error"),
            _over_rows_both(
                _percent_errors(current), _percent_errors(reference), "Absolute Percentage Error", "Percent"
            ),
            *_half_counters(
                lambda name: f"Absolute Max Error ({name})", pairs, lambda s: [("", f"{np.abs(s.error).max():0.3f}")]
            ),
            *_half_counters(lambda name: f"R2 Score ({name})", pairs, lambda s: [("", f"{_r2(s):0.3f}")]),
        ]
        return result

    def display_name(self) -> str:
        return "Regression quality: RMSE"


def _model_quality(name: str, side: _Side) -> BaseWidgetInfo:
    """ME, MAE and MAPE with their standard deviations, rounded as Evidently rounds them."""
    error, summary = side.error, error_summary(side.error)
    figures = (
        ("ME", summary.mean_error, error.std(ddof=1)),
        ("MAE", summary.mae, np.abs(error).std(ddof=1)),
        ("MAPE", 100.0 * side.ape.mean(), side.ape.std(ddof=1)),
    )
    return counter(
        title=f"{name.capitalize()}: Model Quality (+/- std)",
        counters=[
            CounterData(label, f"{round(float(mean), 2)} ({round(float(std), 2)})") for label, mean, std in figures
        ],
        size=WidgetSize.FULL,
    )


def _mape(side: _Side) -> list[tuple[str, str]]:
    return [("Mean", f"{100.0 * side.ape.mean():.2f}"), ("Std", f"{side.ape.std(ddof=1):.2f}")]


def _r2(side: _Side) -> float:
    return float(1.0 - np.sum(side.error**2) / np.sum((side.actual - side.actual.mean()) ** 2))


def _half_counters(
    title: Callable[[str], str], pairs: tuple[tuple[str, _Side], ...], values: Callable[[_Side], list[tuple[str, str]]]
) -> list[BaseWidgetInfo]:
    """One half-width counter per side, as Evidently draws a metric with a reference."""
    return [
        counter(
            title=title(name),
            counters=[CounterData(label, value) for label, value in values(side)],
            size=WidgetSize.HALF,
        )
        for name, side in pairs
    ]


def _percent_errors(side: _Side) -> np.ndarray:
    percent = 100 * np.abs(side.error) / side.actual
    return percent[np.isfinite(percent)]


def _zero_line(x: np.ndarray, **axes: str) -> dict:
    return {
        "type": "scatter",
        "mode": "lines",
        "marker": {"color": "green"},
        "showlegend": False,
        "x": x,
        "y": np.zeros(len(x)),
        **axes,
    }


def _predicted_and_actual(side: _Side) -> BaseWidgetInfo:
    """The month's predicted and actual durations over the rows (Evidently draws the month only)."""
    x, actual, actual_std = row_bins(side.actual)
    _, predicted, predicted_std = row_bins(side.predicted)
    axes = SIDES[0][2]
    actual_band, actual_line = band_and_line(x, actual, actual_std, REFERENCE_COLOUR, 0.3, "Actual", **axes)
    predicted_band, predicted_line = band_and_line(
        x, predicted, predicted_std, CURRENT_COLOUR, 0.2, "Predicted", **axes
    )
    layout = {
        "template": plain_template(),
        "xaxis": {"anchor": "y", "domain": [0.0, 1.0], "title": {"text": "Index binned"}},
        "yaxis": {"anchor": "x", "domain": [0.0, 1.0], "title": {"text": "Value"}},
    }
    return big_graph([_zero_line(x, **axes), actual_band, predicted_band, actual_line, predicted_line], layout)


def _two_sides(x_title: str, y_title: str) -> dict:
    """Evidently's layout of a current and a reference subplot sharing their y axis."""
    return {
        "template": plain_template(),
        "xaxis": {"anchor": "y", "domain": [0.0, 0.45], "title": {"text": x_title}},
        "yaxis": {"anchor": "x", "domain": [0.0, 1.0], "title": {"text": y_title}},
        "xaxis2": {"anchor": "y2", "domain": [0.55, 1.0], "title": {"text": x_title}},
        "yaxis2": {"anchor": "x2", "domain": [0.0, 1.0], "matches": "y", "showticklabels": False},
        "annotations": [
            {
                "font": {"size": 16},
                "showarrow": False,
                "text": name,
                "x": x,
                "xanchor": "center",
                "xref": "paper",
                "y": 1.0,
                "yanchor": "bottom",
                "yref": "paper",
            }
            for name, x, _ in SIDES
        ],
    }


def _over_rows_both(current: np.ndarray, reference: np.ndarray, name: str, y_title: str) -> BaseWidgetInfo:
    """A value over the rows, binned, for the month and (beside it) the reference, with the zero line."""
    traces = []
    for (side, _, axes), values in zip(SIDES, (current, reference), strict=True):
        x, means, stds = row_bins(values)
        traces += [
            _zero_line(x, **axes),
            *band_and_line(x, means, stds, CURRENT_COLOUR, 0.2, name, side == "current", **axes),
        ]
    return big_graph(traces, _two_sides("Index binned", y_title))


def _error_distribution(current: np.ndarray, reference: np.ndarray) -> BaseWidgetInfo:
    """Both sides' errors counted in the same bins (Doane's rule over both), by count or by percent."""
    edges = np.histogram_bin_edges(np.concatenate([current, reference]), bins="doane")
    traces = []
    for (side, _, axes), values in zip(SIDES, (current, reference), strict=True):
        traces += count_and_percent(edges[:-1], np.histogram(values, edges)[0], CURRENT_COLOUR, side, **axes)
    layout = {
        **_two_sides("Error (Predicted - Actual)", "Number Of Objects"),
        "updatemenus": percent_button("Number Of Objects"),
        "showlegend": False,
    }
    return big_graph(traces, layout)
