"""Drift maths and the Evidently report on real TLC months, without Dagster or DuckDB."""

import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taxi_assets.core import calibration
from taxi_assets.core.batch import metric_rows, month_figures, verdict_html
from taxi_assets.core.drift_scores import CATEGORICAL, NUMERICAL
from taxi_assets.core.evidently_report import (
    FEATURE_TYPES,
    REPORT_COLUMNS,
    borough_rmse_gap,
    build_snapshot,
    report_frame,
    segment_errors,
)
from taxi_assets.core.model import PREDICTION, TARGET
from tests.support.evidently_defaults import (
    column_drift,
    dataset_drift,
    default_method,
    default_snapshot,
    extract_figures,
)
from tests.support.platform import TLC_DIR

# Whole real months through the models and the statistics: seconds each, so not in the fast layer.
pytestmark = pytest.mark.integration

FARE_COLUMNS = ["fare_amount", "total_amount"]


@cache
def scored_month(month: str) -> pd.DataFrame:
    """Trips of `month` as `trips` holds them, with a borough and a deterministic stand-in prediction."""
    raw = pd.read_parquet(TLC_DIR / f"green_tripdata_{month}.parquet")
    trips = pd.DataFrame(
        {
            "pickup_datetime": raw["lpep_pickup_datetime"],
            "PULocationID": raw["PULocationID"].astype("int32"),
            "DOLocationID": raw["DOLocationID"].astype("int32"),
            "passenger_count": raw["passenger_count"].astype("float64"),
            "trip_distance": raw["trip_distance"],
            "fare_amount": raw["fare_amount"],
            "total_amount": raw["total_amount"],
            TARGET: (raw["lpep_dropoff_datetime"] - raw["lpep_pickup_datetime"]).dt.total_seconds() / 60,
        }
    )
    trips = trips[trips[TARGET].between(1, 60)].reset_index(drop=True)
    zones = pd.read_csv(Path(TLC_DIR) / "taxi_zone_lookup.csv")
    boroughs = trips["PULocationID"].map(zones.set_index("LocationID")["Borough"])
    prediction = 5 + 3 * trips["trip_distance"].clip(0, 30)
    return trips.assign(borough=boroughs, **{PREDICTION: prediction})


def test_random_halves_of_one_month_do_not_drift():
    month = report_frame(scored_month("2021-01")).sample(frac=1.0, random_state=7)
    half = len(month) // 2
    drift = dataset_drift(month.iloc[:half], month.iloc[half:], FEATURE_TYPES)
    assert [c.column for c in drift.columns if c.drifted] == []
    assert not drift.dataset_drift


def test_two_years_apart_the_fares_drift():
    drift = dataset_drift(report_frame(scored_month("2021-01")), report_frame(scored_month("2023-03")), FEATURE_TYPES)
    for column in FARE_COLUMNS:
        assert drift.column(column).method == "wasserstein"
        assert drift.column(column).drifted, drift.column(column)


def test_longer_trips_are_flagged_as_distance_drift():
    reference, current = scored_month("2021-01"), scored_month("2021-02")
    unchanged = dataset_drift(report_frame(reference), report_frame(current), FEATURE_TYPES)
    shifted = current.assign(trip_distance=current["trip_distance"] * 1.3)
    drift = dataset_drift(report_frame(reference), report_frame(shifted), FEATURE_TYPES)
    assert not unchanged.column("trip_distance").drifted
    assert drift.column("trip_distance").drifted
    assert [c.column for c in drift.columns if c.drifted] == ["trip_distance"]


def test_method_selection_follows_evidently_defaults():
    large, small = pd.Series(np.arange(5000.0)), pd.Series(np.arange(800.0))
    assert default_method(large, large, NUMERICAL) == "wasserstein"
    assert default_method(small, small, NUMERICAL) == "ks"
    assert default_method(large % 4, large % 4, NUMERICAL) == "jensenshannon"
    assert default_method(large % 40, large % 40, CATEGORICAL) == "jensenshannon"
    assert default_method(small % 40, small % 40, CATEGORICAL) == "chisquare"
    assert default_method(small % 2, small % 2, CATEGORICAL) == "z"


def test_binary_z_test_sees_a_changed_proportion():
    reference = pd.Series([0] * 500 + [1] * 500)
    assert not column_drift("flag", reference, reference, CATEGORICAL).drifted
    assert column_drift("flag", reference, pd.Series([0] * 300 + [1] * 700), CATEGORICAL).drifted


@pytest.mark.parametrize(
    ("rows", "methods"),
    [(800, {"ks", "chisquare"}), (20_000, {"wasserstein", "jensenshannon"})],
    ids=["small-p-values", "large-distances"],
)
def test_direct_drift_agrees_with_evidently(rows, methods):
    reference = report_frame(scored_month("2021-01").sample(rows, random_state=1))
    current = report_frame(scored_month("2022-02").sample(rows, random_state=2))
    snapshot = default_snapshot(current, reference).dict()
    figures = extract_figures(snapshot)
    direct = dataset_drift(reference, current, FEATURE_TYPES)
    (counted,) = [m["value"] for m in snapshot["metrics"] if m["config"]["type"].endswith(":DriftedColumnsCount")]

    assert {c.method for c in direct.columns} == methods
    for ours, theirs in zip(direct.columns, figures.features.columns, strict=True):
        assert (ours.column, ours.method, ours.threshold, ours.drifted) == (
            theirs.column,
            theirs.method,
            theirs.threshold,
            theirs.drifted,
        )
        assert ours.score == pytest.approx(theirs.score, rel=1e-9, abs=1e-12)
    assert direct.share_drifted == pytest.approx(figures.features.share_drifted) == counted["share"]
    assert direct.drifted_count == counted["count"]
    for column, theirs in ((PREDICTION, figures.prediction), (TARGET, figures.target)):
        ours = column_drift(column, reference[column], current[column], NUMERICAL)
        assert (ours.method, ours.drifted) == (theirs.method, theirs.drifted)
        assert ours.score == pytest.approx(theirs.score, rel=1e-9)


@pytest.fixture(scope="module")
def month_report():
    """2023-03 against a profile of 2021-01 (2021-02 as validation) and against 2023-02, as the batch assets see it:
    figures, tidy rows, and the Evidently snapshot and page rendered with the alarms' verdicts."""
    reference = scored_month("2021-01")
    prof = calibration.build_profile(
        reference,
        scored_month("2021-02"),
        model_tag="stand-in",
        reference_month="2021-01",
        validation_month="2021-02",
        sizes=(5000,),
    )
    figures = month_figures(scored_month("2023-03"), prof, prof.arrays(), scored_month("2023-02"), "2023-02")
    rows = metric_rows(figures)
    verdicts = {f.feature: f for f in (*figures.since_training.features, figures.prediction, figures.target)}
    snapshot = build_snapshot(report_frame(scored_month("2023-03")), report_frame(reference), verdicts)
    html = snapshot.get_html_str(as_iframe=False).replace(
        "<body>", "<body>" + verdict_html(figures, "2023-03", "2021-01")
    )
    return figures, rows, snapshot.dict(), html


def test_report_html_is_a_complete_page_with_drift_and_regression(month_report):
    figures, _, _, html = month_report
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "<html" in html and html.rstrip().endswith("</html>")
    # Evidently's own section titles: drifted-column count, per-column drift, and the regression quality panels.
    for section in ("Count of Drifted Columns", "Drift in column", "Model Quality (+/- std)", "Predicted vs Actual"):
        assert section in html, section
    assert "Alarm verdicts: 2023-03 vs the training month 2021-01" in html
    since = figures.since_training
    assert f"({since.drifted_count} of {len(since.features)} features)" in html


def test_report_shows_the_alarms_verdicts(month_report):
    """The drift widgets are the project's `CalibratedDrift`: their scores and drifted count are the alarms'."""
    figures, _, snapshot, html = month_report
    verdicts = {f.feature: f for f in (*figures.since_training.features, figures.prediction, figures.target)}
    seen = 0
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":CalibratedDrift"):
            verdict = verdicts[config["column"]]
            assert metric["value"] == pytest.approx(verdict.score)
            assert (config["test"], config["drifted"]) == (verdict.test, verdict.drifted)
            seen += 1
        if config["type"].endswith(":DriftedFeatures"):
            assert metric["value"]["count"] == figures.since_training.drifted_count
    assert seen == len(verdicts)
    for feature in verdicts.values():
        assert f"<tr data-feature='{feature.feature}' data-drifted='{int(feature.drifted)}'>" in html
    # A feature beyond its threshold but with a negligible effect is no month drift, in the report as in the alarm.
    assert not figures.since_training.feature("passenger_count").drifted


LOAD_SNAPSHOT = """
import sys
from evidently.core.report import Snapshot
snapshot = Snapshot.loads(sys.stdin.read())
names = [metric["config"]["type"] for metric in snapshot.dict()["metrics"]]
print(sum(name.endswith(("CalibratedDrift", "DriftedFeatures")) for name in names))
print(any(module.startswith("taxi_assets.") for module in sys.modules))
"""


def test_report_draws_each_column_from_its_rows():
    """A column's distribution tab counts the month's and the reference's rows; a numerical column's drift tab
    follows the month's mean over the rows against the reference's."""
    from taxi_assets.core.drift import FeatureDrift

    reference = report_frame(scored_month("2021-01"))
    current = report_frame(scored_month("2021-02"))
    # A made-up verdict per column: the widgets draw the rows whatever the verdict says.
    verdicts = {
        column: FeatureDrift(
            column, kind, "test", 2.0, 1.0, "effect", 0.5, len(current), drifted=column == "trip_distance"
        )
        for column, kind in {**FEATURE_TYPES, PREDICTION: NUMERICAL, TARGET: NUMERICAL}.items()
    }
    text = build_snapshot(current, reference, verdicts).dumps()
    # The Evidently UI loads the snapshot without this project's classes: so does a bare interpreter.
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_SNAPSHOT], input=text, capture_output=True, text=True, timeout=120, check=False
    )
    assert loaded.returncode == 0 and loaded.stdout.split() == [str(len(REPORT_COLUMNS) + 1), "False"], loaded.stderr
    graphs: dict[tuple[str, str], dict] = {}
    for widget in json.loads(text)["widgets"]:
        counters = (widget.get("params") or {}).get("counters") or [{}]
        if str(counters[0].get("value", "")).startswith("Drift in column"):
            column = counters[0]["value"].split("'")[1]
        for tab in widget["tabs"]:
            graphs[(column, tab["title"])] = tab["widget"]["params"]
    assert {column for column, _ in graphs} == set(REPORT_COLUMNS)
    assert ("PULocationID", "DATA DRIFT") not in graphs  # categories: a distribution only

    zones = graphs[("PULocationID", "DATA DISTRIBUTION")]["data"]
    current_counts = dict(zip(zones[0]["x"], zones[0]["y"], strict=True))
    assert current_counts == current["PULocationID"].value_counts().to_dict()
    assert sum(zones[3]["y"]) == pytest.approx(100)  # the reference by percent

    distance = graphs[("trip_distance", "DATA DISTRIBUTION")]["data"]
    assert sum(distance[0]["y"]) == current["trip_distance"].notna().sum()
    assert sum(distance[2]["y"]) == reference["trip_distance"].notna().sum()
    drift = {trace.get("name"): trace for trace in graphs[("fare_amount", "DATA DRIFT")]["data"]}
    assert drift["reference (mean)"]["y"][0] == pytest.approx(reference["fare_amount"].mean())
    assert np.mean(drift["current (mean)"]["y"]) == pytest.approx(current["fare_amount"].mean(), rel=0.01)


def _numbers_or_text(value):
    """A trace field compared with a tolerance when it is numbers (both sides' arrays, rounding apart)."""
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        return pytest.approx(value, rel=1e-9, abs=1e-9)
    return value


def test_report_regression_section_is_evidentlys_to_the_digit():
    """`PredictionQuality` draws what Evidently's `RegressionPreset` draws on the same real months: the same widgets in
    the same order, the same counters as text, the same traces (values within rounding) and the same layouts."""
    from evidently import Report
    from evidently.presets import RegressionPreset

    from taxi_assets.core.evidently_quality import PredictionQuality
    from taxi_assets.core.evidently_report import report_datasets

    current, reference = report_frame(scored_month("2021-02")), report_frame(scored_month("2021-01"))

    def widgets(metric) -> list[dict]:
        return json.loads(Report([metric]).run(*report_datasets(current, reference)).dumps())["widgets"]

    evidently, ours = widgets(RegressionPreset()), widgets(PredictionQuality(target=TARGET, prediction=PREDICTION))
    assert [(w["type"], w["title"], w["size"]) for w in ours] == [(w["type"], w["title"], w["size"]) for w in evidently]
    graphs = 0
    for theirs, mine in zip(evidently, ours, strict=True):
        if theirs["type"] == "counter":
            assert mine["params"]["counters"] == theirs["params"]["counters"], theirs["params"]["counters"]
            continue
        graphs += 1
        for their_trace, my_trace in zip(theirs["params"]["data"], mine["params"]["data"], strict=True):
            assert my_trace == {key: _numbers_or_text(value) for key, value in their_trace.items()}
        layout = {key: value for key, value in theirs["params"]["layout"].items() if key != "template"}
        assert {key: value for key, value in mine["params"]["layout"].items() if key != "template"} == layout
    assert graphs == 4


def test_metric_rows_match_the_figures(month_report):
    figures, rows, _, _ = month_report
    table = {(row.metric, row.column_or_segment): row.value for row in rows}
    assert len(table) == len(rows), "metric rows must be unique per (metric, column_or_segment)"
    current = scored_month("2023-03")
    error = current[PREDICTION] - current[TARGET]
    assert table[("rows", "all")] == len(current)
    assert table[("rmse", "all")] == pytest.approx(np.sqrt((error**2).mean()))
    assert table[("mae", "all")] == pytest.approx(error.abs().mean())
    assert table[("mean_error", "all")] == pytest.approx(error.mean())
    for feature in figures.since_training.features:
        assert table[("drift_score", feature.feature)] == pytest.approx(feature.score)
        assert table[("drift_effect", feature.feature)] == pytest.approx(feature.effect)
        assert table[("drifted", feature.feature)] == float(feature.drifted)
    # Two years after training the fares and zones drifted; month over month nothing did.
    assert table[("dataset_drift", "all")] == 1.0
    assert table[("drifted", "fare_amount")] == table[("drifted", "PULocationID")] == 1.0
    assert table[("mom_dataset_drift", "all")] == 0.0
    assert {key[1] for key in table if key[0] == "drift_rank"} == {
        f.feature for f in figures.since_training.features if f.drifted
    }
    assert table[("outlier_share", "distance_above_p999")] >= (current["trip_distance"] > 100).mean() > 0

    manhattan = current[current["borough"] == "Manhattan"]
    assert table[("segment_rmse", "borough=Manhattan")] == pytest.approx(
        np.sqrt(((manhattan[PREDICTION] - manhattan[TARGET]) ** 2).mean())
    )
    assert {key[1] for key in table if key[0] == "segment_rmse" and key[1].startswith("hour=")} == {
        f"hour={hour:02d}" for hour in range(24)
    }
    worst, best = borough_rmse_gap(segment_errors(current))
    assert table[("borough_rmse_gap", f"{worst.segment} vs {best.segment}")] == pytest.approx(worst.rmse - best.rmse)
    assert worst.rmse > best.rmse and min(worst.rows, best.rows) >= 100
