"""The RMSE alarm's sequential rules judged as the issue asks, on held-out days: shared by
bench/bench_drift_calibration.py (the "Sequential rule" tables) and tests/test_drift_calibration.py (the picks and
their figures pinned). No Dagster, no DuckDB: the validation month's rides scored by the training month's model, cut
into non-overlapping chunks as the online job cuts the newest feedback (`online.chunk_means`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from taxi_assets.core import online, profile
from taxi_assets.core.model import PREDICTION, TARGET
from tests.support import alarm_days
from tests.support.drift_data import next_month

CHUNK = online.RMSE_CHUNK
# The slowdown CUSUM's grid (`online.slowdown_cusum`): a 10% slowdown moves a chunk's mean log ratio by 0.095, so k
# spans up to about half of it.
SLOWDOWN_ALLOWANCES = tuple(np.round(np.arange(0.0, 0.045, 0.01), 2))
SLOWDOWN_LIMITS = tuple(np.round(np.arange(0.2, 1.25, 0.1), 1))
# The distance CUSUM's grid (`online.distance_cusum`): distances 10% longer move a chunk's mean log distance by
# about 0.092, and the validation months' own distances differ from the reference by up to 0.02 (a quarter of it).
DISTANCE_ALLOWANCES = (0.02, 0.03, 0.04, 0.05, 0.06)
DISTANCE_LIMITS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
# The budget: unchanged days with any alarm.
DAY_BUDGET = 0.05


@dataclass(frozen=True)
class Chunks:
    """One block of held-out days, chunk by chunk: log RMSE over the reference's, mean log ratio over the
    reference's, and the day each chunk ends on."""

    log_rmse: np.ndarray
    log_ratio: np.ndarray
    day: np.ndarray


def block_chunks(frame: pd.DataFrame, reference: pd.DataFrame, scale: float = 1.0) -> list[Chunks]:
    """Per block of days of `frame` (validation rides sorted by pickup, durations times `scale`), each
    non-overlapping CHUNK of rides from the block's start against `reference` (the validation month's other days):
    the statistics the online job's CUSUMs add up (`online.rmse_cusum`, `online.slowdown_cusum`)."""
    prediction, actual = frame[PREDICTION].to_numpy("float64"), frame[TARGET].to_numpy("float64") * scale
    reference_mse = float(((reference[PREDICTION] - reference[TARGET]).to_numpy("float64") ** 2).mean())
    reference_ratio = float(profile.log_ratios(reference[PREDICTION], reference[TARGET]).mean())
    day = frame["pickup_datetime"].to_numpy("datetime64[D]").astype(str)
    out = []
    for start, end in alarm_days.segments_of(frame):
        ends = np.arange(start + CHUNK, end + 1, CHUNK)
        squared = (prediction[start:end] - actual[start:end]) ** 2
        ratios = profile.log_ratios(prediction[start:end], actual[start:end])
        mse = squared[: len(ends) * CHUNK].reshape(-1, CHUNK).mean(axis=1)
        mean_ratio = ratios[: len(ends) * CHUNK].reshape(-1, CHUNK).mean(axis=1)
        out.append(Chunks(0.5 * np.log(mse / reference_mse), mean_ratio - reference_ratio, day[ends - 1]))
    return out


Rule = tuple[float, float, float, float]  # RMSE k, h; slowdown k, h (h inf: no slowdown CUSUM)


def rule_alarms(chunks: Chunks, rule: Rule) -> np.ndarray:
    """After each chunk of a block, whether either CUSUM, restarted at the block's start, is beyond its limit."""
    rmse_k, rmse_h, slowdown_k, slowdown_h = rule
    return (online.cusum_path(chunks.log_rmse - rmse_k) > rmse_h) | (
        online.cusum_path(chunks.log_ratio - slowdown_k) > slowdown_h
    )


def sequential_figures(unchanged: list[Chunks], slower: list[Chunks], rule: Rule, size: int) -> tuple[float, float]:
    """A rule's share of unchanged days with an alarm, and of full windows (2 * `size` rides or more into a block,
    where the sliding table's full windows are) alarmed with rides 10% slower."""
    alarmed = pd.Series(np.concatenate([rule_alarms(z, rule) for z in unchanged]))
    days = float(alarmed.groupby(np.concatenate([z.day for z in unchanged])).any().mean())
    found = np.concatenate([rule_alarms(z, rule)[2 * size // CHUNK :] for z in slower])
    return days, float(found.mean())


def pick(figures: dict[tuple[Rule, str], tuple[float, float]], rules: list[Rule], months: list[str]) -> Rule | None:
    """Of the rules with at most DAY_BUDGET of days alarmed in each of `months`, the one with the best detection in
    the worst month; among equals, the fewest days alarmed, then the best detection on average, then the most
    cautious (largest allowances, then limits). None when no rule keeps the budget."""
    allowed = [rule for rule in rules if all(figures[(rule, m)][0] <= DAY_BUDGET for m in months)]
    if not allowed:
        return None

    def merit(rule: Rule) -> tuple[float, ...]:
        days, found = zip(*(figures[(rule, m)] for m in months), strict=True)
        return min(found), -sum(days), sum(found), rule[2], rule[0], rule[3], rule[1]

    return max(allowed, key=merit)


def held_out_chunks(month: str, scale: float = 1.0) -> list[Chunks]:
    """The chunks of the held-out blocks of days of `month`'s validation month, both folds, durations times `scale`,
    each against the validation month's other days (the days the profile's residuals come from)."""
    validation = alarm_days.month_rides(next_month(month), month)
    out = []
    for fold in (0, 1):
        held = alarm_days.fold_of(validation, fold)
        out += block_chunks(validation[held].reset_index(drop=True), validation[~held], scale)
    return out


@dataclass(frozen=True)
class DistanceChunks:
    """One block of held-out days, chunk by chunk: the mean of the rides' distance deviations from the profile's
    slot means (`ReferenceProfile.distance_deviations`), and the day each chunk ends on."""

    means: np.ndarray
    day: np.ndarray


def distance_block_chunks(prof: profile.ReferenceProfile, frame: pd.DataFrame, scale: float = 1.0) -> list:
    """Per block of days of `frame` (rides sorted by pickup, distances times `scale`), each non-overlapping CHUNK
    of rides with a plausible distance from the block's start: what the distance CUSUM adds up."""
    pickup = frame["pickup_datetime"].to_numpy("datetime64[ns]")
    deviations = prof.distance_deviations(frame["trip_distance"].to_numpy("float64") * scale, pickup)
    day = frame["pickup_datetime"].to_numpy("datetime64[D]").astype(str)
    out = []
    for start, end in alarm_days.segments_of(frame):
        known = np.isfinite(deviations[start:end])
        values, days = deviations[start:end][known], day[start:end][known]
        count = len(values) // CHUNK
        out.append(
            DistanceChunks(values[: count * CHUNK].reshape(-1, CHUNK).mean(axis=1), days[CHUNK - 1 :: CHUNK][:count])
        )
    return out


def distance_alarms(chunks: DistanceChunks, rule: Rule) -> np.ndarray:
    """After each chunk of a block, whether the two-sided distance CUSUM (k, h = `rule`[:2]), restarted at the
    block's start, is beyond its limit."""
    allowance, limit = rule[:2]
    return (online.cusum_path(chunks.means - allowance) > limit) | (
        online.cusum_path(-chunks.means - allowance) > limit
    )


def distance_figures(
    quiet: list[DistanceChunks], later: list[DistanceChunks], longer: list[DistanceChunks], rule: Rule, size: int
) -> tuple[float, float, float]:
    """A distance rule's share of days with an alarm on held-out training days (`quiet`) and held-out validation
    days (`later`), and of full windows (2 * `size` rides or more into a block) alarmed with distances 10% longer."""

    def days(blocks: list[DistanceChunks]) -> float:
        alarmed = pd.Series(np.concatenate([distance_alarms(z, rule) for z in blocks]))
        return float(alarmed.groupby(np.concatenate([z.day for z in blocks])).any().mean())

    found = np.concatenate([distance_alarms(z, rule)[2 * size // CHUNK :] for z in longer])
    return days(quiet), days(later), float(found.mean())


def held_out_distance_chunks(month: str) -> tuple[list, list, list]:
    """The distance chunks of `month`'s held-out training days, unchanged and with distances 10% longer, and of its
    validation month's held-out days, both folds, each against the profile built without them
    (`alarm_days.held_out`: slot means of the other days of both months)."""
    quiet, later, longer = [], [], []
    for fold in (0, 1):
        prof, held, held_validation = alarm_days.held_out(month, fold)
        quiet += distance_block_chunks(prof, held)
        longer += distance_block_chunks(prof, held, 1.10)
        later += distance_block_chunks(prof, held_validation)
    return quiet, later, longer
