"""The local Evidently workspace: months and windows published as snapshots with their dashboards, a month
published twice being one point."""

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taxi_assets.core.evidently_workspace import (
    MONTHS_PROJECT,
    SNAPSHOT_NAMES,
    WINDOWS_PROJECT,
    MonitoringWorkspace,
    figures_snapshot,
)

pytestmark = pytest.mark.unit

FEATURES = ["trip_distance", "pickup_hour"]


def month_figures(i: int) -> dict[str, float]:
    return {
        "drift_share": 0.5 * i,
        "rmse": 5.5 + i,
        "validation_rmse": 5.4,
        "drift_score/trip_distance": 0.1 * i,
        "drift_score/pickup_hour": 0.0,
        "challenger_gain": float("nan"),  # no challenge that month: no point
    }


def runs(workspace: MonitoringWorkspace, project: str) -> list:
    """(id, stored snapshot) of every run of `project`."""
    (found,) = workspace.workspace.search_project(project)
    return [(run, workspace.workspace.get_run(found.id, run)) for run in workspace.workspace.list_runs(found.id)]


def test_months_are_points_on_a_dashboard_and_a_month_republished_is_one_point(tmp_path: Path) -> None:
    workspace = MonitoringWorkspace(tmp_path / "evidently", "http://127.0.0.1:8000")
    for i, month in enumerate(["2021-01", "2021-02", "2021-01"]):
        url = workspace.publish_month_figures(month, month_figures(i), FEATURES)
    stored = [run for _, run in runs(workspace, MONTHS_PROJECT)]
    assert sorted(run.name for run in stored) == ["figures 2021-01", "figures 2021-02"]
    assert {run.name: run.timestamp for run in stored}["figures 2021-02"] == dt.datetime(2021, 2, 1)
    (project,) = workspace.workspace.search_project(MONTHS_PROJECT)
    assert url == f"http://127.0.0.1:8000/projects/{project.id}"
    dashboard = workspace.workspace.get_dashboard(project.id)
    titles = [panel.title for panel in dashboard.panels]
    assert titles == ["Share of drifted features", "RMSE by month", "Drift score per feature", "Challenger gain"]
    per_feature = dashboard.panels[2]
    assert [value.metric_labels["column"] for value in per_feature.values] == [f"drift_score/{f}" for f in FEATURES]
    # The republished 2021-01 carries the newer figures; the NaN gain is left out, not plotted as zero.
    (january,) = [run for run in stored if run.name == "figures 2021-01"]
    values = sorted(result.value for result in january.metric_results.values())
    assert values == sorted(value for key, value in month_figures(2).items() if key != "challenger_gain")


def test_a_month_report_gets_its_page_and_the_month_as_its_time(tmp_path: Path) -> None:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"trip_distance": rng.exponential(2, 300), "pickup_hour": rng.integers(0, 24, 300)})
    snapshot = Report([DataDriftPreset()]).run(frame, frame.sample(frac=1, random_state=2))
    workspace = MonitoringWorkspace(tmp_path / "evidently", "http://127.0.0.1:8000")
    url = workspace.publish_month_report("2022-02", snapshot)
    ((snapshot_id, stored),) = runs(workspace, MONTHS_PROJECT)
    (project,) = workspace.workspace.search_project(MONTHS_PROJECT)
    assert url == f"http://127.0.0.1:8000/projects/{project.id}/reports/{snapshot_id}"
    assert stored.name == "monitoring_report 2022-02" and stored.timestamp == dt.datetime(2022, 2, 1)
    assert {"report", "month=2022-02"} <= set(stored.tags)
    # The snapshot is stored as the very text Evidently's own storage writes, only encoded in one go.
    from evidently.ui.storage.local.base import LocalState

    state = workspace.workspace.state
    evidently_writes = LocalState.write_snapshot.evidently_write_snapshot
    evidently_writes(state, project.id, "evidently-own", snapshot.to_snapshot_model())
    snapshots = tmp_path / "evidently" / str(project.id) / "snapshots"
    assert (snapshots / f"{snapshot_id}.json").read_bytes() == (snapshots / "evidently-own.json").read_bytes()


def test_windows_are_series_of_their_own(tmp_path: Path) -> None:
    workspace = MonitoringWorkspace(tmp_path / "evidently", "http://127.0.0.1:8000")
    figures = {"drift_share": 0.25, "rmse": 6.1, "rows": 1000, "feedback_rows": 700}
    for minute in (0, 1):
        at = dt.datetime(2026, 11, 30, 12, minute)
        workspace.publish_window_figures({"last_5000": figures, "hour": {"rows": 0, "feedback_rows": 0}}, at)
    stored = [run for _, run in runs(workspace, WINDOWS_PROJECT)]
    assert sorted(run.timestamp.minute for run in stored) == [0, 1]  # one point per computation
    (project,) = workspace.workspace.search_project(WINDOWS_PROJECT)
    (drift, *_) = workspace.workspace.get_dashboard(project.id).panels
    assert [(value.legend, value.metric_labels["column"]) for value in drift.values] == [
        ("hour", "hour/drift_share"),
        ("last_5000", "last_5000/drift_share"),
    ]


def test_a_publish_reads_no_stored_snapshot_whose_name_it_knows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding a month's or a window's earlier snapshots read every stored snapshot, so a publish grew with the
    project (2.0 s at 200 online windows, bench/bench_workspace.py); the names list makes it read none."""
    workspace = MonitoringWorkspace(tmp_path / "evidently", "http://127.0.0.1:8000")
    start = dt.datetime(2026, 11, 30, 12, 0)
    for minute in range(30):
        workspace.publish_window_figures({"last_5000": {"rmse": 6.0}}, start + dt.timedelta(minutes=minute))
    for i, month in enumerate(["2021-01", "2021-02"]):
        workspace.publish_month_figures(month, month_figures(i), FEATURES)
    reads = []
    get_run = workspace.workspace.get_run
    monkeypatch.setattr(workspace.workspace, "get_run", lambda *args: reads.append(args) or get_run(*args))
    workspace.publish_window_figures({"last_5000": {"rmse": 6.5}}, start + dt.timedelta(minutes=30))
    workspace.publish_month_figures("2021-01", month_figures(5), FEATURES)
    assert reads == []
    monkeypatch.undo()
    for project in (WINDOWS_PROJECT, MONTHS_PROJECT):
        (found,) = workspace.workspace.search_project(project)
        stored = {str(snapshot_id): run.name for snapshot_id, run in runs(workspace, project)}
        assert workspace.snapshot_names(str(found.id)) == stored
    assert sorted(run.name for _, run in runs(workspace, MONTHS_PROJECT)) == ["figures 2021-01", "figures 2021-02"]
    assert len(runs(workspace, WINDOWS_PROJECT)) == 31


def test_windows_older_than_kept_leave_as_new_ones_arrive_and_nothing_else_does(tmp_path: Path) -> None:
    """Three days of a point an hour, keeping one day: the project holds the last day's points, counted
    back from the newest point (not the clock: replayed history is kept as well), and the months are untouched."""
    workspace = MonitoringWorkspace(tmp_path / "evidently", "http://127.0.0.1:8000")
    workspace.publish_month_figures("2021-01", month_figures(0), FEATURES)
    start = dt.datetime(2026, 11, 28, 0, 0)
    for step in range(3 * 24):
        at = start + dt.timedelta(hours=step)
        workspace.publish_window_figures({"last_5000": {"rmse": 6.0}}, at, keep=dt.timedelta(days=1))
    stored = sorted(run.timestamp for _, run in runs(workspace, WINDOWS_PROJECT))
    assert stored[-1] == at and stored[0] == at - dt.timedelta(days=1) and len(stored) == 24 + 1
    (found,) = workspace.workspace.search_project(WINDOWS_PROJECT)
    assert len(workspace.snapshot_names(str(found.id))) == len(stored)
    assert [run.name for _, run in runs(workspace, MONTHS_PROJECT)] == ["figures 2021-01"]
    # Without `keep`, every point stays.
    workspace.publish_window_figures({"last_5000": {"rmse": 6.0}}, at + dt.timedelta(days=2))
    assert len(runs(workspace, WINDOWS_PROJECT)) == len(stored) + 1


@pytest.mark.parametrize("damage", ["corrupt", "deleted", "a snapshot it does not list", "a listed snapshot gone"])
def test_a_damaged_or_stale_names_list_still_leaves_one_snapshot_per_month(tmp_path: Path, damage: str) -> None:
    """The snapshot files are the truth: a names list that is unreadable, missing (a workspace from before it),
    short of a snapshot (a publish killed between storing its snapshot and its list) or listing a deleted one is
    corrected from them, and republishing a month still replaces its snapshot."""
    workspace = MonitoringWorkspace(tmp_path / "evidently", "http://127.0.0.1:8000")
    for i, month in enumerate(["2021-01", "2021-02"]):
        workspace.publish_month_figures(month, month_figures(i), FEATURES)
    (project,) = workspace.workspace.search_project(MONTHS_PROJECT)
    names = tmp_path / "evidently" / str(project.id) / SNAPSHOT_NAMES
    if damage == "corrupt":
        names.write_bytes(b'{"0190')
    elif damage == "deleted":
        names.unlink()
    elif damage == "a snapshot it does not list":
        snapshot = figures_snapshot(month_figures(3), "figures 2021-01", dt.datetime(2021, 1, 1), [])
        workspace.workspace.add_run(project.id, snapshot)
    else:
        (february,) = [snapshot_id for snapshot_id, run in runs(workspace, MONTHS_PROJECT) if run.name.endswith("02")]
        workspace.workspace.delete_run(project.id, february)
    workspace.publish_month_figures("2021-01", month_figures(4), FEATURES)
    stored = runs(workspace, MONTHS_PROJECT)
    expected = ["figures 2021-01"] + ([] if damage == "a listed snapshot gone" else ["figures 2021-02"])
    assert sorted(run.name for _, run in stored) == expected
    (january,) = [run for _, run in stored if run.name == "figures 2021-01"]
    assert january.metric_results and sorted(r.value for r in january.metric_results.values()) == sorted(
        value for key, value in month_figures(4).items() if key != "challenger_gain"
    )
    assert workspace.snapshot_names(str(project.id)) == {str(snapshot_id): run.name for snapshot_id, run in stored}


def test_the_ui_watching_the_workspace_never_reads_half_a_file(tmp_path: Path) -> None:
    """What `evidently ui`'s file watcher does: read each JSON file as soon as it is created or modified."""
    import json

    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    read, broken = [], []

    class Reader(FileSystemEventHandler):
        def dispatch(self, event) -> None:
            path = Path(str(getattr(event, "dest_path", "") or event.src_path))
            if event.event_type not in ("created", "modified", "moved") or path.suffix != ".json" or path.is_dir():
                return
            try:
                json.loads(path.read_text())
                read.append(path.name)
            except FileNotFoundError:
                pass
            except json.JSONDecodeError as error:
                broken.append(f"{path.name}: {error}")

    (tmp_path / "evidently").mkdir()
    observer = Observer()
    observer.schedule(Reader(), str(tmp_path / "evidently"), recursive=True)
    observer.start()
    try:
        workspace = MonitoringWorkspace(tmp_path / "evidently", "http://127.0.0.1:8000")
        for i in range(6):
            workspace.publish_month_figures(f"2021-0{i % 3 + 1}", month_figures(i), FEATURES[: 1 + i % 2])
        time.sleep(1)
    finally:
        observer.stop()
        observer.join()
    assert not broken, broken
    assert "metadata.json" in read and len(read) >= 6
    assert not list((tmp_path / "evidently").rglob("*.tmp")), "a temporary file was left behind"
