"""The prediction-log store as the Dagster side sees it: read only, the Bento service being the writer."""

import dagster as dg

from taxi_assets.core import predlog


class PredictionLogStore(dg.ConfigurableResource):
    """Reader of the prediction-log store at `uri`: a directory of segment files or a `mongodb://` URI.

    The sensor asks it what is new after a cursor; `prediction_logs` reads whole UTC days from it.
    """

    uri: str

    def reader(self) -> predlog.LogReader:
        return predlog.open_reader(self.uri)
