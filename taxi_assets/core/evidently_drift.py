"""The report's drift widgets: two Evidently metrics of the project's own, drawn from the alarms' verdicts.

Evidently's `ValueDrift` and `DriftedColumnsCount` compute each column's drift again (by a stat test that can only
echo the verdict) and draw the column through plotly's validated figure objects: 0.8 s of the page's 2.1 s on
2022-02 against 2022-01 (1.3 s without them), for verdicts the project already has. Here `CalibratedDrift`
carries a column's verdict in its configuration, so the snapshot records it, and draws what `ValueDrift` draws (the
verdict, the column's mean and spread over the rows against the reference's, its distribution against the
reference's, by count or by percent) from NumPy bins as plain plotly JSON; `DriftedFeatures` counts the verdicts.
Their results are Evidently's `SingleValue` and `CountValue` and their widgets Evidently's widget types: the
Evidently UI shows such a snapshot without importing this module. Imported by `evidently_report.build_snapshot`
only: Evidently takes seconds to import, and Dagster loads the report module.
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


class _VerdictsOnly:
    """The verdicts are the alarms': Evidently binds no default tests of its own to these metrics."""

    def _default_tests(self, context: Context) -> list[BoundTest]:
        return []

    def _default_tests_with_reference(self, context: Context) -> list[BoundTest]:
        return []


class CalibratedDrift(_VerdictsOnly, SingleValueMetric):
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


class DriftedFeatures(_VerdictsOnly, CountMetric):
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
def _template() -> dict:
    """The look of plotly's default template, which Evidently's own figures carry: its layout for two cartesian
    axes. The whole template (defaults for every trace type, colour scales, maps) is 8 kB a figure, and stored and
    rendered with each: 0.1 s of the page's 1.4 s for 16 figures."""
    import plotly.io as pio

    layout = pio.templates[pio.templates.default].to_plotly_json()["layout"]
    kept = ("colorway", "font", "hoverlabel", "hovermode", "paper_bgcolor", "plot_bgcolor", "title", "xaxis", "yaxis")
    return {"layout": {key: layout[key] for key in kept if key in layout}}


def _graph(data: list[dict], layout: dict) -> BaseWidgetInfo:
    return BaseWidgetInfo(type="big_graph", title="", size=WidgetSize.FULL, params={"data": data, "layout": layout})


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
        for visible, y in ((True, counts), (False, 100 * counts / max(counts.sum(), 1))):
            traces.append(
                {"type": "bar", "name": name, "marker": {"color": colour}, "visible": visible, "x": x, "y": y}
            )
    buttons = [
        {"label": label, "method": "update", "args": [{"visible": visible}, {"yaxis": {"title": title}}]}
        for label, title, visible in (
            ("abs", "Count", [True, False, True, False]),
            ("perc", "Percent", [False, True, False, True]),
        )
    ]
    layout = {
        "template": _template(),
        "yaxis": {"title": {"text": "Count"}},
        "updatemenus": [
            {"type": "buttons", "direction": "right", "x": 1.05, "y": 1.2, "yanchor": "top", "buttons": buttons}
        ],
    }
    return _graph(traces, layout)


def _over_rows(current: pd.Series, reference: pd.Series, column: str) -> BaseWidgetInfo:
    """The current rows in `ROW_BINS` bins, in order: each bin's mean and +/- 1 std band, against the reference's."""
    bins = np.array_split(current.to_numpy(dtype="float64"), min(ROW_BINS, len(current)))
    means = np.array([chunk.mean() for chunk in bins])
    stds = np.array([chunk.std() for chunk in bins])
    x = np.arange(len(bins))
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
        {
            "type": "scatter",
            "fill": "toself",
            "fillcolor": CURRENT_COLOUR,
            "opacity": 0.2,
            "line": {"color": CURRENT_COLOUR},
            "hoverinfo": "skip",
            "showlegend": False,
            "x": np.concatenate([x, x[::-1]]),
            "y": np.concatenate([means + stds, (means - stds)[::-1]]),
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "current (mean)",
            "line": {"color": CURRENT_COLOUR},
            "x": x,
            "y": means,
        },
    ]
    layout = {
        "template": _template(),
        "xaxis": {"title": {"text": "Index binned"}},
        "yaxis": {"title": {"text": f"{column} (mean +/- std)"}},
    }
    return _graph(data, layout)
