"""The drift, RMSE and outlier alarms on the real TLC months, on days the calibration never saw: false-alarm and
detection rates pinned with fixed seeds (bench/bench_drift_calibration.py prints them all, for four months).

The profile of the `hgb_te` model trained on 2022-01 is built from alternate blocks of days of 2022-01 and of its
validation month 2022-02 (`tests.support.alarm_days.held_out`); windows come from the other blocks. Every figure is
deterministic (fixed seeds); the bounds are the issue's goals, or the measured figure where a goal is not met yet.
"""

import duckdb
import numpy as np
import pandas as pd
import pytest

from taxi_assets.core import calibration, drift, drift_scores, online, profile, timeslots
from taxi_assets.core.drift import DEFAULT_WINDOW
from taxi_assets.core.drift_scores import BATCH_FEATURES, ONLINE_FEATURES
from taxi_assets.core.model import PREDICTION, TARGET
from taxi_assets.core.profile import ReferenceProfile
from tests.support import alarm_days, cusum_rules
from tests.support.drift_data import scored
from tests.support.evidently_defaults import dataset_drift

# Whole real months through the models and the statistics: seconds each, so not in the fast layer.
pytestmark = pytest.mark.integration

REFERENCE, VALIDATION, AFTER = "2022-01", "2022-02", "2022-03"


@pytest.fixture(scope="module")
def held() -> tuple[ReferenceProfile, pd.DataFrame, pd.DataFrame]:
    """(profile without fold 0's days, fold 0's days of 2022-01, fold 0's days of 2022-02)."""
    return alarm_days.held_out(REFERENCE, 0)


@pytest.fixture(scope="module")
def built(held) -> ReferenceProfile:
    return held[0]


@pytest.fixture(scope="module")
def arrays(built: ReferenceProfile) -> drift_scores.ReferenceArrays:
    return built.arrays()


@pytest.fixture(scope="module")
def reference(held) -> pd.DataFrame:
    """Held-out days of the training month."""
    return held[1]


def verdicts(built, arrays, frame: pd.DataFrame, rows: np.ndarray, features=ONLINE_FEATURES) -> list:
    return drift.window_verdicts(built, arrays, drift_scores.encode(arrays, frame, features), "online", features, rows)


def rate(values) -> float:
    return float(np.mean(list(values)))


def confirmed_share(
    prof: ReferenceProfile, frame: pd.DataFrame, alarm: str, size: int = DEFAULT_WINDOW, segments=None
) -> float:
    """Share of full sliding windows (with an evaluation before them) whose `alarm` is raised; the stream's
    `segments` are its blocks of days unless given."""
    segments = alarm_days.segments_of(frame) if segments is None else segments
    evaluations, previous = alarm_days.sliding_alarms(prof, frame, segments, size)
    return float(getattr(evaluations, alarm)[previous >= 0].mean())


def test_unchanged_days_rarely_see_an_alarm():
    """Per day as a user lives with it: the sliding last_5000 every 1,000 rides and every hour window, an alarm
    when the windows before (no ride in common; for an hour the two hours before) agree. Held-out days of the
    training month (both folds): measured 0 of 31 days (3.2% while the window 1,000 rides earlier confirmed); the
    month after validation against the whole month's profile: 0 of 31 (goal 10%; 3.2%, one day, while one hour
    confirmed an hour)."""
    parts = []
    for fold in (0, 1):
        prof, days, _ = alarm_days.held_out(REFERENCE, fold)
        evaluations = alarm_days.stream_alarms(prof, days, alarm_days.segments_of(days), DEFAULT_WINDOW)
        assert evaluations.dataset.mean() <= 0.01 and evaluations.prediction.mean() <= 0.01
        parts.append(evaluations)
    assert alarm_days.Evaluations.concat(parts).day_share() <= 0.05
    after = alarm_days.month_rides(AFTER, REFERENCE)
    later = alarm_days.stream_alarms(alarm_days.whole(REFERENCE), after, [(0, len(after))], DEFAULT_WINDOW)
    assert later.day_share() <= 0.02


def test_a_day_of_consecutive_rides_does_not_flag_the_hour(built, arrays, reference):
    """Evidently's defaults flag the hour of almost every stretch of 1,000 consecutive rides (about 12 hours); the
    time-aware test flags only a day that really differs."""
    windows = alarm_days.sliding(alarm_days.segments_of(reference), 1000)[::3]
    judged = verdicts(built, arrays, reference, windows, {"pickup_hour": drift_scores.TIME})
    # One window of the ten is flagged: the night and morning of New Year's Day, a holiday like no Sunday.
    flagged = [
        reference["pickup_datetime"].iloc[w[0]].date() for w, v in zip(windows, judged, strict=True) if v.dataset_drift
    ]
    assert [str(day) for day in flagged] == ["2022-01-01"]
    ours_span = [
        drift_scores.window_kind(timeslots.epoch_hours(reference["pickup_datetime"].to_numpy()[w])) for w in windows
    ]
    assert set(ours_span) == {drift_scores.CONSECUTIVE}

    hours = pd.DataFrame({"pickup_hour": reference["pickup_datetime"].dt.hour})
    evidently = [
        dataset_drift(hours, hours.iloc[w], {"pickup_hour": drift_scores.NUMERICAL}).dataset_drift for w in windows[:10]
    ]
    assert rate(evidently) >= 0.9


@pytest.mark.parametrize(
    ("scenario", "alarm", "consecutive", "random"),
    [
        # Measured on these held-out weeks: 87.5% / 100%, both folds 94.1% (the bench; the goal is 90% of
        # consecutive windows). The per-window test alone caught 50%: its calibrated threshold is fitted to ten
        # 5,000-ride windows of references built from half the rides (3.25, where an oracle's is 2.36; bench,
        # "distance ceiling"). The distance CUSUM (`online.distance_cusum`) catches the rest.
        ("distance x1.10", "dataset", 0.85, 0.95),
        ("distance x1.25", "dataset", 0.99, 0.99),
        # The RMSE on held-out validation days against the other days: rides 25% slower are caught in every window
        # (measured 100% / 100%); 10% slower: see the two tests below.
        ("durations x1.25", "rmse", 0.95, 0.99),
    ],
)
def test_changes_are_detected_on_held_out_days(held, scenario, alarm, consecutive, random):
    prof, training, validation = held
    frame = alarm_days.altered(validation if alarm == "rmse" else training, REFERENCE, scenario)
    assert confirmed_share(prof, frame, alarm) >= consecutive
    rows = np.random.default_rng(3).integers(0, len(frame), (100, DEFAULT_WINDOW))
    assert getattr(alarm_days.evaluate(prof, frame, list(rows)), alarm).mean() >= random


def test_rides_10_percent_slower_are_caught_by_the_rmse_cusum():
    """The sliding window's RMSE alarm is the CUSUMs of 1,000-ride chunks (`online.feedback_cusums`). On the
    held-out weeks of 2022-02, rides 10% slower raise it in 100% and 85.7% of full 5,000-ride windows (the goal is
    80%); unchanged weeks raise it in none. As deployed (the whole 2022-01 profile against 2022-03, one stream), it
    catches every full window and no unchanged one. The window's bound confirmed by the window before it caught
    32.1% held out and none as deployed (bench/bench_drift_calibration.py): a day of weather moves one window's RMSE
    about as much."""
    for fold in (0, 1):
        prof, _, validation = alarm_days.held_out(REFERENCE, fold)
        assert confirmed_share(prof, alarm_days.altered(validation, REFERENCE, "durations x1.10"), "rmse") >= 0.80
        assert confirmed_share(prof, validation, "rmse") == 0.0
    prof = alarm_days.whole(REFERENCE)
    after = alarm_days.month_rides(AFTER, REFERENCE)
    stream = [(0, len(after))]
    assert (
        confirmed_share(prof, alarm_days.altered(after, REFERENCE, "durations x1.10"), "rmse", segments=stream) >= 0.95
    )
    assert confirmed_share(prof, after, "rmse", segments=stream) <= 0.02


def test_the_rmse_alarms_cusums_picked_on_three_months_meet_the_goals_on_the_fourth():
    """The RMSE alarm's two CUSUMs (`online.rmse_cusum`, `online.slowdown_cusum`) as bench/bench_drift_calibration.py
    picks them: on held-out validation weeks of four months, each month judged by the rule picked on the other three
    (`cusum_rules.pick`). Measured: unchanged days with an alarm 3.8% (2021-01, one of 26), 0, 0, 0%; rides 10% slower
    in 80.0, 95.8, 100, 100% of full windows (the RMSE CUSUM alone: 80.0, 95.8, 66.7, 70.6%). The goals: at most 5%
    of days, at least 80% of consecutive windows. Picked on all four, the rule is the one deployed."""
    months = ["2021-01", "2022-01", "2023-01", "2023-03"]
    chunks = {m: (cusum_rules.held_out_chunks(m), cusum_rules.held_out_chunks(m, 1.10)) for m in months}
    deployed = (online.RMSE_CUSUM_ALLOWANCE, online.RMSE_CUSUM_LIMIT)
    rules = [(*deployed, k, h) for k in cusum_rules.SLOWDOWN_ALLOWANCES for h in cusum_rules.SLOWDOWN_LIMITS]
    figures = {(r, m): cusum_rules.sequential_figures(*chunks[m], r, DEFAULT_WINDOW) for r in rules for m in months}
    for month in months:
        days, found = figures[(cusum_rules.pick(figures, rules, [m for m in months if m != month]), month)]
        assert days <= cusum_rules.DAY_BUDGET and found >= 0.80, month
    assert cusum_rules.pick(figures, rules, months) == (
        *deployed,
        online.SLOWDOWN_CUSUM_ALLOWANCE,
        online.SLOWDOWN_CUSUM_LIMIT,
    )
    # Without the slowdown CUSUM, 2023-03 is caught in 70.6% of windows.
    assert cusum_rules.sequential_figures(*chunks["2023-03"], (*deployed, 0.0, np.inf), DEFAULT_WINDOW)[1] < 0.75


def test_the_distance_cusum_picked_on_three_months_keeps_the_day_budget_on_the_fourth():
    """The dataset alarm's distance CUSUM (`online.distance_cusum`) as bench/bench_drift_calibration.py picks it, on
    held-out training and validation weeks of four months, each month judged by the rule picked on the other three.
    Measured, days with an alarm (the worse of the two months) / full windows alarmed with distances 10% longer:
    2021-01 0% / 100%, 2022-01 0% / 92.3%, 2023-01 7.1% / 83.3% (two of 2023-02's 28 days: its rides are 2% longer
    than the reference's, and the other three months pick a faster rule, k 0.04 h 0.2), 2023-03 0% / 70.0%. Picked on
    all four, the rule is the one deployed, within the budget in every month; beside the per-window test it catches
    distances 10% longer in 94.1-100% of full consecutive windows of held-out days (the bench's detection table)."""
    months = ["2021-01", "2022-01", "2023-01", "2023-03"]
    blocks = {m: cusum_rules.held_out_distance_chunks(m) for m in months}
    rules = [(k, h, 0.0, np.inf) for k in cusum_rules.DISTANCE_ALLOWANCES for h in cusum_rules.DISTANCE_LIMITS]
    figures = {}
    for rule in rules:
        for month in months:
            quiet, later, found = cusum_rules.distance_figures(*blocks[month], rule, DEFAULT_WINDOW)
            figures[(rule, month)] = max(quiet, later), found
    held_out = {m: figures[(cusum_rules.pick(figures, rules, [o for o in months if o != m]), m)] for m in months}
    assert all(days <= cusum_rules.DAY_BUDGET for m, (days, _) in held_out.items() if m != "2023-01")
    assert held_out["2023-01"][0] <= 2 / 28 + 1e-9
    assert min(found for _, found in held_out.values()) >= 0.70
    deployed = (online.DISTANCE_CUSUM_ALLOWANCE, online.DISTANCE_CUSUM_LIMIT, 0.0, np.inf)
    assert cusum_rules.pick(figures, rules, months) == deployed
    assert all(figures[(deployed, m)][0] <= cusum_rules.DAY_BUDGET for m in months)


def test_the_rmse_bound_holds_on_held_out_days_of_the_validation_month(held):
    """Held-out weeks of the validation month: measured 0 full consecutive windows with the RMSE alarm (the CUSUM's;
    the test above); random windows, both folds (the bench's protocol): 2.5% in this fold, whose
    weeks' errors are 3.7% above the other weeks' (0.5% while random windows' bound mixed one draw of the
    fold-to-fold offset into its spread, and caught rides 10% slower in 14.5% of the other fold's windows, see
    below); 1.25% pooled (none in the other fold). The goal is 2%."""
    prof, _, validation = held
    assert confirmed_share(prof, validation, "rmse") <= 0.02
    beyond = []
    for fold in (0, 1):
        prof, _, validation = alarm_days.held_out(REFERENCE, fold)
        rows = np.random.default_rng(5).integers(0, len(validation), (200, DEFAULT_WINDOW))
        beyond.append(alarm_days.evaluate(prof, validation, list(rows)).rmse)
    assert np.concatenate(beyond).mean() <= 0.02
    # Fewer rows, wider bound.
    assert prof.rmse_bound(100, drift_scores.SPREAD) > prof.rmse_bound(5000, drift_scores.SPREAD)


def test_rides_10_percent_slower_are_caught_in_random_windows_of_held_out_days():
    """The spread RMSE bound on the weeks of 2022-02 it never saw (the second and fourth, whose errors are 3.5% below
    those of the other weeks): random 5,000-ride windows of rides 10% slower exceed it in 92% of windows, unchanged
    ones in none. With the bound fitted to ratios to the other fold's RMSE (one draw of the week-to-week offset in
    its spread) the slower ones exceeded it in 14.5% (bound 6.02 minutes, now 5.70)."""
    prof, _, validation = alarm_days.held_out(REFERENCE, 1)
    rows = np.random.default_rng(4).integers(0, len(validation), (200, DEFAULT_WINDOW))
    pickup = timeslots.epoch_hours(validation["pickup_datetime"].to_numpy())
    assert {drift_scores.window_kind(pickup[window]) for window in rows} == {drift_scores.SPREAD}
    bound = prof.rmse_bound(DEFAULT_WINDOW, drift_scores.SPREAD)

    def beyond(frame: pd.DataFrame) -> float:
        squared = (frame[PREDICTION] - frame[TARGET]).to_numpy("float64") ** 2
        return float((np.sqrt(squared[rows].mean(axis=1)) > bound).mean())

    slower, unchanged = beyond(alarm_days.altered(validation, REFERENCE, "durations x1.10")), beyond(validation)
    assert slower >= 0.85
    assert unchanged <= 0.02
    # The window's RMSE verdict also holds its mean log ratio of actual to predicted duration against the profile's
    # slowdown bound (`calibration.slowdown_bounds`): measured, every window of rides 10% slower, at 5,000 rides and
    # at 1,000, and no unchanged one.
    for size in (DEFAULT_WINDOW, 1000):
        windows = list(np.random.default_rng(4).integers(0, len(validation), (200, size)))
        slower = alarm_days.altered(validation, REFERENCE, "durations x1.10")
        assert alarm_days.evaluate(prof, slower, windows).rmse.mean() >= 0.99
        assert alarm_days.evaluate(prof, validation, windows).rmse.mean() <= 0.02


def test_a_10_percent_longer_distance_is_caught_in_random_windows_of_held_out_days():
    """2021-01, whose distances have the heaviest tail of the four reference months (a 10% longer distance moves the
    KS distance least), on the weeks of its second fold: random 5,000-ride windows of longer rides alarm in 85%,
    unchanged ones in none. Their distance threshold is significance against sampling alone (random halves of the
    month), the week the rides came from being an effect the floor judges; set against the other fold's weeks, it
    was 2.90 instead of 2.07 and caught 23.5% (the four months pooled, bench: 62.5-99.5% before, 93.5-100% now)."""
    prof, training, _ = alarm_days.held_out("2021-01", 1)
    rows = list(np.random.default_rng(8).integers(0, len(training), (200, DEFAULT_WINDOW)))
    longer = alarm_days.evaluate(prof, alarm_days.altered(training, "2021-01", "distance x1.10"), rows).dataset
    assert longer.mean() >= 0.80
    assert alarm_days.evaluate(prof, training, rows).dataset.mean() <= 0.02


def test_a_10_percent_longer_distance_is_caught_in_consecutive_windows_as_deployed():
    """As a deployment meets it: the 2023-01 model's profile of its whole training month, against 2023-03, which its
    calibration never saw, as one stream. Consecutive 5,000-ride windows of rides 10% longer are confirmed in all
    24 full windows, unchanged ones in none. Consecutive thresholds come from each week against the rest of its
    month; with two folds of alternate weeks (references of half a month) the threshold was 3.65 instead of 2.91 and
    caught 73%."""
    prof = alarm_days.whole("2023-01")
    after = alarm_days.month_rides("2023-03", "2023-01")
    stream = [(0, len(after))]
    longer = alarm_days.altered(after, "2023-01", "distance x1.10")
    assert confirmed_share(prof, longer, "dataset", segments=stream) >= 0.90
    assert confirmed_share(prof, after, "dataset", segments=stream) <= 0.02


def test_odometer_glitches_raise_the_outlier_alarm(held):
    """20% of rides at 150 miles: no distance drift (beyond 100 miles a distance counts as missing), but the
    outlier share alarm, calibrated on held-out windows, fires; unchanged rides do not raise it."""
    prof, training, _ = held
    assert confirmed_share(prof, training, "outliers") == 0.0
    glitched = training.assign(
        trip_distance=np.where(np.random.default_rng(6).random(len(training)) < 0.2, 150.0, training["trip_distance"])
    )
    assert confirmed_share(prof, glitched, "outliers", 1000) >= 0.95


def test_the_spring_forward_night_is_an_ordinary_night():
    """1,000-ride windows over the night of 2023-03-12 (the clock skips 2 a.m.): the hour test counts 23 hours, not
    24, and stays quiet (98% of such windows were flagged when slots used the naive wall clock)."""
    prof, days, _ = alarm_days.held_out("2023-03", 1)  # 12 March is in the second block of days: held out
    pickup = days["pickup_datetime"]
    night = np.flatnonzero((pickup >= "2023-03-11 20:00") & (pickup < "2023-03-12 08:00"))
    windows = np.stack([np.arange(start, start + 1000) for start in night[::20] if start + 1000 <= len(days)])
    arrays = prof.arrays()
    judged = verdicts(prof, arrays, days, windows, {"pickup_hour": drift_scores.TIME})
    assert len(judged) >= 10
    assert rate(v.dataset_drift for v in judged) <= 0.05


def test_a_window_of_one_evening_meets_the_evening_reference(built, arrays, reference):
    """Re-weighting to the window's hours: evening rides of one day compared with the reference's evening rides do
    not drift, while the same rides against the unweighted whole-day reference do (distance is longer at night)."""
    evening = reference[
        (reference["pickup_datetime"].dt.date == pd.Timestamp("2022-01-19").date())
        & reference["pickup_datetime"].dt.hour.between(17, 23)
    ]
    verdict = drift.assess(built, arrays, evening, "online", ONLINE_FEATURES)
    assert not verdict.dataset_drift, verdict


def test_batch_month_against_the_profile_and_month_over_month():
    """Months of tens of thousands of rides: drifted since training two years on, quiet month over month."""
    old = calibration.build_profile(
        scored("2021-01", "2021-01"),
        scored("2021-02", "2021-01"),
        model_tag="old",
        reference_month="2021-01",
        validation_month="2021-02",
        sizes=(5000,),
    )
    old_arrays = old.arrays()

    def month_verdict(reference_arrays, month: str) -> drift.DriftVerdict:
        return drift.assess(old, reference_arrays, scored(month, "2021-01"), "batch", BATCH_FEATURES, month=True)

    assert not month_verdict(old_arrays, "2021-02").dataset_drift
    since_training = month_verdict(old_arrays, "2023-03")
    assert since_training.dataset_drift
    assert {"PULocationID", "trip_distance", "fare_amount"} <= {f.feature for f in since_training.features if f.drifted}
    for previous, month in (("2022-01", "2022-02"), ("2023-02", "2023-03"), ("2023-03", "2023-04")):
        before = profile.describe(scored(previous, "2021-01")).arrays()
        assert not month_verdict(before, month).dataset_drift, (previous, month)


def test_profile_is_json_and_round_trips_through_duckdb(built):
    conn = duckdb.connect()
    profile.save(conn, built)
    profile.save(conn, built)  # replaced, not duplicated
    assert conn.execute("SELECT count(*) FROM reference_profile").fetchone() == (1,)
    loaded = profile.load(conn, built.model_tag)
    assert loaded == built
    assert profile.load(conn, "other:tag") is None
    assert loaded.validation_month == VALIDATION
    assert set(loaded.floors) == set(drift_scores.PROFILED)
    assert set(loaded.features) == set(drift_scores.PROFILED)


def test_outliers_are_rare_in_the_reference_and_found_in_glitches(built, reference):
    shares = built.outliers.reference_shares
    # Odometer glitches (beyond 100 miles) come on top of the 0.1% beyond the 99.9th percentile.
    assert shares["distance_above_p999"] <= 0.003 and shares["speed_above_p999"] <= 0.003
    glitches = reference.head(100).assign(
        trip_distance=[250_000.0] * 10 + [0.0] * 90, duration=[5.0] * 10 + [59.0] * 90
    )
    flags = built.outliers.flags(glitches)
    assert flags["distance_above_p999"].sum() == 10 and flags["speed_above_p999"].sum() == 10
    assert flags["zero_distance_long_ride"].sum() == 90


def test_drifted_features_rank_by_model_importance():
    def feature(name: str, score: float) -> drift.FeatureDrift:
        return drift.FeatureDrift(name, drift_scores.NUMERICAL, "ks", score, 1.0, "ks_distance", 0.1, 1000, score > 1)

    verdict = drift.DriftVerdict((feature("fare_amount", 9.0), feature("trip_distance", 2.0), feature("x", 0.5)), 0.05)
    ranked = drift.importance_ranking(verdict, {"trip_distance": 0.8, "PULocationID": 0.2})
    assert [f.feature for f, _, _ in ranked] == ["trip_distance", "fare_amount"]
    assert ranked[1][1] == 0.0  # the model does not use fares
    equal = drift.importance_ranking(verdict, None)
    assert [f.feature for f, _, _ in equal] == ["fare_amount", "trip_distance"]
