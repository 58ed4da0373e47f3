"""The reference profile as a typed object: profiles stored in DuckDB before it was one still load, it stores the same
JSON, and its lookups read the right tables."""

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from taxi_assets.core import online, profile
from taxi_assets.core.drift_scores import CONSECUTIVE, SPREAD
from taxi_assets.core.profile import ReferenceProfile
from taxi_assets.core.timeslots import SLOTS

pytestmark = pytest.mark.unit

# A profile in the shape stored since PROFILE_VERSION 2 (keys in the order they were written), its tables cut short.
STORED = {
    "model_tag": "taxi_duration_deployed:abc",
    "reference_month": "2023-01",
    "validation_month": "2023-02",
    "version": 2,
    "rows": 3 * SLOTS,
    "slots": {"counts": [3] * SLOTS, "hours": [4.0] * (SLOTS - 1) + [0.0]},
    "features": {
        "PULocationID": {"kind": "categorical", "edges": [7.0, 42.0], "counts": [[2, 1, 0]] * SLOTS, "missing": 0},
        "trip_distance": {
            "kind": "numerical",
            "edges": [1.5],
            "support": [0.9, 3.2],
            "std": 1.4,
            "mean": 2.1,
            "quantiles": {"p1": 0.1, "p5": 0.3, "p25": 1.0, "p50": 1.5, "p75": 2.8, "p95": 5.0, "p99": 9.0},
            "counts": [[1, 2]] * SLOTS,
            "missing": 0,
        },
        "pickup_hour": {"kind": "time"},
    },
    "outliers": {
        "max_distance": 30.0,
        "max_speed_mph": 60.0,
        "long_duration": 25.0,
        "reference_shares": {
            "distance_above_p999": 0.001,
            "speed_above_p999": 0.001,
            "zero_distance_long_ride": 0.0,
            "any": 0.002,
        },
    },
    "thresholds": {
        "sizes": [100, 400],
        "windows": {"100": 300, "400": 70},
        "block_days": 7,
        "seed": 20220101,
        "alphas": {"online": {"trip_distance": 0.00125, "PULocationID": 0.00125}},
        "sets": {
            "online": {
                SPREAD: {"trip_distance": [2.0, 3.0], "PULocationID": [4.0, 5.0]},
                CONSECUTIVE: {"trip_distance": [6.0, 8.0], "PULocationID": [9.0, 10.0]},
            }
        },
        "outlier_share": {SPREAD: [0.03, 0.01], CONSECUTIVE: [0.05, 0.02]},
        "day_effects": {SPREAD: {"trip_distance": [0.03, 0.04]}, CONSECUTIVE: {"trip_distance": [0.05, 0.06]}},
    },
    "floors": {"trip_distance": 0.04, "PULocationID": 0.08},
    "residuals": {
        "rows": 5000,
        "rmse": 6.5,
        "mean_error": -0.2,
        "quantiles": {"p1": -20.0, "p5": -9.0, "p25": -2.0, "p50": 0.1, "p75": 2.0, "p95": 8.0, "p99": 15.0},
        "rmse_bound": {
            "sizes": [100, 400],
            "bounds": {SPREAD: [9.0, 7.5], CONSECUTIVE: [12.0, 9.0]},
            "alpha": 0.002,
            "resampled": "blocks of days, cross-fitted",
        },
        "mean_log_ratio": -0.12,
        "slowdown_bound": {"sizes": [100, 400], "bounds": [-0.02, -0.07], "alpha": 0.002},
    },
    "distance_slot_means": [0.5] * SLOTS,
}


def test_a_stored_profile_loads_and_is_stored_back_as_the_same_json():
    loaded = ReferenceProfile.from_dict(json.loads(json.dumps(STORED)))
    names = (loaded.model_tag, loaded.reference_month, loaded.validation_month)
    assert names == ("taxi_duration_deployed:abc", "2023-01", "2023-02")
    assert loaded.outliers.max_distance == 30.0 and loaded.residuals.rmse == 6.5
    assert loaded.thresholds.windows == {"100": 300, "400": 70}
    # The same text, key order included: profiles written before and after compare equal byte for byte.
    assert json.dumps(loaded.to_dict()) == json.dumps(STORED)
    assert ReferenceProfile.from_dict(loaded.to_dict()) == loaded


def test_a_profile_stored_before_the_mean_log_ratio_loads_without_a_slowdown_cusum():
    """Profiles written before `Residuals.mean_log_ratio` and `slowdown_bound` existed load; the slowdown CUSUM and
    the spread windows' slowdown bound need them, so a window's RMSE alarm falls back to the RMSE CUSUM or bound
    alone (`online.feedback_cusums`, `online.alarms`) until the profile is made again."""
    kept_since = ("mean_log_ratio", "slowdown_bound")
    older = {**STORED, "residuals": {k: v for k, v in STORED["residuals"].items() if k not in kept_since}}
    loaded = ReferenceProfile.from_dict(json.loads(json.dumps(older)))
    assert loaded.residuals.mean_log_ratio is None and loaded.slowdown_bound(400) is None
    assert ReferenceProfile.from_dict(STORED).slowdown_bound(400) == pytest.approx(-0.07)
    prediction = np.full(1000, 10.0)
    assert online.feedback_cusums(prediction, prediction * 2, loaded) == (pytest.approx(np.log(10 / 6.5) - 0.04), None)
    current = ReferenceProfile.from_dict(STORED)
    assert online.feedback_cusums(prediction, prediction * 2, current)[1] == pytest.approx(np.log(2) + 0.12)


def test_a_profile_stored_before_the_distance_slot_means_loads_without_a_distance_cusum():
    """Profiles written before `distance_slot_means` existed load; their consecutive windows' dataset verdict is the
    per-window test alone until the profile is made again."""
    older = {key: value for key, value in STORED.items() if key != "distance_slot_means"}
    loaded = ReferenceProfile.from_dict(json.loads(json.dumps(older)))
    pickup = np.full(1000, np.datetime64("2023-01-09T08:00"), dtype="datetime64[ns]")
    assert loaded.distance_slot_means is None and loaded.distance_deviations(np.ones(1000), pickup) is None
    current = ReferenceProfile.from_dict(STORED)
    assert online.distance_cusum(current.distance_deviations(np.full(1000, np.e), pickup)) == pytest.approx(
        0.5 - online.DISTANCE_CUSUM_ALLOWANCE
    )


def test_a_profile_of_another_shape_does_not_load():
    with pytest.raises(TypeError):
        ReferenceProfile.from_dict({**STORED, "residuals": {**STORED["residuals"], "rmse_p95": 1.0}})
    with pytest.raises(KeyError):
        ReferenceProfile.from_dict({key: value for key, value in STORED.items() if key != "thresholds"})


def test_a_row_stored_as_plain_json_loads_and_saving_replaces_it():
    conn = duckdb.connect()
    conn.execute(profile.REFERENCE_PROFILE_DDL)
    conn.execute(
        "INSERT INTO reference_profile VALUES ($tag, '2023-01', '2023-02', now(), $json)",
        {"tag": STORED["model_tag"], "json": json.dumps(STORED)},
    )
    loaded = profile.load(conn, STORED["model_tag"])
    assert loaded == ReferenceProfile.from_dict(STORED)
    profile.save(conn, loaded)
    rows = conn.execute(
        "SELECT model_tag, reference_month, validation_month, profile FROM reference_profile"
    ).fetchall()
    assert len(rows) == 1 and rows[0][:3] == ("taxi_duration_deployed:abc", "2023-01", "2023-02")
    assert json.loads(rows[0][3]) == STORED
    assert profile.load(conn, "other:tag") is None
    assert profile.load(duckdb.connect(), STORED["model_tag"]) is None  # no table yet


def test_lookups_read_their_tables_and_interpolate_in_one_over_sqrt_n():
    prof = ReferenceProfile.from_dict(STORED)
    # At a calibrated size: the table's value; beyond the sizes: the nearest one's.
    assert prof.threshold("online", CONSECUTIVE, "PULocationID", 400) == 10.0
    assert prof.threshold("online", SPREAD, "trip_distance", 50) == 2.0
    assert prof.rmse_bound(100, CONSECUTIVE) == 12.0 and prof.rmse_bound(10_000, SPREAD) == 7.5
    assert prof.outlier_threshold(400, SPREAD) == 0.01
    # 200 rides: 1/sqrt(200) lies (1/sqrt(100) - 1/sqrt(200)) / (1/sqrt(100) - 1/sqrt(400)) = 58.6% of the way.
    share = (0.1 - 200**-0.5) / (0.1 - 0.05)
    assert prof.threshold("online", SPREAD, "trip_distance", 200) == pytest.approx(2.0 + share)
    # The floor and the typical effect of an unchanged window add in squares.
    assert prof.effect_floor(SPREAD, "trip_distance", 400) == pytest.approx(np.hypot(0.04, 0.04))


def test_outlier_limits_flag_rides_outside_the_reference_ranges():
    limits = ReferenceProfile.from_dict(STORED).outliers
    rides = pd.DataFrame({"trip_distance": [31.0, 10.0, 0.0, 0.0, 2.0], "duration": [60.0, 5.0, 30.0, 10.0, np.nan]})
    flags = limits.flags(rides)
    assert flags["distance_above_p999"].tolist() == [True, False, False, False, False]
    assert flags["speed_above_p999"].tolist() == [False, True, False, False, False]  # 120 mph
    assert flags["zero_distance_long_ride"].tolist() == [False, False, True, False, False]
    assert limits.shares(rides)["any"] == pytest.approx(0.6)
    assert limits.ranges() == {"max_distance": 30.0, "max_speed_mph": 60.0, "long_duration": 25.0}


def test_the_description_as_arrays():
    arrays = ReferenceProfile.from_dict(STORED).arrays()
    assert set(arrays.features) == {"PULocationID", "trip_distance"}  # the hour is tested on the slots
    assert arrays.features["trip_distance"].cells == 2 and arrays.features["PULocationID"].cells == 3
    # 3 rides over 4 hours a slot; the slot the reference never saw gets the average rate, not zero.
    assert arrays.time.rate.tolist() == [0.75] * SLOTS
