"""The service with BentoML's own adaptive batching instead of bento_service's micro-batcher and model process:
a model service with a `batchable=True` API, reached through `bentoml.depends` (the design BentoML documents).
Everything else (validation, logging, metrics) is TaxiDuration's, so bench/bench_service.py compares the two
ways of reaching the model only. Not served anywhere: bench_service.py's `native` design.
"""

from __future__ import annotations

import datetime as dt

import bentoml
import numpy as np
import pandas as pd

from bento_service import compat
from bento_service.service import SETTINGS, WARM_UP, Prediction, Ride, TaxiDuration
from taxi_assets.core import model as taxi_model

# The adaptive batcher refuses (503) requests it expects to miss this deadline; 100 ms is the p99 goal.
MAX_LATENCY_MS = 100


def _matrix(columns: dict[str, list]) -> np.ndarray:
    """The ride columns as one float array (pickup as UTC epoch seconds): what BentoML batches along axis 0."""
    pickups = [pickup.replace(tzinfo=dt.timezone.utc).timestamp() for pickup in columns["pickup_datetime"]]
    return np.column_stack(
        [columns["PULocationID"], columns["DOLocationID"], columns["trip_distance"], pickups]
    ).astype("float64")


@bentoml.service(name="taxi_model", workers=1, traffic={"timeout": 30})
class DurationModel:
    model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        self.pipeline = bentoml.sklearn.load_model(self.model)
        self.predict(_matrix({field: [getattr(WARM_UP, field)] for field in taxi_model.FEATURE_FIELDS}))
        compat.freeze_startup_heap()

    @bentoml.api(batchable=True, max_batch_size=512, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, rides: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(
            {
                "PULocationID": rides[:, 0].astype("int64"),
                "DOLocationID": rides[:, 1].astype("int64"),
                "trip_distance": rides[:, 2],
                "pickup_datetime": pd.to_datetime(rides[:, 3], unit="s"),
            }
        )
        return taxi_model.predict(self.pipeline, frame)


class _RemoteModel:
    """ModelProcess's interface over the model service."""

    def __init__(self, tag: str, service) -> None:
        self.tag = tag
        self._service = service

    async def predict(self, columns: dict[str, list]) -> np.ndarray:
        return np.asarray(await self._service.to_async.predict(_matrix(columns)))

    def retire(self) -> None:
        pass  # the model service is stopped with the server


@bentoml.service(name="taxi_native", workers=1, traffic={"timeout": 30})
class NativeTaxi(TaxiDuration.inner):
    model_service = bentoml.depends(DurationModel)

    def open_model(self, model: bentoml.Model) -> _RemoteModel:
        return _RemoteModel(str(model.tag), self.model_service)

    @bentoml.api
    async def predict(self, ride: Ride, /) -> Prediction:
        """BentoML's batcher instead of the micro-batcher: one ride per call to the model service."""
        (prediction,) = await self.score([ride])
        return prediction
