"""Pickup times as the drift tests see them: (rest day, hour) slots in New York time, true elapsed hours, the time
span a window covers, and the hours of each slot inside it.

TLC pickups (and the service's `pickup_datetime`) are New York wall-clock times without a zone. Slots are read off
the wall clock, since riders live by it; spans and hours are counted in elapsed time (UTC), so the spring-forward
night has 23 hours and the fall-back night 25, and a window over either meets the hours that really passed.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass

ZONE = "America/New_York"
# (Monday-Thursday, Friday, Saturday, Sunday/holiday) x hour of day.
SLOTS = 96
# The share of the earliest and of the latest pickups left out of a window's time span.
SPAN_TRIM = 0.002
# A pickup this many hours away from the rest of its window, at either end, is a stray (a wrong clock, a ride logged
# days late): it is left out of the span at any window size, up to `STRAY_SHARE` of the window.
STRAY_GAP_HOURS = 24.0
STRAY_SHARE = 0.01


@functools.cache
def _holidays() -> np.ndarray:
    """US federal holidays 2000-2040 as days since the epoch: New York rides on them like on a Sunday."""
    from pandas.tseries.holiday import USFederalHolidayCalendar

    days = USFederalHolidayCalendar().holidays("2000-01-01", "2040-12-31").to_numpy("datetime64[D]")
    return days.astype("int64")


def slot_of(local: np.ndarray) -> np.ndarray:
    """The (day type, hour) slot 0..95 of datetime64 New York wall-clock times. Day types: Monday to Thursday,
    Friday, Saturday, Sunday or a federal holiday; a Saturday night is not a Sunday night, nor a Friday a Monday."""
    hours = local.astype("datetime64[h]").astype("int64")
    days = hours // 24
    # 1970-01-01 was a Thursday: weekday = (days + 3) % 7 with Monday = 0.
    weekday = (days + 3) % 7
    day_type = np.select([np.isin(days, _holidays()) | (weekday == 6), weekday == 5, weekday == 4], [3, 2, 1], 0)
    return day_type * 24 + hours % 24


def epoch_hours(local: np.ndarray) -> np.ndarray:
    """Elapsed hours since the epoch (UTC) of New York wall-clock times: the hour the clock skips in spring does not
    exist (a time inside it moves forward), an hour the clock repeats in autumn counts twice (read as daylight time)."""
    import pandas as pd

    index = pd.DatetimeIndex(np.asarray(local, dtype="datetime64[ns]"))
    utc = index.tz_localize(ZONE, ambiguous=np.ones(len(index), dtype=bool), nonexistent="shift_forward")
    return utc.asi8 / 3.6e12


# Elapsed hours are read off the wall clock a block at a time, each block once: a profile's calibration lays out
# some ten thousand windows' hours, and converting each window's hours to New York time afresh was most of its time.
_BLOCK_HOURS = 4096  # about 171 days


@functools.lru_cache(maxsize=512)  # 239 years of hours, 16 MB
def _block_slots(block: int) -> np.ndarray:
    """Slot of each elapsed hour of `block` (hours `block * _BLOCK_HOURS` onwards) on the New York wall clock."""
    import pandas as pd

    hours = np.arange(block * _BLOCK_HOURS, (block + 1) * _BLOCK_HOURS)
    utc = pd.DatetimeIndex(hours.astype("datetime64[h]")).tz_localize("UTC")
    slots = slot_of(utc.tz_convert(ZONE).tz_localize(None).to_numpy("datetime64[ns]"))
    slots.flags.writeable = False  # shared by every caller
    return slots


def _local_slots_of_hours(hours: np.ndarray) -> np.ndarray:
    """Slot of each of the consecutive elapsed hours `hours` (hours since the epoch, UTC) on the New York wall
    clock."""
    first, last = int(hours[0]) // _BLOCK_HOURS, int(hours[-1]) // _BLOCK_HOURS
    blocks = [_block_slots(block) for block in range(first, last + 1)]
    return (blocks[0] if len(blocks) == 1 else np.concatenate(blocks))[hours - first * _BLOCK_HOURS]


def slot_hours(start: float, end: float) -> np.ndarray:
    """Elapsed hours of each slot inside [start, end] (hours since the epoch), partial hours pro rata."""
    first, last = int(np.floor(start)), int(np.floor(end))
    hours = np.arange(first, last + 1)
    covered = np.minimum(hours + 1, end) - np.maximum(hours, start)
    if len(hours) == 1 and end == start:
        covered = np.ones(1)
    return np.bincount(_local_slots_of_hours(hours), weights=np.maximum(covered, 0.0), minlength=SLOTS)


def day_slot_hours(local: np.ndarray) -> np.ndarray:
    """Hours of each slot over the whole New York days that `local` times fall on: what a reference made of whole
    days (a month, or some of its days) covers."""
    days = np.unique(np.asarray(local, dtype="datetime64[D]"))
    if len(days) == 0:
        return np.zeros(SLOTS)
    starts = epoch_hours(days.astype("datetime64[ns]"))
    ends = epoch_hours((days + 1).astype("datetime64[ns]"))
    return sum((slot_hours(start, end) for start, end in zip(starts, ends, strict=True)), np.zeros(SLOTS))


def time_span(pickup_hours: np.ndarray) -> tuple[float, float]:
    """[first, last] pickup of a window in elapsed hours: the `SPAN_TRIM` extremes and strays left out."""
    hours = np.sort(pickup_hours[np.isfinite(pickup_hours)])
    if len(hours) == 0:
        return 0.0, 0.0
    # np.quantile(hours, q, method="nearest") read off the sorted hours, without its per-call overhead (a profile's
    # calibration spans some ten thousand windows): numpy's index is around((n - 1) * q).
    low, high = (hours[int(np.around((len(hours) - 1) * q))] for q in (SPAN_TRIM, 1 - SPAN_TRIM))
    most = max(1, int(STRAY_SHARE * len(hours)))
    gaps = np.diff(hours)
    if len(gaps):
        head = np.flatnonzero(gaps[:most] > STRAY_GAP_HOURS)
        tail = np.flatnonzero(gaps[::-1][:most] > STRAY_GAP_HOURS)
        if len(head) and len(hours) > 2 * most:
            low = max(low, hours[head[-1] + 1])
        if len(tail) and len(hours) > 2 * most:
            high = min(high, hours[len(hours) - 2 - tail[-1]])
    return float(low), float(high)
