"""The drift and RMSE alarms on the real TLC months: false-alarm and detection rates pinned with fixed seeds.

One profile per module (the `hgb` model trained on 2022-01, validated on 2022-02, as bench/bench_drift_calibration.py
uses); windows of DEFAULT_WINDOW rides. Margins leave room for the sampling noise of 200 windows (about 1.5 points
at a 5% rate) and are far from what Evidently's defaults do on the same windows.
"""

import duckdb
import numpy as np
import pandas as pd
import pytest

from taxi_assets.core import drift, profile
from taxi_assets.core.drift import BATCH_FEATURES, DEFAULT_WINDOW, ONLINE_FEATURES
from taxi_assets.core.evidently_defaults import dataset_drift
from taxi_assets.core.model import PREDICTION, TARGET
from tests.support.drift_data import consecutive_windows, random_windows, scored

# Whole real months through the models and the statistics: seconds each, so not in the fast layer.
pytestmark = pytest.mark.integration

WINDOWS = 200
REFERENCE, VALIDATION = "2022-01", "2022-02"


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return scored(REFERENCE, REFERENCE)


@pytest.fixture(scope="module")
def built(reference: pd.DataFrame) -> dict:
    return profile.build_profile(
        reference,
        scored(VALIDATION, REFERENCE),
        model_tag="taxi_duration_deployed:test",
        reference_month=REFERENCE,
        validation_month=VALIDATION,
    )


@pytest.fixture(scope="module")
def arrays(built: dict) -> drift.ReferenceArrays:
    return profile.arrays(built)


def verdicts(built, arrays, frame: pd.DataFrame, rows: np.ndarray, features=ONLINE_FEATURES) -> list:
    return drift.window_verdicts(built, arrays, drift.encode(arrays, frame, features), "online", features, rows)


def rate(values) -> float:
    return float(np.mean(list(values)))


def test_unchanged_windows_rarely_alarm(built, arrays, reference):
    rng = np.random.default_rng(1)
    for windows in (
        random_windows(rng, len(reference), DEFAULT_WINDOW, WINDOWS),
        consecutive_windows(rng, len(reference), DEFAULT_WINDOW, WINDOWS),
    ):
        judged = verdicts(built, arrays, reference, windows)
        assert rate(v.dataset_drift for v in judged) <= 0.05
        for name in ONLINE_FEATURES:
            assert rate(v.feature(name).drifted for v in judged) <= 0.03, name


def test_a_day_of_consecutive_rides_does_not_flag_the_hour(built, arrays, reference):
    """Evidently's defaults flag the hour of almost every stretch of 1,000 consecutive rides (about 12 hours); the
    time-aware test does not."""
    rng = np.random.default_rng(2)
    windows = consecutive_windows(rng, len(reference), 1000, 40)
    judged = verdicts(built, arrays, reference, windows, {"pickup_hour": drift.TIME})
    assert rate(v.dataset_drift for v in judged) <= 0.05
    ours_span = [drift.window_kind(drift.epoch_hours(reference["pickup_datetime"].to_numpy()[w])) for w in windows]
    assert set(ours_span) == {drift.CONSECUTIVE}

    hours = pd.DataFrame({"pickup_hour": reference["pickup_datetime"].dt.hour})
    evidently = [
        dataset_drift(hours, hours.iloc[w], {"pickup_hour": drift.NUMERICAL}).dataset_drift for w in windows[:10]
    ]
    assert rate(evidently) >= 0.9


@pytest.mark.parametrize(
    ("factor", "windows", "at_least"),
    [
        (1.10, random_windows, 0.90),
        (1.10, consecutive_windows, 0.85),  # measured 90.7% over 300 windows
        (1.25, random_windows, 0.99),
        (1.25, consecutive_windows, 0.99),
    ],
    ids=["x1.10-random", "x1.10-consecutive", "x1.25-random", "x1.25-consecutive"],
)
def test_longer_trips_are_detected(built, arrays, reference, factor, windows, at_least):
    rng = np.random.default_rng(3)
    longer = reference.assign(trip_distance=reference["trip_distance"] * factor)
    judged = verdicts(built, arrays, longer, windows(rng, len(longer), DEFAULT_WINDOW, WINDOWS))
    assert rate(v.feature("trip_distance").drifted for v in judged) >= at_least


def test_shifted_hours_and_evening_rides_are_detected(built, arrays, reference):
    rng = np.random.default_rng(4)
    later = reference.assign(pickup_datetime=reference["pickup_datetime"] + pd.Timedelta(hours=1))
    judged = verdicts(built, arrays, later, random_windows(rng, len(later), DEFAULT_WINDOW, 100))
    assert rate(v.feature("pickup_hour").drifted for v in judged) >= 0.85

    evening = reference[reference["pickup_datetime"].dt.hour.between(17, 19)].reset_index(drop=True)
    for windows in (
        random_windows(rng, len(evening), DEFAULT_WINDOW, 50),
        consecutive_windows(rng, len(evening), DEFAULT_WINDOW, 50),
    ):
        assert rate(v.feature("pickup_hour").drifted for v in verdicts(built, arrays, evening, windows)) == 1.0


def test_a_window_of_one_evening_meets_the_evening_reference(built, arrays, reference):
    """Re-weighting to the window's hours: evening rides of one day compared with the reference's evening rides do
    not drift, while the same rides against the unweighted whole-day reference do (distance is longer at night)."""
    evening = reference[
        (reference["pickup_datetime"].dt.date == pd.Timestamp("2022-01-12").date())
        & reference["pickup_datetime"].dt.hour.between(17, 23)
    ]
    verdict = drift.assess(built, arrays, evening, "online", ONLINE_FEATURES)
    assert not verdict.dataset_drift, verdict


def test_batch_month_against_the_profile_and_month_over_month():
    """Months of tens of thousands of rides: drifted since training two years on, quiet month over month."""
    old = profile.build_profile(
        scored("2021-01", "2021-01"),
        scored("2021-02", "2021-01"),
        model_tag="old",
        reference_month="2021-01",
        validation_month="2021-02",
        sizes=(5000,),
        windows=200,
    )
    old_arrays = profile.arrays(old)

    def month_verdict(reference_arrays, month: str) -> drift.DriftVerdict:
        return drift.assess(old, reference_arrays, scored(month, "2021-01"), "batch", BATCH_FEATURES, month=True)

    assert not month_verdict(old_arrays, "2021-02").dataset_drift
    since_training = month_verdict(old_arrays, "2023-03")
    assert since_training.dataset_drift
    assert {"PULocationID", "trip_distance", "fare_amount"} <= {f.feature for f in since_training.features if f.drifted}
    for previous, month in (("2022-01", "2022-02"), ("2023-02", "2023-03"), ("2023-03", "2023-04")):
        before = profile.arrays(profile.describe(scored(previous, "2021-01")))
        assert not month_verdict(before, month).dataset_drift, (previous, month)


def test_rmse_bound_quiet_on_the_validation_month_and_trips_when_rides_slow_down(built):
    rng = np.random.default_rng(5)
    validation = scored(VALIDATION, REFERENCE)
    errors = (validation[PREDICTION] - validation[TARGET]).to_numpy()
    slower = (validation[PREDICTION] - 1.2 * validation[TARGET]).to_numpy()
    for windows, kind in (
        (random_windows(rng, len(errors), DEFAULT_WINDOW, WINDOWS), drift.SPREAD),
        (consecutive_windows(rng, len(errors), DEFAULT_WINDOW, WINDOWS), drift.CONSECUTIVE),
    ):
        bound = profile.rmse_bound(built, DEFAULT_WINDOW, kind)
        assert bound > built["residuals"]["rmse"]
        assert rate(np.sqrt((errors[windows] ** 2).mean(axis=1)) > bound) <= 0.05
        assert rate(np.sqrt((slower[windows] ** 2).mean(axis=1)) > bound) >= 0.8
    # Fewer rows, wider bound.
    assert profile.rmse_bound(built, 100, drift.SPREAD) > profile.rmse_bound(built, 5000, drift.SPREAD)


def test_profile_is_json_and_round_trips_through_duckdb(built):
    conn = duckdb.connect()
    profile.save(conn, built)
    profile.save(conn, built)  # replaced, not duplicated
    assert conn.execute("SELECT count(*) FROM reference_profile").fetchone() == (1,)
    loaded = profile.load(conn, built["model_tag"])
    assert loaded == built
    assert profile.load(conn, "other:tag") is None
    assert loaded["validation_month"] == VALIDATION
    assert set(loaded["features"]) == set(drift.PROFILED)


def test_outliers_are_rare_in_the_reference_and_found_in_glitches(built, reference):
    shares = built["outliers"]["reference_shares"]
    # Odometer glitches (beyond 100 miles) come on top of the 0.1% beyond the 99.9th percentile.
    assert shares["distance_above_p999"] <= 0.003 and shares["speed_above_p999"] <= 0.003
    glitches = reference.head(100).assign(
        trip_distance=[250_000.0] * 10 + [0.0] * 90, duration=[5.0] * 10 + [59.0] * 90
    )
    flags = profile.outlier_flags(glitches, built)
    assert flags["distance_above_p999"].sum() == 10 and flags["speed_above_p999"].sum() == 10
    assert flags["zero_distance_long_ride"].sum() == 90


def test_drifted_features_rank_by_model_importance():
    def feature(name: str, score: float) -> drift.FeatureDrift:
        return drift.FeatureDrift(name, drift.NUMERICAL, "ks", score, 1.0, "ks_distance", 0.1, 1000, score > 1)

    verdict = drift.DriftVerdict((feature("fare_amount", 9.0), feature("trip_distance", 2.0), feature("x", 0.5)), 0.05)
    ranked = drift.importance_ranking(verdict, {"trip_distance": 0.8, "PULocationID": 0.2})
    assert [f.feature for f, _, _ in ranked] == ["trip_distance", "fare_amount"]
    assert ranked[1][1] == 0.0  # the model does not use fares
    equal = drift.importance_ranking(verdict, None)
    assert [f.feature for f, _, _ in equal] == ["fare_amount", "trip_distance"]
