"""Publishing into the Evidently workspace as its snapshots pile up (prints figures; not a test).

    .venv/bin/python bench/bench_workspace.py [--windows 800] [--months 28]

In a temporary workspace, as the platform publishes (taxi_assets.core.evidently_workspace.MonitoringWorkspace):
1. windows: `publish_window_figures` as `online_dashboard` does, --windows times (up to once a minute under
   traffic: 800 is half a day);
2. retention: --windows more evaluations keeping the last --windows points (`publish_window_figures`'s `keep`,
   TAXI_EVIDENTLY_WINDOW_DAYS), so each publish also deletes the oldest point;
3. months: `publish_month_report` of a report-sized snapshot (Evidently's DataDriftPreset over 20,000 rows), once
   for each of --months months, then each month again (a re-materialized month replaces its snapshot).
At checkpoints, beside the publish, in the same workspace: Evidently's own `Workspace.add_run` (the floor: building
the window's figures snapshot and storing it; storing the month's report), and the name scan `replace` did before
it kept `SNAPSHOT_NAMES` (read every stored snapshot to find the name's).
Goal: the publish flat in the stored snapshots, and the project's size bounded at no cost to the publish.
"""

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taxi_assets.core.evidently_workspace import (  # noqa: E402
    MONTHS_DESCRIPTION,
    MONTHS_PROJECT,
    WINDOWS_DESCRIPTION,
    WINDOWS_PROJECT,
    MonitoringWorkspace,
    figures_snapshot,
)

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def timed(work, *args) -> float:
    started = time.perf_counter()
    work(*args)
    return time.perf_counter() - started


def scan_for_name(workspace: MonitoringWorkspace, project_id: str, name: str) -> list[str]:
    """The ids of the project's snapshots named `name`, found by reading every stored snapshot (the former way)."""
    return [
        str(snapshot_id)
        for snapshot_id in workspace.workspace.list_runs(project_id)
        if (stored := workspace.workspace.get_run(project_id, snapshot_id)) is not None and stored.name == name
    ]


def evidently_alone(workspace: MonitoringWorkspace, project_id: str, figures: dict, name: str, at: dt.datetime):
    """The floor of a window's publish: its figures snapshot built and stored by Evidently's own `add_run`."""
    workspace.workspace.add_run(project_id, figures_snapshot(figures, name, at, []))


def window_figures(i: int) -> dict[str, dict[str, float]]:
    return {
        "last_5000": {"drift_share": i % 7 / 10, "rmse": 5.0 + i % 3, "rows": 5000.0, "feedback_rows": 4000.0},
        "last_hour": {"drift_share": i % 5 / 10, "rmse": 6.0, "rows": 200.0, "feedback_rows": 150.0},
    }


def report_snapshot():
    import numpy as np
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(0)
    rows = 20_000
    frame = pd.DataFrame(
        {
            "trip_distance": rng.exponential(2.5, rows),
            "fare_amount": rng.gamma(2.0, 8.0, rows),
            "pickup_hour": rng.integers(0, 24, rows),
            "PULocationID": rng.integers(1, 266, rows),
        }
    )
    return Report([DataDriftPreset()]).run(frame.sample(frac=1, random_state=1), frame)


def print_row(label: str, stored: int, publish: float, floor: float, scan: float) -> None:
    print(
        f"  {label:8s} {stored:5d} stored: publish {publish:.3f} s | Evidently's add_run {floor:.3f} s = "
        f"{publish / floor:.2f}x | former name scan alone {scan:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=800)
    parser.add_argument("--months", type=int, default=28)
    args = parser.parse_args()
    checkpoints = {1, 10, 100, 200, 400, 800, 1600, args.windows}

    with tempfile.TemporaryDirectory(prefix="bench_workspace_") as tmp:
        workspace = MonitoringWorkspace(Path(tmp) / "evidently", "http://127.0.0.1:8000")
        floor_project = workspace.project_id("floor", "Evidently's own add_run")

        print(f"windows: publish_window_figures, {args.windows} evaluations")
        windows = workspace.project_id(WINDOWS_PROJECT, WINDOWS_DESCRIPTION)
        publishes = []
        for i in range(1, args.windows + 1):
            at = START + dt.timedelta(hours=i)
            publishes.append(timed(workspace.publish_window_figures, window_figures(i), at))
            if i in checkpoints:
                name = f"figures {at.isoformat(timespec='seconds')}"
                figures = {f"{w}/{k}": v for w, values in window_figures(i).items() for k, v in values.items()}
                floor = timed(evidently_alone, workspace, floor_project, figures, name, at)
                scan = timed(scan_for_name, workspace, windows, name)
                print_row("windows", i, statistics.median(publishes[-5:]), floor, scan)

        print(f"retention: {args.windows} more evaluations, keeping the last {args.windows} points")
        keep = dt.timedelta(hours=args.windows - 1)
        pruning = []
        for i in range(args.windows + 1, 2 * args.windows + 1):
            pruning.append(
                timed(workspace.publish_window_figures, window_figures(i), START + dt.timedelta(hours=i), keep)
            )
        stored = len(workspace.workspace.list_runs(windows))
        print(
            f"  publish and delete the oldest: median {statistics.median(pruning):.3f} s, max {max(pruning):.3f} s "
            f"(publish alone at {args.windows}: median of the last 5 {statistics.median(publishes[-5:]):.3f} s); "
            f"{stored} stored at the end"
        )

        report = report_snapshot()
        months = [f"{2020 + m // 12}-{m % 12 + 1:02d}" for m in range(args.months)]
        print(f"months: publish_month_report of a {args.months}-month history, then each month again")
        months_project = workspace.project_id(MONTHS_PROJECT, MONTHS_DESCRIPTION)
        for round_ in ("first", "again"):
            for n, month in enumerate(months, 1):
                publish = timed(workspace.publish_month_report, month, report)
                if n in (1, args.months // 2, args.months):
                    floor = timed(workspace.workspace.add_run, floor_project, report)
                    scan = timed(scan_for_name, workspace, months_project, f"monitoring_report {month}")
                    stored = len(workspace.workspace.list_runs(months_project))
                    print_row(round_, stored, publish, floor, scan)
        size = max(path.stat().st_size for path in (Path(tmp) / "evidently").rglob("*.json"))
        print(f"largest snapshot file {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
