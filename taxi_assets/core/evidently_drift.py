"""The report's drift widgets: two Evidently metrics of the project's own, drawn from the alarms' verdicts; and the
drawing both they and the regression-quality section (`taxi_assets.core.evidently_quality`) share.

Evidently's `ValueDrift` and `DriftedColumnsCount` compute each column's drift again (by a stat test that can only
echo the verdict) and draw the column through plotly's validated figure objects: 0.8 s of the page's 2.1 s on
2022-02 against 2022-01 (1.3 s without them; 0.24 s without Evidently's regression preset too), for verdicts the
project already has. Here `CalibratedDrift` carries a column's verdict in its configuration, so the snapshot
records it, and draws what `ValueDrift` draws (the verdict, the column's mean and spread over the rows against the
reference's, its distribution against the reference's, by count or by percent) from NumPy bins as plain plotly
JSON; `DriftedFeatures` counts the verdicts. Their results are Evidently's `SingleValue` and `CountValue` and their
widgets Evidently's widget types: the Evidently UI shows such a snapshot without importing this module. Imported by
`evidently_report.build_snapshot` only: Evidently takes seconds to import, and Dagster loads the report module.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from evidently.core.metric_types import (
    BoundTest,
    CountCalculation,
    CountMetric,
    SingleValueCalculation,
    SingleValueMetric,
)
from evidently.legacy.model.widget import BaseWidgetInfo
from evidently.legacy.renderers.html_widgets import CounterData, TabData, WidgetSize, counter, widget_tabs

from taxi_assets.core.drift_scores import CATEGORICAL

if TYPE_CHECKING:
    from evidently import Dataset
    from evidently.core.report import Context

    from taxi_assets.core.drift import FeatureDrift

# Evidently's colours and bins over the rows, so the page reads as it did with its own widgets.
CURRENT_COLOUR, REFERENCE_COLOUR = "#ed0400", "#4d4d4d"
ROW_BINS = 150
METHOD = "calibrated test (statistic / calibrated threshold; the alarms' verdict)"


class NoDefaultTests:
    """The verdicts are the alarms': Evidently binds no default tests of its own to the project's metrics."""

    def _default_tests(self, context: Context) -> list[BoundTest]:
        return []

    def _default_tests_with_reference(self, context: Context) -> list[BoundTest]:
        return []


class CalibratedDrift(NoDefaultTests, SingleValueMetric):
    """One column's verdict (value: its score, statistic / threshold, above 1 beyond the threshold), with its
    distribution."""

    column: str
    kind: str
    test: str
    score: float
    statistic: float
    threshold: float
    effect_name: str
    effect: float
    drifted: bool


class CalibratedDriftCalculation(SingleValueCalculation[CalibratedDrift]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Dataset | None):
        verdict = self.metric
        if reference_data is None:
            raise ValueError("CalibratedDrift draws the column against the reference: run the report with one")
        current = _values(current_data, verdict.column)
        reference = _values(reference_data, verdict.column)
        result = self.result(verdict.score)
        detected = "detected" if verdict.drifted else "not detected"
        label = (
            f"Data drift {detected}. Drift detection method: {METHOD}, {verdict.test}, "
            f"{verdict.effect_name} {verdict.effect:.3g}. Drift score: {result.value:.3g}"
        )
        tabs = [TabData("DATA DISTRIBUTION", _distribution(current, reference, verdict.kind))]
        if verdict.kind != CATEGORICAL:
            tabs.insert(0, TabData("DATA DRIFT", _over_rows(current, reference, verdict.column)))
        result.widget = [
            counter(counters=[CounterData(label, f"Drift in column '{verdict.column}'")], size=WidgetSize.FULL),
            widget_tabs(tabs=tabs, size=WidgetSize.FULL),
        ]
        return result

    def display_name(self) -> str:
        return f"Drift in column '{self.metric.column}'"


class DriftedFeatures(NoDefaultTests, CountMetric):
    """How many of the features drifted, by the alarms' verdicts, and their share."""

    features: list[str]
    drifted: list[str]


class DriftedFeaturesCalculation(CountCalculation[DriftedFeatures]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Dataset | None):
        count, total = len(self.metric.drifted), len(self.metric.features)
        result = self.result(count, count / total if total else 0.0)
        result.widget = [
            counter(
                title=f"{self.display_name()}: count", counters=[CounterData("", str(count))], size=WidgetSize.HALF
            ),
            counter(
                title=f"{self.display_name()}: share",
                counters=[CounterData("", f"{result.share.value:.2f}")],
                size=WidgetSize.HALF,
            ),
        ]
        return result

    def display_name(self) -> str:
        return "Count of Drifted Columns"


def drift_metrics(features: list[str], verdicts: dict[str, FeatureDrift]) -> list:
    """The count over `features` and one `CalibratedDrift` per verdict ({column: FeatureDrift}), in that order."""
    count = DriftedFeatures(features=features, drifted=[name for name in features if verdicts[name].drifted])
    return [
        count,
        *(
            CalibratedDrift(
                column=column,
                kind=v.kind,
                test=v.test,
                score=v.score,
                statistic=v.statistic,
                threshold=v.threshold,
                effect_name=v.effect_name,
                effect=v.effect,
                drifted=v.drifted,
            )
            for column, v in verdicts.items()
        ),
    ]


def _values(data: Dataset, column: str) -> pd.Series:
    values = data.column(column).data
    return values[np.isfinite(values)] if pd.api.types.is_numeric_dtype(values) else values.dropna()


@functools.cache
def plain_template() -> dict:
    """The look of plotly's default template, which Evidently's own figures carry: its layout for two cartesian
    axes. The whole template (defaults for every trace type, colour scales, maps) is 8 kB a figure, and stored and
    rendered with each: 0.1 s of the page's 1.4 s for 16 figures."""
    import plotly.io as pio

    layout = pio.templates[pio.templates.default].to_plotly_json()["layout"]
    kept = ("colorway", "font", "hoverlabel", "hovermode", "paper_bgcolor", "plot_bgcolor", "title", "xaxis", "yaxis")
    return {"layout": {key: layout[key] for key in kept if key in layout}}


def big_graph(data: list[dict], layout: dict) -> BaseWidgetInfo:
    return BaseWidgetInfo(type="big_graph", title="", size=WidgetSize.FULL, params={"data": data, "layout": layout})


def count_and_percent(x: np.ndarray, counts: np.ndarray, colour: str, name: str, **axes: str) -> list[dict]:
    """Evidently's two bar traces of a distribution: by count (shown) and by percent (behind `percent_button`)."""
    return [
        {"type": "bar", "name": name, "marker": {"color": colour}, "visible": visible, "x": x, "y": y, **axes}
        for visible, y in ((True, counts), (False, 100 * counts / max(counts.sum(), 1)))
    ]


def percent_button(count_title: str) -> list[dict]:
    """The abs/perc buttons over two sides' `count_and_percent` traces."""
    buttons = [
        {"label": label, "method": "update", "args": [{"visible": visible}, {"yaxis": {"title": title}}]}
        for label, title, visible in (
            ("abs", count_title, [True, False, True, False]),
            ("perc", "Percent", [False, True, False, True]),
        )
    ]
    return [{"type": "buttons", "direction": "right", "x": 1.05, "y": 1.2, "yanchor": "top", "buttons": buttons}]


def _distribution(current: pd.Series, reference: pd.Series, kind: str) -> BaseWidgetInfo:
    """Both sides' counts per value (categories) or per bin (numbers), by count or, with the button, by percent."""
    if kind == CATEGORICAL:
        counted = [side.value_counts() for side in (current, reference)]
        sides = [(counts.index.to_numpy(), counts.to_numpy()) for counts in counted]
    else:
        edges = np.histogram_bin_edges(np.concatenate([current, reference]), bins="sturges")
        centres = (edges[:-1] + edges[1:]) / 2
        sides = [(centres, np.histogram(side, edges)[0]) for side in (current, reference)]
    traces = []
    for name, colour, (x, counts) in zip(
        ("current", "reference"), (CURRENT_COLOUR, REFERENCE_COLOUR), sides, strict=True
    ):
        traces += count_and_percent(x, counts, colour, name)
    layout = {
        "template": plain_template(),
        "yaxis": {"title": {"text": "Count"}},
        "updatemenus": percent_button("Count"),
    }
    return big_graph(traces, layout)


def row_bins(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`values` in row order cut into `ROW_BINS` bins as Evidently bins a column over its index (`pandas.cut` of the
    row numbers into equal-width intervals): each bin that holds rows, its number, mean and standard deviation (0 for a
    single row)."""
    values = np.asarray(values, dtype="float64")
    rows, bins = len(values), ROW_BINS
    edges = np.linspace(0, max(rows - 1, 0), bins + 1)
    edges[0] -= max(rows - 1, 1) * 0.001  # pandas widens the first interval by 0.1 % so that it holds row 0
    which = np.clip(np.searchsorted(edges, np.arange(rows), side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    present = counts > 0
    means = np.bincount(which, values, minlength=bins) / np.maximum(counts, 1)
    squares = np.bincount(which, (values - means[which]) ** 2, minlength=bins)
    stds = np.where(counts > 1, np.sqrt(squares / np.maximum(counts - 1, 1)), 0.0)
    return np.flatnonzero(present), means[present], stds[present]


def band_and_line(
    x: np.ndarray,
    means: np.ndarray,
    stds: np.ndarray,
    colour: str,
    opacity: float,
    name: str,
    legend: bool = True,
    **axes: str,
) -> list[dict]:
    """Evidently's two traces for binned values: the +/- 1 std band (no legend) and the line of the means."""
    band = {
        "type": "scatter",
        "fill": "toself",
        "fillcolor": colour,
        "opacity": opacity,
        "line": {"color": colour},
        "hoverinfo": "skip",
        "showlegend": False,
        "x": np.concatenate([x, x[::-1]]),
        "y": np.concatenate([means + stds, (means - stds)[::-1]]),
        **axes,
    }
    line = {
        "type": "scatter",
        "mode": "lines",
        "name": name,
        "legendgroup": name,
        "showlegend": legend,
        "line": {"color": colour},
        "x": x,
        "y": means,
        **axes,
    }
    return [band, line]


def _over_rows(current: pd.Series, reference: pd.Series, column: str) -> BaseWidgetInfo:
    """The current rows in `ROW_BINS` bins, in order: each bin's mean and +/- 1 std band, against the reference's."""
    x, means, stds = row_bins(current.to_numpy(dtype="float64"))
    mean, std = float(reference.mean()), float(reference.std(ddof=0))
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "reference (mean)",
            "marker": {"color": "green"},
            "x": x,
            "y": np.full(len(x), mean),
        },
        {
            "type": "scatter",
            "name": "reference (+/- 1std)",
            "mode": "lines",
            "fill": "toself",
            "fillcolor": "LightGreen",
            "opacity": 0.5,
            "line": {"width": 0},
            "marker": {"size": 0},
            "x": [0, len(x) - 1, len(x) - 1, 0],
            "y": [mean - std, mean - std, mean + std, mean + std],
        },
        *band_and_line(x, means, stds, CURRENT_COLOUR, 0.2, "current (mean)"),
    ]
    layout = {
        "template": plain_template(),
        "xaxis": {"title": {"text": "Index binned"}},
        "yaxis": {"title": {"text": f"{column} (mean +/- std)"}},
    }
    return big_graph(data, layout)
