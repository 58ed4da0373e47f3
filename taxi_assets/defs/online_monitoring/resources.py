"""The prediction-log store as the Dagster side sees it: read only, the Bento service being the writer."""

import dagster as dg

from taxi_assets import settings
from taxi_assets.core import predlog
from taxi_assets.defs.resources import configured


class PredictionLogStore(dg.ConfigurableResource):
    """Reader of the prediction-log store at `uri`: a directory of segment files or a `mongodb://` URI.

    The sensor asks it what is new after a cursor; `prediction_logs` stages whole UTC days from it.
    """

    uri: str

    def reader(self) -> predlog.LogReader:
        return predlog.open_reader(settings.resolve(self.uri))


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"prediction_log": PredictionLogStore(uri=configured("predlog_uri"))})
