"""Where the monitoring reports go: HTML files in the reports folder, and the local Evidently workspace that `make
up` serves with `evidently ui` (the page `monitoring_report` links to, and the dashboards)."""

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from pydantic import Field

from taxi_assets import settings
from taxi_assets.core.evidently_workspace import MonitoringWorkspace
from taxi_assets.defs.resources import configured


class MonitoringReports(dg.ConfigurableResource):
    """The folder of the Evidently HTML reports (one file per month) and the Evidently workspace."""

    directory: str = Field(description="Folder of the HTML reports (relative: to the repository root)")
    evidently_workspace: str = Field(description="Local Evidently workspace (relative: to the repository root)")
    evidently_url: str = Field(description="Where the Evidently UI serves that workspace: the links' base")
    window_days: int = Field(
        description="Days of online windows the windows dashboard keeps (older points are deleted); 0: all"
    )

    def path(self, name: str) -> Path:
        """Where report `name` goes; the folder is created on first use."""
        folder = Path(settings.resolve(self.directory))
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def workspace(self) -> MonitoringWorkspace:
        return MonitoringWorkspace(settings.resolve(self.evidently_workspace), self.evidently_url)

    def publish(self, month: str, snapshot, html: str) -> tuple[Path, str]:
        """The month's report as an HTML file and as a snapshot of the Evidently workspace; the file and the URL of
        the snapshot's page in the Evidently UI."""
        report = self.path(f"monitoring_report_{month}.html")
        report.write_text(html, encoding="utf-8")
        return report, self.workspace().publish_month_report(month, snapshot)

    def publish_windows(self, figures: Mapping[str, Mapping[str, float]], at: dt.datetime) -> str:
        """The online windows' figures computed at `at` as a point of the windows dashboard, which keeps
        `window_days` days of them; the dashboard's URL."""
        keep = dt.timedelta(days=self.window_days) if self.window_days > 0 else None
        return self.workspace().publish_window_figures(figures, at, keep)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "reports": MonitoringReports(
                directory=configured("reports_dir"),
                evidently_workspace=configured("evidently_workspace"),
                # Derived from the port setting; a URL, never a secret.
                evidently_url=settings.current().evidently_url,
                window_days=configured("evidently_window_days"),
            )
        }
    )
