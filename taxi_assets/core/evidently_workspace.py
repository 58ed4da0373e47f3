"""The monitoring in a local Evidently workspace (TAXI_EVIDENTLY_WORKSPACE, `data/evidently`), served by `evidently
ui` under `make up`: dashboards where Grafana cannot be installed.

Two projects, each with its dashboard:

* "Taxi monitoring: months": every month's Evidently report (its page is what `monitoring_report` links to) and
  the month's figures: share of drifted features, drift score per feature, RMSE against the deployed model's
  validation RMSE, the challenger's gain. Each month's snapshots carry the first day of the month as their
  timestamp, so the dashboard's time axis is the month.
* "Taxi monitoring: online windows": each online window's figures when they are computed (drift share, RMSE),
  for the last TAXI_EVIDENTLY_WINDOW_DAYS days (Prometheus keeps the longer history).

The figures are the platform's own (those pushed to Prometheus), logged as one-row datasets whose columns are
the figures and summarised by Evidently's `MeanValue`: the dashboard plots the same numbers as the alerts, and
`evidently ui` needs nothing of this project to show them. Publishing a month again replaces its snapshots, so a
re-materialized month is one point, not two.

Every file the workspace writes appears whole: `evidently ui` watches the folder and reads a file as soon as it
changes, and Evidently writes in place (truncate, then write), so the UI could read half a project file; its file
watcher then dies on the JSONDecodeError and the UI goes stale (a project answering 404) until restarted. Here each
write goes to a temporary file in the same folder, which then replaces the target in one rename (a new file is
hard-linked into place instead, so the watcher sees it created, complete).

Pure logic: no Dagster, no BentoML.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

MONTHS_PROJECT = "Taxi monitoring: months"
WINDOWS_PROJECT = "Taxi monitoring: online windows"
MONTHS_DESCRIPTION = "Monthly batch monitoring: drift, error and retraining, one point per month"
WINDOWS_DESCRIPTION = "Online monitoring: drift and error over the latest windows, one point per computation"
FIGURES = "figures"
REPORT = "report"
# Per project, the name of every stored snapshot by id: what `replace` needs to find a name's snapshots, which it
# otherwise learns by reading every stored snapshot. The online windows project gains a snapshot per
# `online_dashboard` run, up to one a minute while traffic flows, so that scan grew by the hour: 1.0 s at 100 stored,
# 2.0 s at 200, 6.9 s at 800 (half a day); with the list a publish stays at 0.16-0.23 s from 1 to 800
# (bench/bench_workspace.py).
# The snapshot files stay the truth: ids gone from the folder leave the list, ids missing from it (a publish that
# died before updating it, a workspace written before it existed) are read once. `evidently ui` ignores the file
# (its watcher reads project metadata and snapshots only).
SNAPSHOT_NAMES = "snapshot_names.json"
# A windows snapshot's name: this, then when it was computed (ISO, to the second). The name is what the names list
# keeps, so it is also what the windows' retention (`publish_window_figures`'s `keep`) reads their age from: the
# project then stays at a bounded size (a day of steady traffic adds up to 1,440 snapshots) without reading any.
WINDOW_NAME = "figures "


@dataclasses.dataclass(frozen=True)
class Series:
    legend: str
    figure: str  # the figure's column in the figures snapshots


@dataclasses.dataclass(frozen=True)
class Panel:
    title: str
    subtitle: str
    series: tuple[Series, ...]
    plot: str = "line"  # line | bar
    size: str = "half"  # half | full


def _panels_for(features: Sequence[str]) -> tuple[Panel, ...]:
    return (
        Panel(
            "Share of drifted features",
            "features whose drift alarm is on, by month",
            (Series("share drifted", "drift_share"),),
            plot="bar",
        ),
        Panel(
            "RMSE by month",
            "minutes: the deployed model on the month, and on its validation month",
            (Series("RMSE", "rmse"), Series("validation RMSE", "validation_rmse")),
        ),
        Panel(
            "Drift score per feature",
            "each feature's test statistic over its calibrated threshold, against the training month: above 1 "
            "means drifted (with a large enough effect)",
            tuple(Series(feature, f"drift_score/{feature}") for feature in features),
            size="full",
        ),
        Panel(
            "Challenger gain",
            "relative RMSE gain of the newest retrained model over the deployed one (promotion at the minimum)",
            (Series("gain", "challenger_gain"), Series("minimum for promotion", "challenger_min_gain")),
            plot="bar",
        ),
    )


def _window_panels(windows: Sequence[str]) -> tuple[Panel, ...]:
    return (
        Panel(
            "Drift share per window",
            "share of drifted features in each online window, as computed",
            tuple(Series(window, f"{window}/drift_share") for window in windows),
        ),
        Panel(
            "RMSE per window",
            "minutes, over the window's rides with feedback",
            tuple(Series(window, f"{window}/rmse") for window in windows),
        ),
        Panel(
            "Feedback rows per window",
            "rides of the window whose actual duration has arrived",
            tuple(Series(window, f"{window}/feedback_rows") for window in windows),
            plot="bar",
        ),
    )


def month_timestamp(month: str) -> dt.datetime:
    return dt.datetime.strptime(f"{month}-01", "%Y-%m-%d")


def figures_snapshot(figures: Mapping[str, float], name: str, timestamp: dt.datetime, tags: Sequence[str]) -> Snapshot:
    """A snapshot of one row whose columns are `figures`: `MeanValue` of each is the figure itself."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    values = {key: float(value) for key, value in figures.items() if value is not None and math.isfinite(value)}
    frame = pd.DataFrame([values])
    dataset = Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=list(values)))
    return Report([MeanValue(column=column) for column in values]).run(
        dataset, None, name=name, timestamp=timestamp, tags=[FIGURES, *tags]
    )


@contextlib.contextmanager
def _write_whole(final: str, mode: str):
    """A file opened for writing that appears at `final` only once closed, complete."""
    folder, name = os.path.split(final)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        with open(temporary, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, final)  # a new file: the watcher sees it created, whole
        except FileExistsError:
            os.replace(temporary, final)
            # The watcher takes the rename for the temporary file's event and ignores it: a modification of the
            # final name makes it read the new content.
            os.utime(final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def _local_storage() -> None:
    """Make Evidently's local storage write whole files (0.7's `FSLocation.open`, the one way it writes a workspace
    file; reads and remote file systems are left as they are) and encode snapshots in one go."""
    from evidently.legacy.utils import NumpyEncoder
    from evidently.ui.service.storage.fslocation import FSLocation
    from evidently.ui.storage.local.base import LocalState
    from fsspec.implementations.local import LocalFileSystem

    if getattr(FSLocation.open, "writes_whole_files", False):
        return
    evidently_open = FSLocation.open

    @contextlib.contextmanager
    def open_whole(self: FSLocation, path: str, mode: str = "r"):
        if not ("w" in mode and isinstance(self.fs, LocalFileSystem)):
            with evidently_open(self, path, mode) as file:
                yield file
            return
        with _write_whole(self._resolve_path(path), mode) as file:
            yield file

    def write_snapshot(self: LocalState, project_id, snapshot_id, snapshot) -> None:
        # 0.7's `LocalState.write_snapshot` with `json.dumps` for its `json.dump`: the same text, but `json.dump`
        # streams through the pure-Python encoder, which took 0.45 s of the 0.75 s spent storing a month's report
        # (4 MB), while `json.dumps` uses the C encoder (0.05 s).
        text = json.dumps(snapshot.dict(), cls=NumpyEncoder)
        self.location.makedirs(self._snapshot_dir(project_id))
        with self.location.open(self._snapshot_path(project_id, snapshot_id), "w") as file:
            file.write(text)

    open_whole.writes_whole_files = True
    FSLocation.open = open_whole
    write_snapshot.evidently_write_snapshot = LocalState.write_snapshot
    LocalState.write_snapshot = write_snapshot


class MonitoringWorkspace:
    """The local Evidently workspace at `path`, with the platform's two projects and their dashboards."""

    def __init__(self, path: str | Path, ui_url: str) -> None:
        from evidently.ui.workspace import Workspace

        _local_storage()

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.workspace = Workspace(str(path))
        self.ui_url = ui_url.rstrip("/")

    def project_id(self, name: str, description: str) -> str:
        for project in self.workspace.search_project(name):
            return str(project.id)
        return str(self.workspace.create_project(name, description=description).id)

    def show(self, project_id: str, panels: Sequence[Panel]) -> None:
        """Make the project's dashboard exactly `panels` (written only when it differs)."""
        from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
        from evidently.sdk.panels import DashboardPanelPlot

        current = self.workspace.get_dashboard(project_id)
        wanted = [(panel.title, panel.subtitle, tuple((s.legend, s.figure) for s in panel.series)) for panel in panels]
        have = [
            (p.title, p.subtitle, tuple((v.legend, v.metric_labels.get("column")) for v in p.values))
            for p in current.panels
        ]
        if wanted == have:
            return
        plots = [
            DashboardPanelPlot(
                title=panel.title,
                subtitle=panel.subtitle,
                size=panel.size,
                values=[
                    PanelMetric(legend=s.legend, tags=[FIGURES], metric="MeanValue", metric_labels={"column": s.figure})
                    for s in panel.series
                ],
                plot_params={"plot_type": panel.plot},
            )
            for panel in panels
        ]
        tab = DashboardTabModel(title="Monitoring", panels=[plot.id for plot in plots])
        self.workspace.save_dashboard(project_id, DashboardModel(tabs=[tab], panels=plots))

    def replace(self, project_id: str, snapshot: Snapshot, expired: Callable[[str | None], bool] | None = None) -> str:
        """Add `snapshot`, first deleting the project's snapshots of the same name, and those whose name is
        `expired`; its id."""
        name = snapshot.get_name()
        names = self.snapshot_names(project_id)
        gone = [
            snapshot_id
            for snapshot_id, stored in names.items()
            if stored == name or (expired is not None and expired(stored))
        ]
        for snapshot_id in gone:
            self.workspace.delete_run(project_id, snapshot_id)
            del names[snapshot_id]
        snapshot_id = str(self.workspace.add_run(project_id, snapshot).id)
        names[snapshot_id] = name
        with _write_whole(str(self.path / project_id / SNAPSHOT_NAMES), "w") as file:
            file.write(json.dumps(names))
        return snapshot_id

    def snapshot_names(self, project_id: str) -> dict[str, str | None]:
        """The name of every snapshot stored in the project, by id (`SNAPSHOT_NAMES`)."""
        try:
            known = json.loads((self.path / project_id / SNAPSHOT_NAMES).read_text())
        except (OSError, ValueError):
            known = {}
        if not isinstance(known, dict):
            known = {}
        names = {}
        for snapshot_id in map(str, self.workspace.list_runs(project_id)):
            if snapshot_id in known:
                names[snapshot_id] = known[snapshot_id]
            elif (stored := self.workspace.get_run(project_id, snapshot_id)) is not None:
                names[snapshot_id] = stored.name
        return names

    def url(self, project_id: str, snapshot_id: str | None = None) -> str:
        """The Evidently UI's page of a snapshot (or of the project's dashboard)."""
        page = f"/projects/{project_id}" + (f"/reports/{snapshot_id}" if snapshot_id else "")
        return self.ui_url + page

    # The platform's two uses.

    def publish_month_report(self, month: str, snapshot: Snapshot) -> str:
        """The month's Evidently report in the months project; the URL of its page."""
        project = self.project_id(MONTHS_PROJECT, MONTHS_DESCRIPTION)
        snapshot.set_name(f"monitoring_report {month}")
        # Evidently 0.7 takes a snapshot's timestamp and tags only in Report.run(); the report is built elsewhere
        # (evidently_report.build_snapshot), so they are set here. The dashboard's time axis is the month.
        snapshot._timestamp = month_timestamp(month)
        snapshot._tags = [*snapshot._tags, REPORT, f"month={month}"]
        return self.url(project, self.replace(project, snapshot))

    def publish_month_figures(self, month: str, figures: Mapping[str, float], features: Sequence[str]) -> str:
        """The month's figures (drift_share, rmse, validation_rmse, drift_score/<feature>, challenger_gain, …) and
        the months dashboard; the dashboard's URL."""
        project = self.project_id(MONTHS_PROJECT, MONTHS_DESCRIPTION)
        self.show(project, _panels_for(features))
        self.replace(project, figures_snapshot(figures, f"figures {month}", month_timestamp(month), [f"month={month}"]))
        return self.url(project)

    def publish_window_figures(
        self, windows: Mapping[str, Mapping[str, float]], at: dt.datetime, keep: dt.timedelta | None = None
    ) -> str:
        """Each online window's figures (drift_share, rmse, rows, feedback_rows), as computed at `at`, as one
        snapshot (columns `<window>/<figure>`); the dashboard's URL. Every computation is a point; with `keep`,
        the points computed more than `keep` before `at` are deleted."""
        project = self.project_id(WINDOWS_PROJECT, WINDOWS_DESCRIPTION)
        self.show(project, _window_panels(sorted(windows)))
        figures = {f"{window}/{name}": value for window, values in windows.items() for name, value in values.items()}
        snapshot = figures_snapshot(figures, WINDOW_NAME + at.isoformat(timespec="seconds"), at, [])
        self.replace(project, snapshot, expired=_computed_before(at - keep) if keep else None)
        return self.url(project)


def _computed_before(moment: dt.datetime) -> Callable[[str | None], bool]:
    """Whether a windows snapshot's name says it was computed before `moment` (names it does not know: no). Times
    without a zone are UTC (`online_dashboard`'s)."""

    def utc(at: dt.datetime) -> dt.datetime:
        return at.replace(tzinfo=dt.timezone.utc) if at.tzinfo is None else at

    def expired(name: str | None) -> bool:
        if not name or not name.startswith(WINDOW_NAME):
            return False
        try:
            return utc(dt.datetime.fromisoformat(name.removeprefix(WINDOW_NAME))) < utc(moment)
        except ValueError:
            return False

    return expired
