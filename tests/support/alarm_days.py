"""The alarms as a user lives with them, on days the calibration never saw: shared by
bench/bench_drift_calibration.py and tests/test_alarm_days.py (no Dagster, no DuckDB).

Protocol (docs: shared notes "alarms over time"): the training month's days are cut into blocks of
`calibration.BLOCK_DAYS` days; a profile is built from the odd blocks and evaluated on the even ones, and the other way
round. On a held-out stream the sliding window of the last `size` rides is evaluated every `step` rides (inside one
block, so that no window joins days that were not consecutive), and every clock hour is a window of its own. A day
has an alarm when any evaluation of that day raised one: dataset drift, prediction drift, the RMSE bound or the
outlier share. The month after the validation month is evaluated whole against the profile of the whole training
month.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taxi_assets.core import calibration, drift, drift_scores, online, timeslots
from taxi_assets.core.drift_scores import NUMERICAL, ONLINE_FEATURES
from taxi_assets.core.model import PREDICTION, TARGET, predict
from taxi_assets.core.profile import ReferenceProfile, log_ratios
from tests.support.drift_data import model, next_month, scored

STEP = 1000


@dataclass(frozen=True)
class Evaluations:
    """Per evaluation: its day and which alarms it raised."""

    day: np.ndarray
    dataset: np.ndarray
    prediction: np.ndarray
    rmse: np.ndarray
    outliers: np.ndarray

    @property
    def any(self) -> np.ndarray:
        return self.dataset | self.prediction | self.rmse | self.outliers

    def day_share(self, alarms: np.ndarray | None = None) -> float:
        """Share of the days evaluated with at least one alarm."""
        alarms = self.any if alarms is None else alarms
        days = pd.Series(alarms).groupby(self.day).any()
        return float(days.mean()) if len(days) else 0.0

    @staticmethod
    def concat(parts: list[Evaluations]) -> Evaluations:
        return Evaluations(*(np.concatenate([getattr(p, f) for p in parts]) for f in Evaluations.__dataclass_fields__))


def sliding(segments: list[tuple[int, int]], size: int, step: int = STEP) -> np.ndarray:
    """Rows of the sliding window of the last `size` rides, evaluated every `step` rides inside each segment."""
    ends = [np.arange(start + size, end + 1, step) for start, end in segments if end - start >= size]
    ends = np.concatenate(ends) if ends else np.zeros(0, dtype="int64")
    return ends[:, None] - size + np.arange(size)


def hours(frame: pd.DataFrame) -> list[np.ndarray]:
    """Rows of each clock hour of pickups (the service's `hour` window)."""
    hour = frame["pickup_datetime"].dt.floor("h")
    return [rows for rows in frame.groupby(hour).indices.values()]


def evaluate(prof: ReferenceProfile, frame: pd.DataFrame, windows: list[np.ndarray] | np.ndarray) -> Evaluations:
    """Every alarm of each window (rows of `frame`, sorted by pickup, scored, with TARGET as feedback)."""
    reference = prof.arrays()
    groups: dict[int, list[int]] = {}
    for index, rows in enumerate(windows):
        groups.setdefault(len(rows), []).append(index)
    result = {name: np.zeros(len(windows), dtype=bool) for name in ("dataset", "prediction", "rmse", "outliers")}
    rides = drift_scores.encode(reference, frame, {**ONLINE_FEATURES, PREDICTION: NUMERICAL})
    flagged = prof.outliers.flags(frame).any(axis=1).to_numpy()
    squared = (frame[PREDICTION] - frame[TARGET]).to_numpy("float64") ** 2
    ratios = log_ratios(frame[PREDICTION].to_numpy("float64"), frame[TARGET].to_numpy("float64"))
    for size, indices in groups.items():
        rows = np.stack([windows[i] for i in indices])
        features = drift.window_verdicts(prof, reference, rides, "online", ONLINE_FEATURES, rows)
        outputs = drift.window_verdicts(prof, reference, rides, "online", {PREDICTION: NUMERICAL}, rows)
        for i, window, verdict, output in zip(indices, rows, features, outputs, strict=True):
            kind = drift_scores.window_kind(rides.hours[window])
            alarms = online.alarms(
                prof,
                verdict,
                output.feature(PREDICTION),
                size,
                kind,
                float(np.sqrt(squared[window].mean())),
                size,
                float(flagged[window].mean()),
                float(ratios[window].mean()),
            )
            for name, value in alarms.items():
                result[name][i] = value
    day = np.array([frame["pickup_datetime"].iloc[w[-1]].strftime("%Y-%m-%d") for w in windows])
    return Evaluations(day, **result)


def segments_of(frame: pd.DataFrame) -> list[tuple[int, int]]:
    """Contiguous row ranges of the blocks of days of a frame sorted by pickup."""
    blocks = calibration.day_blocks(frame["pickup_datetime"].to_numpy("datetime64[ns]"))
    change = np.flatnonzero(np.diff(blocks)) + 1
    bounds = [0, *change.tolist(), len(frame)]
    return list(zip(bounds, bounds[1:], strict=False))


def month_rides(month: str, model_month: str) -> pd.DataFrame:
    """The rides of `month` scored by the `model_month` model, stray pickups of other months left out."""
    frame = scored(month, model_month)
    return frame[frame["pickup_datetime"].to_numpy("datetime64[M]").astype(str) == month].reset_index(drop=True)


def fold_of(frame: pd.DataFrame, fold: int) -> np.ndarray:
    return calibration.day_blocks(frame["pickup_datetime"].to_numpy("datetime64[ns]")) % 2 == fold


@functools.cache
def held_out(month: str, fold: int) -> tuple[ReferenceProfile, pd.DataFrame, pd.DataFrame]:
    """The profile of the `month` model built without the days of `fold` of its training month and of its
    validation month (the RMSE bound from the other days' residuals), and those held-out days of both months."""
    training, validation = month_rides(month, month), month_rides(next_month(month), month)
    held, held_validation = fold_of(training, fold), fold_of(validation, fold)
    built = calibration.build_profile(
        training[~held],
        validation[~held_validation],
        model_tag=f"hgb-{month}-{fold}",
        reference_month=month,
        validation_month=next_month(month),
    )
    return built, training[held].reset_index(drop=True), validation[held_validation].reset_index(drop=True)


@functools.cache
def whole(month: str) -> ReferenceProfile:
    return calibration.build_profile(
        scored(month, month),
        scored(next_month(month), month),
        model_tag=f"hgb-{month}",
        reference_month=month,
        validation_month=next_month(month),
    )


def altered(frame: pd.DataFrame, month: str, scenario: str) -> pd.DataFrame:
    """`frame` (rides scored by the `month` model) with a scenario applied to every ride, predictions re-made."""
    if scenario.startswith("distance x"):
        frame = frame.assign(trip_distance=frame["trip_distance"] * float(scenario.removeprefix("distance x")))
    elif scenario == "pickups +1 h":
        frame = frame.assign(pickup_datetime=frame["pickup_datetime"] + pd.Timedelta(hours=1))
    elif scenario == "busiest zone 20% to second":
        counts = frame["PULocationID"].value_counts()
        first, second = counts.index[0], counts.index[1]
        rng = np.random.default_rng(0)
        moved = (frame["PULocationID"] == first).to_numpy() & (rng.random(len(frame)) < 0.2)
        frame = frame.assign(PULocationID=np.where(moved, second, frame["PULocationID"]))
    elif scenario.startswith("durations x"):
        return frame.assign(**{TARGET: frame[TARGET] * float(scenario.removeprefix("durations x"))})
    elif scenario != "unchanged":
        raise ValueError(scenario)
    return frame.assign(**{PREDICTION: predict(model(month), frame)})


def confirmed(evaluations: Evaluations, previous: np.ndarray, windows: int = 1) -> Evaluations:
    """Each alarm only where the `windows` evaluations before it (`previous[i]`, `previous[previous[i]]`...; -1 for
    none) raised it too (`online.confirmed`)."""
    fields = {name: getattr(evaluations, name).copy() for name in online.ALARMS}
    before = np.arange(len(previous))
    for _ in range(windows):
        before = np.where(before >= 0, previous[np.maximum(before, 0)], -1)
        for name, alarms in fields.items():
            alarms &= (before >= 0) & getattr(evaluations, name)[np.maximum(before, 0)]
    return Evaluations(evaluations.day, **fields)


def previous_sliding(segments: list[tuple[int, int]], size: int, step: int = STEP) -> np.ndarray:
    """For each evaluation of `sliding(segments, size, step)`, the index of the evaluation of the `size` rides
    before its own (`online.confirmed`: no ride in common), -1 when its segment has none."""
    previous, base, lag = [], 0, max(size // step, 1)
    for start, end in segments:
        count = len(np.arange(start + size, end + 1, step)) if end - start >= size else 0
        previous.append(np.where(np.arange(count) >= lag, base + np.arange(count) - lag, -1))
        base += count
    return np.concatenate(previous) if previous else np.zeros(0, dtype="int64")


def previous_hours(frame: pd.DataFrame) -> np.ndarray:
    """For each window of `hours(frame)`, the index of the clock hour before it (-1 when that hour had no rides)."""
    keys = list(frame.groupby(frame["pickup_datetime"].dt.floor("h")).indices)
    position = {key: index for index, key in enumerate(keys)}
    return np.array([position.get(key - pd.Timedelta(hours=1), -1) for key in keys], dtype="int64")


def sliding_alarms(
    prof: ReferenceProfile, frame: pd.DataFrame, segments: list[tuple[int, int]], size: int
) -> tuple[Evaluations, np.ndarray]:
    """The alarms of the sliding window as the online job raises them, and `previous_sliding`: each verdict
    confirmed by the window of the rides before it, but the RMSE one of a consecutive window, which is the CUSUMs of
    the feedback before the evaluation's end (`online.feedback_cusums`), and its dataset one, also raised by the
    distance CUSUM of the rides before the evaluation's end (`online.distance_cusum`), both inside its segment (a
    segment's days follow other days in service)."""
    previous = previous_sliding(segments, size)
    windows = sliding(segments, size)
    evaluations = confirmed(evaluate(prof, frame, windows), previous)
    prediction, actual = frame[PREDICTION].to_numpy("float64"), frame[TARGET].to_numpy("float64")
    pickup = frame["pickup_datetime"].to_numpy("datetime64[ns]")
    hours_of_pickup = timeslots.epoch_hours(pickup)
    deviations = prof.distance_deviations(frame["trip_distance"].to_numpy("float64"), pickup)
    lookback = online.RMSE_CHUNK * online.RMSE_CUSUM_CHUNKS
    starts = [start for start, stop in segments if stop - start >= size for _ in range(start + size, stop + 1, STEP)]
    rmse, dataset = evaluations.rmse.copy(), evaluations.dataset.copy()
    for i, (start, rows) in enumerate(zip(starts, windows, strict=True)):
        if drift_scores.window_kind(hours_of_pickup[rows]) == drift_scores.CONSECUTIVE:
            recent = slice(max(start, rows[-1] + 1 - lookback), rows[-1] + 1)
            rmse[i] = online.cusum_alarm(*online.feedback_cusums(prediction[recent], actual[recent], prof))
            if deviations is not None:
                cusum = online.distance_cusum(deviations[recent])
                dataset[i] |= cusum is not None and cusum > online.DISTANCE_CUSUM_LIMIT
    return dataclasses.replace(evaluations, rmse=rmse, dataset=dataset), previous


def stream_alarms(
    prof: ReferenceProfile, frame: pd.DataFrame, segments: list[tuple[int, int]], size: int, *, split: bool = False
) -> Evaluations | tuple[Evaluations, Evaluations]:
    """The alarms a user sees on a stream: the sliding window (`sliding_alarms`) and every clock hour, confirmed
    by the two hours before (`online.confirmed`); with `split`, the two apart."""
    slide, _ = sliding_alarms(prof, frame, segments, size)
    hour = confirmed(
        evaluate(prof, frame, hours(frame)), previous_hours(frame), online.agreeing_windows(online.HOUR_WINDOW)
    )
    return (slide, hour) if split else Evaluations.concat([slide, hour])
