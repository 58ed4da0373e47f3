"""Where the monitoring reports are written: the folder the `monitoring_report` asset links to."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from taxi_assets import settings
from taxi_assets.defs.resources import configured


class MonitoringReports(dg.ConfigurableResource):
    """The folder of the Evidently HTML reports, one file per month."""

    directory: str = Field(description="Folder of the HTML reports (relative: to the repository root)")

    def path(self, name: str) -> Path:
        """Where report `name` goes; the folder is created on first use."""
        folder = Path(settings.resolve(self.directory))
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"reports": MonitoringReports(directory=configured("reports_dir"))})
