"""False-alarm and detection rates of the online alarms on the real TLC months, on days the calibration never saw,
per evaluation and per day as a user lives with them (prints tables; not a test).

    .venv/bin/python bench/bench_drift_calibration.py [--months 2021-01 2022-01 2023-01 2023-03] [--size 5000]
        [--scenarios "distance x1.10" ...] [--sizes 1000 2000 5000] [--random-windows 100]

Protocol (tests/support/alarm_days.py): for each reference month, the `hgb_te` model trained on it; its days in blocks
of 7, a profile built from alternate blocks (and the validation month) and evaluated on the others, both ways round.
Unchanged days: the sliding `last_<size>` window evaluated every 1,000 rides plus every clock hour, an alarm only when
the window of the rides before it (for an hour, the two hours before) agrees (what `taxi_online_alarm` pushes); a day
counts when any alarm (dataset, prediction, RMSE, outlier share) was raised that day. The month after the validation
month is evaluated against the whole month's profile. Detection: scenarios applied to the held-out days, predictions
re-made; the share of full windows alarmed (sliding windows of consecutive rides, confirmed; random rides, one
evaluation) and the delay in rides from a change starting mid-week (held-out weeks joined) to the first confirmed alarm.
The same figures as deployed: the whole training month's profile against the month after the validation month (m+2).
The hour windows' own alarms, confirmed by one hour or by the rule's two. Then the batch table (month level).
"""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from taxi_assets.core import drift, drift_scores, online, profile  # noqa: E402
from taxi_assets.core.drift import DEFAULT_WINDOW  # noqa: E402
from taxi_assets.core.drift_scores import BATCH_FEATURES, ONLINE_FEATURES  # noqa: E402
from taxi_assets.core.model import PREDICTION, TARGET  # noqa: E402
from tests.support import alarm_days  # noqa: E402
from tests.support.cusum_rules import (  # noqa: E402
    CHUNK,
    DAY_BUDGET,
    DISTANCE_ALLOWANCES,
    DISTANCE_LIMITS,
    SLOWDOWN_ALLOWANCES,
    SLOWDOWN_LIMITS,
    Rule,
    distance_figures,
    held_out_chunks,
    held_out_distance_chunks,
    pick,
    sequential_figures,
)
from tests.support.drift_data import MONTHS, next_month, scored  # noqa: E402

REFERENCE_MONTHS = ["2021-01", "2022-01", "2023-01", "2023-03"]
SCENARIOS = {
    # No change: the dataset alarm's false alarms on held-out days, consecutive and random windows.
    "unchanged": "dataset",
    "distance x1.05": "dataset",
    "distance x1.10": "dataset",
    "distance x1.25": "dataset",
    "pickups +1 h": "dataset",
    "busiest zone 20% to second": "dataset",
    "durations x1.10": "rmse",
    "durations x1.25": "rmse",
    # No change: the RMSE alarm's false alarms on held-out validation days, consecutive and random windows.
    "durations x1.00": "rmse",
}
# What the hour windows' rule is measured on: no change, and the changes `last_5000` catches in every full window.
HOUR_SCENARIOS = ("unchanged", "distance x1.25", "durations x1.25")
OLD_MODEL = "2021-01"
# Random windows drawn per stream (two streams, the folds, on held-out days; one as deployed). At 100, a share
# near 90% has a standard error of 2.1 points on held-out days: --random-windows 1000 settles one against a goal.
RANDOM_WINDOWS = 100
MOM_PAIRS = [(a, b) for a, b in zip(MONTHS, MONTHS[1:], strict=False) if next_month(a) == b]


def unchanged_days(months: list[str], size: int) -> None:
    print(f"\nUnchanged traffic, held-out days (window last_{size} every {alarm_days.STEP} rides + hour windows)")
    print(
        f"{'month':22s} {'evals':>6s} {'dataset':>8s} {'predict':>8s} {'rmse':>8s} {'outlier':>8s} {'days':>6s}"
        f" {'days w/ alarm':>14s}"
    )
    for month in months:
        for label, index in ((month, 1), (next_month(month) + " (val)", 2)):
            parts = {"sliding": [], "hour": []}
            for fold in (0, 1):
                prof, frame = alarm_days.held_out(month, fold)[0], alarm_days.held_out(month, fold)[index]
                streams = alarm_days.stream_alarms(prof, frame, alarm_days.segments_of(frame), size, split=True)
                for kind, evaluations in zip(("sliding", "hour"), streams, strict=True):
                    parts[kind].append(evaluations)
            joined = {kind: alarm_days.Evaluations.concat(value) for kind, value in parts.items()}
            row(label + " held", alarm_days.Evaluations.concat(list(joined.values())), joined)
        after = next_month(next_month(month))
        if after in MONTHS:
            frame = alarm_days.month_rides(after, month)
            row(f"{after} (m+2)", alarm_days.stream_alarms(alarm_days.whole(month), frame, [(0, len(frame))], size))


def row(label: str, evaluations: alarm_days.Evaluations, parts: dict | None = None) -> None:
    rates = [float(getattr(evaluations, name).mean()) for name in ("dataset", "prediction", "rmse", "outliers")]
    days = len(set(evaluations.day))
    split = ""
    if parts:
        split = (
            "  (days / evaluations with an alarm: "
            + ", ".join(f"{kind} {value.day_share():.1%} / {value.any.mean():.2%}" for kind, value in parts.items())
            + ")"
        )
    print(
        f"{label:22s} {len(evaluations.day):6d} "
        + " ".join(f"{r:8.2%}" for r in rates)
        + f" {days:6d} {evaluations.day_share():14.1%}{split}"
    )


def detection(
    months: list[str], sizes: list[int], rng: np.random.Generator, scenarios: list[str], windows: int
) -> None:
    print(
        "\nDetection on held-out days: confirmed alarms in full sliding windows (consecutive rides), one evaluation"
        f" of {windows} random windows per fold, median delay (rides) from a change starting mid-week to the first"
        " confirmed alarm"
    )
    print(detection_header(sizes))
    for scenario in scenarios:
        index = held_index(scenario)
        for month in months:
            streams = []
            for fold in (0, 1):
                held = alarm_days.held_out(month, fold)[index]
                streams.append((alarm_days.held_out(month, fold)[0], held, alarm_days.segments_of(held)))
            print(
                f"{scenario:28s} {month:8s} "
                + " ".join(cell(streams, size, month, scenario, rng, windows) for size in sizes)
            )
    print("(* not confirmed before the held-out stream ended in one of the two folds; the median is of the other)")


def deployed_detection(
    months: list[str], sizes: list[int], rng: np.random.Generator, scenarios: list[str], windows: int
) -> None:
    """The same figures as a deployment meets them: the profile of the whole training month (its calibration on the
    training and validation months) against the month after the validation month, which it never saw, as one
    stream (every scenario, the RMSE ones included, on that month's rides)."""
    print(
        "\nDetection as deployed: whole-month profile, month after validation (m+2, never seen by the calibration),"
        f" the same columns ({windows} random windows)"
    )
    print(detection_header(sizes))
    for scenario in scenarios:
        for month in months:
            after = next_month(next_month(month))
            if after not in MONTHS:
                continue
            frame = alarm_days.month_rides(after, month)
            streams = [(alarm_days.whole(month), frame, [(0, len(frame))])]
            label = f"{month}>{after}"
            print(
                f"{scenario:28s} {label:8s} "
                + " ".join(cell(streams, size, month, scenario, rng, windows) for size in sizes)
            )


def hour_detection(months: list[str], scenarios: list[str]) -> None:
    """The hour windows' own figures on held-out days, with the rule's alternatives: the share of clock hours whose
    alarm is raised when the hour before agrees, and when the `online.agreeing_windows` hours before agree."""
    needed = online.agreeing_windows(online.HOUR_WINDOW)
    print(
        "\nHour windows on held-out days: share of clock hours with an alarm, confirmed by the hour before / by the"
        f" {needed} hours before (the rule)"
    )
    print(f"{'scenario':28s} {'month':8s} {'1 hour':>8s} {f'{needed} hours':>8s}")
    for scenario in (s for s in scenarios if s in HOUR_SCENARIOS):
        index = held_index(scenario)
        for month in months:
            shares = {1: [], needed: []}
            for fold in (0, 1):
                prof, held = alarm_days.held_out(month, fold)[0], alarm_days.held_out(month, fold)[index]
                changed = alarm_days.altered(held, month, scenario)
                evaluations = alarm_days.evaluate(prof, changed, alarm_days.hours(changed))
                for windows, into in shares.items():
                    confirmed = alarm_days.confirmed(evaluations, alarm_days.previous_hours(changed), windows)
                    into.append(getattr(confirmed, SCENARIOS[scenario]))
            print(
                f"{scenario:28s} {month:8s} "
                + " ".join(f"{np.mean(np.concatenate(shares[w])):8.1%}" for w in (1, needed))
            )


def held_index(scenario: str) -> int:
    """Which held-out days of `alarm_days.held_out` a scenario is applied to: drift scenarios to the training
    month's (1); the RMSE ones to the validation month's (2), the training month's errors being in-sample."""
    return 2 if SCENARIOS[scenario] == "rmse" else 1


def detection_header(sizes: list[int]) -> str:
    return f"{'scenario':28s} {'month':8s} " + " ".join(
        f"{'consec ' + str(s):>12s} {'random ' + str(s):>12s} {'delay ' + str(s):>11s}" for s in sizes
    )


def cell(streams: list, size: int, month: str, scenario: str, rng: np.random.Generator, windows: int) -> str:
    """One size's figures over `streams` ((profile, unchanged rides sorted by pickup, segments) each): the share of
    full sliding windows with a confirmed alarm, of `windows` random windows per stream with an alarm, and the
    median delay."""
    alarm = SCENARIOS[scenario]
    consecutive, spread, delays = [], [], []
    for prof, held, segments in streams:
        changed = alarm_days.altered(held, month, scenario)
        slide, previous = alarm_days.sliding_alarms(prof, changed, segments, size)
        # Full windows: those with an evaluation before them inside the segment (the first of a block has none
        # here; in service the window goes on from the day before).
        consecutive.append(getattr(slide, alarm)[previous >= 0])
        random_rows = rng.integers(0, len(changed), (windows, size))
        spread.append(getattr(alarm_days.evaluate(prof, changed, list(random_rows)), alarm))
        delays += delay(prof, held, changed, segments, size, alarm)
    found = [d for d in delays if d is not None]
    return (
        f"{np.mean(np.concatenate(consecutive)):12.1%} {np.mean(np.concatenate(spread)):12.1%} "
        + (f"{np.median(found):11,.0f}" if found else f"{'never':>11s}")
        + ("" if len(found) == len(delays) else "*")
    )


def delay(prof, held, changed, segments, size, alarm) -> list[int | None]:
    """Rides from a change starting in the middle of the first held-out block to the first confirmed alarm, or None:
    the held-out blocks joined into one stream (a lasting change goes on past the week between them), since a
    confirmation needs the window before, which lies wholly after the change only 2 windows in."""
    middle = (segments[0][0] + segments[0][1]) // 2
    frame = pd.concat([held.iloc[:middle], changed.iloc[middle:]], ignore_index=True)
    evaluations, _ = alarm_days.sliding_alarms(prof, frame, [(0, len(frame))], size)
    ends = np.arange(size, len(frame) + 1, alarm_days.STEP)
    hits = np.flatnonzero(getattr(evaluations, alarm) & (ends > middle))
    return [int(ends[hits[0]] - middle) if len(hits) else None]


def ceiling_row(month: str, unchanged: np.ndarray, changed: np.ndarray, alpha: float) -> str:
    """One month of a ceiling table: the held-out windows' figure unchanged (mean, sd) and changed, the shift in
    sds, and the share of changed windows above an oracle threshold, the (1 - alpha) quantile of a normal fitted
    to the unchanged windows themselves (IN-SAMPLE by construction: no calibration knows held-out days this well)."""
    spread = unchanged.std(ddof=1)
    oracle = np.mean(changed > unchanged.mean() + NormalDist().inv_cdf(1 - alpha) * spread)
    return (
        f"{month:8s} {len(unchanged):8d} {unchanged.mean():6.2f} {spread:6.2f} {changed.mean():6.2f}"
        f" {(changed.mean() - unchanged.mean()) / spread:9.1f} {oracle:11.1%}"
    )


CEILING_HEADER = (
    f"{'month':8s} {'windows':>8s} {'mean':>6s} {'sd':>6s} {'x1.10':>6s} {'shift/sd':>9s} {'oracle det':>11s}"
)


def rmse_ceiling(months: list[str], size: int) -> None:
    """What any RMSE bound could do on these days: the sliding windows' RMSE on held-out validation days, unchanged
    and with durations x1.10, against the oracle bound of `ceiling_row`."""
    print(
        f"\nRMSE ceiling, held-out validation days, last_{size} every {alarm_days.STEP} rides: day-to-day spread of the"
        " window RMSE against the shift of rides 10% slower; detection with an oracle bound (IN-SAMPLE)"
    )
    print(CEILING_HEADER)
    for month in months:
        unchanged, slower = [], []
        for fold in (0, 1):
            held = alarm_days.held_out(month, fold)[2]
            rows = alarm_days.sliding(alarm_days.segments_of(held), size)
            for scale, into in ((1.0, unchanged), (1.10, slower)):
                errors = held[TARGET].to_numpy("float64") * scale - held[PREDICTION].to_numpy("float64")
                into.append(np.sqrt((errors[rows] ** 2).mean(axis=1)))
        print(ceiling_row(month, np.concatenate(unchanged), np.concatenate(slower), drift.RMSE_ALPHA))


# The CUSUM alternative to confirmation for the RMSE alarm (`sequential_rmse`): its allowance k and decision limit h,
# in log RMSE. A lasting 10% slowdown raises a 1,000-ride chunk's log RMSE by about 0.14-0.22 (the ceiling table's
# shift), so k spans a quarter to two thirds of it. The slowdown CUSUM beside it (`online.slowdown_cusum`) adds up the
# chunks' mean log ratio of actual to predicted duration, which a 10% slowdown moves by 0.095 exactly.
CUSUM_ALLOWANCES = tuple(np.round(np.arange(0.04, 0.105, 0.01), 2))
CUSUM_LIMITS = tuple(np.round(np.arange(0.2, 1.25, 0.1), 1))


def sequential_rmse(months: list[str], size: int) -> None:
    """The sequential rules of the RMSE alarm, on held-out validation days: one-sided CUSUMs over non-overlapping
    1,000-ride chunks, against the validation month's other days (the days the profile's residuals come from),
    restarted in each block. First the RMSE CUSUM alone over a grid of (k, h); then, with it as picked, the slowdown
    CUSUM beside it. Unchanged: share of held-out days with an alarm; rides 10% slower: share of full windows."""
    print(
        f"\nSequential rule for the RMSE alarm (CUSUMs over non-overlapping {CHUNK:,}-ride chunks, held-out validation"
        " days, reference = the validation month's other days): days with an alarm unchanged / full windows alarmed"
        " with rides 10% slower"
    )
    chunks = {month: (held_out_chunks(month), held_out_chunks(month, 1.10)) for month in months}
    # What each CUSUM adds up: a chunk's statistic moves by the shift with rides 10% slower, against its spread over
    # unchanged chunks (the signal-to-noise each rule has to work with).
    print(f"{'month':8s} {'log RMSE sd':>12s} {'shift':>7s} {'log ratio sd':>13s} {'shift':>7s}")
    for month, (unchanged, slower) in chunks.items():
        cells = []
        for name in ("log_rmse", "log_ratio"):
            quiet = np.concatenate([getattr(z, name) for z in unchanged])
            cells.append((quiet.std(), np.concatenate([getattr(z, name) for z in slower]).mean() - quiet.mean()))
        print(f"{month:8s} {cells[0][0]:12.3f} {cells[0][1]:7.3f} {cells[1][0]:13.3f} {cells[1][1]:7.3f}")
    days_of = {month: len(set(np.concatenate([z.day for z in unchanged]))) for month, (unchanged, _) in chunks.items()}
    evaluations = {
        month: sum(max(len(z.day) - 2 * size // CHUNK, 0) for z in slower) for month, (_, slower) in chunks.items()
    }
    off = np.inf
    rmse_rules = [(k, h, 0.0, off) for k in CUSUM_ALLOWANCES for h in CUSUM_LIMITS]
    shown = {round(allowance, 2) for allowance in CUSUM_ALLOWANCES[::2]}
    figures = {(rule, m): sequential_figures(*chunks[m], rule, size) for rule in rmse_rules for m in months}
    print("RMSE CUSUM alone")
    print(f"{'k':>5s} {'h':>5s} " + " ".join(f"{month:>15s}" for month in months))
    for rule in rmse_rules:
        if round(rule[0], 2) in shown and rule[1] in CUSUM_LIMITS[::2]:
            cells = [figures[(rule, month)] for month in months]
            print(f"{rule[0]:5.2f} {rule[1]:5.2f} " + " ".join(f"{d:6.1%} / {f:6.1%}" for d, f in cells))

    # k and h picked by looking at the very days they are judged on would be an in-sample figure: each month's
    # figures come from the rule picked on the other months (`pick`), so no month's days choose its own rule.
    def line(rule: Rule, month: str, days: float, found: float) -> str:
        slowdown = "" if rule[3] == np.inf else f", slowdown k {rule[2]:.2f} h {rule[3]:.1f}"
        return (
            f"RMSE k {rule[0]:.2f} h {rule[1]:.1f}{slowdown}: days with an alarm {days:.1%} of {days_of[month]},"
            f" rides 10% slower {found:.1%} of {evaluations[month]} evaluations"
        )

    leave_one_out(figures, rmse_rules, months, "RMSE CUSUM", line)
    rmse_rule = pick(figures, rmse_rules, months)
    print(f"Picked on all {len(months)} months (the deployed rule): RMSE k {rmse_rule[0]:.2f} h {rmse_rule[1]:.1f}")
    deployed = (online.RMSE_CUSUM_ALLOWANCE, online.RMSE_CUSUM_LIMIT)
    both = [(*deployed, k, h) for k in SLOWDOWN_ALLOWANCES for h in SLOWDOWN_LIMITS]
    figures |= {(rule, m): sequential_figures(*chunks[m], rule, size) for rule in both for m in months}
    print(f"\nSlowdown CUSUM beside the RMSE CUSUM (k {deployed[0]:.2f}, h {deployed[1]:.1f})")
    print(f"{'k':>5s} {'h':>5s} " + " ".join(f"{month:>15s}" for month in months))
    for rule in both:
        if rule[3] in SLOWDOWN_LIMITS[::2]:
            cells = [figures[(rule, month)] for month in months]
            print(f"{rule[2]:5.2f} {rule[3]:5.2f} " + " ".join(f"{d:6.1%} / {f:6.1%}" for d, f in cells))
    leave_one_out(figures, both, months, "both CUSUMs", line)
    shipped = pick(figures, both, months)
    print(f"Picked on all {len(months)} months (the deployed rule): slowdown k {shipped[2]:.2f} h {shipped[3]:.1f}")


def leave_one_out(
    figures: dict[tuple[Rule, str], tuple[float, float]],
    rules: list[Rule],
    months: list[str],
    label: str,
    line: Callable[[Rule, str, float, float], str],
) -> None:
    """Each month's figures under the rule `pick` chooses on the other months, worded by `line(rule, month, days,
    found)`."""
    print(f"Leave one month out ({label}): the rule picked on the other months, then that month's figures")
    for month in months:
        rule = pick(figures, rules, [m for m in months if m != month])
        if rule is None:
            print(f"{month:8s} no rule keeps the other months within {DAY_BUDGET:.0%} of days")
            continue
        print(f"{month:8s} {line(rule, month, *figures[(rule, month)])}")


def distance_ceiling(months: list[str], size: int) -> None:
    """What any threshold on the distance statistic could do: its value in the sliding windows of held-out training
    days, unchanged and with distances x1.10, against the oracle threshold of `ceiling_row` at the distance's
    share of the dataset budget."""
    print(
        f"\nDistance ceiling, held-out training days, last_{size} every {alarm_days.STEP} rides: day-to-day spread of"
        " the distance statistic (KS x sqrt(n)) against its shift with distances 10% longer; detection with an oracle"
        " threshold (IN-SAMPLE)"
    )
    print(CEILING_HEADER)
    for month in months:
        unchanged, longer = [], []
        for fold in (0, 1):
            prof, held, _ = alarm_days.held_out(month, fold)
            reference = prof.arrays()
            rows = alarm_days.sliding(alarm_days.segments_of(held), size)
            for scenario, into in (("unchanged", unchanged), ("distance x1.10", longer)):
                rides = drift_scores.encode(reference, alarm_days.altered(held, month, scenario), ONLINE_FEATURES)
                into.append(drift_scores.feature_scores(reference, rides, "trip_distance", rows).statistic)
        alpha = drift.DATASET_ALPHA / len(ONLINE_FEATURES)
        print(ceiling_row(month, np.concatenate(unchanged), np.concatenate(longer), alpha))


def distance_cusum(months: list[str], size: int) -> None:
    """The dataset alarm's distance CUSUM (`online.distance_cusum`) on held-out days: each chunk's mean log distance
    against the profile's slot means (of the other days of the training and validation months), two-sided,
    restarted in each block, over a grid of (k, h); each month judged by the rule picked on the other three."""
    print(
        f"\nDistance CUSUM of the dataset alarm (two-sided, {CHUNK:,}-ride chunks' mean log distance less the"
        " profile's slot means, restarted in each block): days with an alarm on held-out training days and on"
        f" held-out validation days / full windows ({2 * size:,} rides into a block) alarmed with distances 10% longer"
    )
    blocks = {month: held_out_distance_chunks(month) for month in months}
    print(f"{'month':8s} {'sd':>7s} {'x1.10 shift':>12s} {'validation days':>16s}")
    for month, (quiet, later, longer) in blocks.items():
        base = np.concatenate([z.means for z in quiet])
        shift = np.concatenate([z.means for z in longer]).mean() - base.mean()
        print(f"{month:8s} {base.std():7.3f} {shift:12.3f} {np.concatenate([z.means for z in later]).mean():16.3f}")
    rules = [(k, h, 0.0, np.inf) for k in DISTANCE_ALLOWANCES for h in DISTANCE_LIMITS]
    figures = {}
    print(f"{'k':>5s} {'h':>5s} " + " ".join(f"{month:>22s}" for month in months))
    for rule in rules:
        cells = []
        for month in months:
            quiet_days, later_days, found = distance_figures(*blocks[month], rule, size)
            figures[(rule, month)] = max(quiet_days, later_days), found
            cells.append(f"{quiet_days:5.1%} {later_days:5.1%} / {found:6.1%}")
        print(f"{rule[0]:5.2f} {rule[1]:5.2f} " + " ".join(f"{c:>22s}" for c in cells))
    leave_one_out(
        figures,
        rules,
        months,
        "distance CUSUM",
        lambda rule, _, days, found: (
            f"k {rule[0]:.2f} h {rule[1]:.1f}: days with an alarm {days:.1%}, 10% longer {found:.1%}"
        ),
    )
    shipped = pick(figures, rules, months)
    print(f"Picked on all {len(months)} months (the deployed rule): k {shipped[0]:.2f} h {shipped[1]:.1f}")


def batch_table() -> None:
    prof = alarm_days.whole(OLD_MODEL)
    arrays = prof.arrays()
    columns = [*BATCH_FEATURES, PREDICTION, TARGET]

    def line(label: str, verdict: drift.DriftVerdict, extra: list[drift.FeatureDrift]) -> str:
        effects = " ".join(f"{f.effect:6.3f}{'*' if f.drifted else ' '}" for f in (*verdict.features, *extra))
        return f"{label:22s} {'DRIFT' if verdict.dataset_drift else 'quiet':6s} {effects}"

    header = " ".join(f"{name[:7]:>7s}" for name in columns)
    print("\nBatch: effect sizes (* = drifted; KS distance for numbers, Jensen-Shannon for zones and hours)")
    print(f"min effects {drift.BATCH_MIN_EFFECT}")
    print(f"{'month vs ' + OLD_MODEL + ' profile':22s} {'':6s} {header}")
    outputs = {PREDICTION: "numerical", TARGET: "numerical"}
    for month in MONTHS:
        frame = scored(month, OLD_MODEL)
        verdict = drift.assess(prof, arrays, frame, "batch", BATCH_FEATURES, month=True)
        print(line(month, verdict, list(drift.assess(prof, arrays, frame, "batch", outputs, month=True).features)))
    print(f"{'month over month':22s} {'':6s} {header}")
    for previous, month in MOM_PAIRS:
        before = profile.describe(scored(previous, OLD_MODEL)).arrays()
        frame = scored(month, OLD_MODEL)
        verdict = drift.assess(prof, before, frame, "batch", BATCH_FEATURES, month=True)
        extra = list(drift.assess(prof, before, frame, "batch", outputs, month=True).features)
        print(line(f"{previous} -> {month}", verdict, extra))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", nargs="+", default=REFERENCE_MONTHS)
    parser.add_argument("--size", type=int, default=DEFAULT_WINDOW)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-detection", action="store_true")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), help="detection scenarios to run")
    parser.add_argument("--skip-unchanged", action="store_true")
    parser.add_argument("--random-windows", type=int, default=RANDOM_WINDOWS, help="random windows per stream")
    args = parser.parse_args()
    started = time.perf_counter()
    if not args.skip_unchanged:
        unchanged_days(args.months, args.size)
    if not args.skip_detection:
        detection(args.months, args.sizes, np.random.default_rng(args.seed), args.scenarios, args.random_windows)
        deployed_detection(
            args.months, args.sizes, np.random.default_rng(args.seed), args.scenarios, args.random_windows
        )
        hour_detection(args.months, args.scenarios)
        if "durations x1.10" in args.scenarios:
            rmse_ceiling(args.months, args.size)
            sequential_rmse(args.months, args.size)
        if "distance x1.10" in args.scenarios:
            distance_ceiling(args.months, args.size)
            distance_cusum(args.months, args.size)
    if not args.skip_batch:
        batch_table()
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
