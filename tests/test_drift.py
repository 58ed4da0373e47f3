"""Drift maths and the Evidently report on real TLC months, without Dagster or DuckDB."""

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taxi_assets.core.evidently_defaults import (
    CATEGORICAL,
    NUMERICAL,
    column_drift,
    dataset_drift,
    default_method,
)
from taxi_assets.core.evidently_report import (
    FEATURE_TYPES,
    MetricRow,
    borough_rmse_gap,
    build_snapshot,
    extract_figures,
    implausible_distances,
    metric_rows,
    report_frame,
    segment_errors,
)
from taxi_assets.core.model import PREDICTION, TARGET
from tests.support.platform import TLC_DIR

pytestmark = pytest.mark.unit

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
    snapshot = build_snapshot(current, reference).dict()
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


def monitoring_report(current: pd.DataFrame, reference: pd.DataFrame) -> tuple[list[MetricRow], str]:
    """One scored month against the reference as the batch assets report it: tidy rows and the HTML page."""
    current_frame = report_frame(current)
    snapshot = build_snapshot(current_frame, report_frame(reference))
    figures = extract_figures(snapshot.dict())
    rows = metric_rows(figures, segment_errors(current), len(current), implausible_distances(current_frame))
    return rows, snapshot.get_html_str(as_iframe=False)


@pytest.fixture(scope="module")
def full_report() -> tuple[dict[tuple[str, str], float], str]:
    rows, html = monitoring_report(scored_month("2023-03"), scored_month("2021-01"))
    table = {(row.metric, row.column_or_segment): row.value for row in rows}
    assert len(table) == len(rows), "metric rows must be unique per (metric, column_or_segment)"
    return table, html


def test_report_html_is_a_complete_page_with_drift_and_regression(full_report):
    _, html = full_report
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "<html" in html and html.rstrip().endswith("</html>")
    # Evidently's own section titles: drifted-column count, per-column drift, and the regression quality panels.
    for section in ("Count of Drifted Columns", "Drift in column", "Model Quality (+/- std)", "Predicted vs Actual"):
        assert section in html, section


def test_extracted_metrics_match_direct_computation(full_report):
    table, _ = full_report
    current = scored_month("2023-03")
    error = current[PREDICTION] - current[TARGET]
    assert table[("rows", "all")] == len(current)
    assert table[("rmse", "all")] == pytest.approx(np.sqrt((error**2).mean()))
    assert table[("mae", "all")] == pytest.approx(error.abs().mean())
    assert table[("mean_error", "all")] == pytest.approx(error.mean())
    assert table[("implausible_values", "trip_distance")] == (current["trip_distance"] > 100).sum() > 0

    direct = dataset_drift(report_frame(scored_month("2021-01")), report_frame(current), FEATURE_TYPES)
    for drift in direct.columns:
        assert table[("drift_score", drift.column)] == pytest.approx(drift.score, rel=1e-9)
        assert table[("drifted", drift.column)] == float(drift.drifted)
    assert table[("drift_share", "all")] == pytest.approx(direct.share_drifted)
    assert table[("dataset_drift", "all")] == 1.0
    assert table[("prediction_drift_score", PREDICTION)] > 0
    assert table[("target_drift_score", TARGET)] > 0

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
