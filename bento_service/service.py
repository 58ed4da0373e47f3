"""The ride-duration service: `/predict`, `/predict_batch`, `/feedback`, with every prediction logged.

Run: `python -m bento_service` (BENTOML_HOME defaulting to data/bentoml), or
`bentoml serve bento_service.service:TaxiDuration` with BENTOML_HOME set. Listens on 127.0.0.1:3001 unless
`--host`/`--port` or TAXI_SERVICE_HOST/TAXI_SERVICE_PORT say otherwise; TAXI_SERVICE_WORKERS sets the number of
worker processes (each with its own model process, see model_process.py).

The model is the deployed pipeline from the BentoML store (`taxi_duration_deployed:latest`, or TAXI_MODEL_TAG),
which prepares its own features from the raw ride fields. Predictions and feedback go to the prediction-log
store named by TAXI_PREDLOG_URI; a log that cannot be written is counted and logged, never turned into an error
for the caller, and a MongoDB outage only grows the local spool.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Annotated

import bentoml
import numpy as np
from pydantic import AfterValidator, BaseModel, Field

from bento_service import runtime
from bento_service.microbatch import MicroBatcher
from bento_service.model_process import ModelProcess
from taxi_assets import settings
from taxi_assets.core import predlog

runtime.cancel_request_timers()

MODEL_TAG = os.getenv("TAXI_MODEL_TAG", "taxi_duration_deployed:latest")
MAX_LOCATION_ID = 265
MAX_TRIP_DISTANCE_MILES = 500.0
MAX_BATCH_RIDES = 10_000
MAX_ACTUAL_DURATION_MINUTES = 24 * 60
# pandas holds nanosecond timestamps (years 1677-2262); the bounds keep every accepted date representable.
EARLIEST_PICKUP = dt.datetime(2000, 1, 1)
LATEST_PICKUP = dt.datetime(2100, 1, 1)


def _wall_clock(value: dt.datetime) -> dt.datetime:
    """NYC wall-clock time: an offset is dropped (the model learnt local hours), and the range is bounded."""
    value = value.replace(tzinfo=None)
    if not EARLIEST_PICKUP <= value < LATEST_PICKUP:
        raise ValueError(f"must be between {EARLIEST_PICKUP:%Y-%m-%d} and {LATEST_PICKUP:%Y-%m-%d}")
    return value


LocationID = Annotated[int, Field(strict=True, ge=1, le=MAX_LOCATION_ID)]
RideId = Annotated[str, Field(min_length=1, max_length=128)]


class Ride(BaseModel):
    """One ride as the model sees it; `id` is the caller's ride id, generated when absent."""

    id: RideId | None = None
    PULocationID: LocationID
    DOLocationID: LocationID
    trip_distance: Annotated[float, Field(strict=True, ge=0, lt=MAX_TRIP_DISTANCE_MILES, allow_inf_nan=False)]
    pickup_datetime: Annotated[dt.datetime, AfterValidator(_wall_clock)]


class Prediction(BaseModel):
    id: str
    duration_minutes: float
    model_tag: str


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class Feedback(BaseModel):
    """The actual duration, in minutes, of a ride predicted earlier under `id`."""

    id: RideId
    actual_duration: Annotated[float, Field(strict=True, gt=0, le=MAX_ACTUAL_DURATION_MINUTES, allow_inf_nan=False)]


class FeedbackReceipt(BaseModel):
    id: str
    recorded: bool


DISTANCE_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, float("inf"))
DURATION_BUCKETS = (2, 5, 10, 15, 20, 30, 45, 60, 90, float("inf"))
HOUR_BUCKETS = tuple(range(24)) + (float("inf"),)

PREDICTIONS = bentoml.metrics.Counter("taxi_predictions_total", "Rides predicted", ["model_tag"])
PREDICTED_DURATION = bentoml.metrics.Histogram(
    "taxi_predicted_duration_minutes", "Predicted ride duration, minutes", buckets=DURATION_BUCKETS
)
INPUT_DISTANCE = bentoml.metrics.Histogram(
    "taxi_input_trip_distance_miles", "trip_distance of the rides predicted", buckets=DISTANCE_BUCKETS
)
INPUT_HOUR = bentoml.metrics.Histogram(
    "taxi_input_pickup_hour", "Pickup hour (wall clock) of the rides predicted", buckets=HOUR_BUCKETS
)
LOG_FAILURES = bentoml.metrics.Counter("taxi_predlog_write_failures_total", "Failed prediction-log writes")
# livesum: each worker process has its own spool; the service's backlog is their sum.
SPOOL_BACKLOG = bentoml.metrics.Gauge(
    "taxi_predlog_spool_backlog", "Log records waiting for MongoDB", multiprocess_mode="livesum"
)


def _observe_many(histogram, values: np.ndarray) -> None:
    """Observe a whole batch at once: one bucket increment per bucket instead of one `observe` per value."""
    metric = getattr(histogram, "_proxy", histogram)  # bentoml.metrics wraps prometheus_client lazily
    counts = np.bincount(np.searchsorted(metric._upper_bounds, values), minlength=len(metric._upper_bounds))
    for bucket, count in zip(metric._buckets, counts, strict=True):
        if count:
            bucket.inc(int(count))
    metric._sum.inc(float(values.sum()))


def _columns(rides: list[Ride]) -> dict[str, list]:
    return {
        "PULocationID": [r.PULocationID for r in rides],
        "DOLocationID": [r.DOLocationID for r in rides],
        "trip_distance": [r.trip_distance for r in rides],
        "pickup_datetime": [r.pickup_datetime for r in rides],
    }


WARM_UP = Ride(PULocationID=1, DOLocationID=1, trip_distance=1.0, pickup_datetime=dt.datetime(2022, 1, 1))


@bentoml.service(
    name="taxi_duration",
    workers=int(os.getenv("TAXI_SERVICE_WORKERS", "1")),
    http={"host": os.getenv("TAXI_SERVICE_HOST", "127.0.0.1"), "port": int(os.getenv("TAXI_SERVICE_PORT", "3001"))},
    traffic={"timeout": 30},
)
class TaxiDuration:
    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.model_tag = str(self.model.tag)
        self._predicted = PREDICTIONS.labels(model_tag=self.model_tag)
        # Starts the model process and pays its first-call costs before /readyz says yes.
        self.model_process = ModelProcess(bentoml.sklearn.load_model(self.model), _columns([WARM_UP]))
        current = settings.current()
        self.predlog = predlog.open_writer(current.predlog_uri, current.predlog_spool_dir)
        self.batcher = MicroBatcher(self.score)
        self._failures_seen = 0
        runtime.freeze_startup_heap()

    async def score(self, rides: list[Ride]) -> list[Prediction]:
        """Predict, log and count a batch of rides; the log write completes before anyone is answered."""
        columns = _columns(rides)
        durations = await self.model_process.predict(columns)
        ids = [ride.id or predlog.new_record_id() for ride in rides]
        predictions = durations.tolist()
        self._log(predlog.PredictionBatch({"id": ids, **columns}, predictions, self.model_tag, predlog.utc_now_iso()))
        self._predicted.inc(len(rides))
        _observe_many(PREDICTED_DURATION, durations)
        _observe_many(INPUT_DISTANCE, np.array(columns["trip_distance"]))
        _observe_many(INPUT_HOUR, np.array([pickup.hour for pickup in columns["pickup_datetime"]]))
        return [
            Prediction(id=i, duration_minutes=d, model_tag=self.model_tag)
            for i, d in zip(ids, predictions, strict=True)
        ]

    def _log(self, records: list[dict] | predlog.PredictionBatch) -> bool:
        written = self.predlog.append(records)
        stats = self.predlog.stats()
        if stats["write_failures"] > self._failures_seen:
            LOG_FAILURES.inc(stats["write_failures"] - self._failures_seen)
            self._failures_seen = stats["write_failures"]
        SPOOL_BACKLOG.set(stats["spool_backlog"])
        return written

    @bentoml.api
    async def predict(self, ride: Ride, /) -> Prediction:
        """Predicted duration, in minutes, of one ride."""
        return await self.batcher.submit(ride)

    # `{"rides": [...]}` rather than a bare JSON array: BentoML parses a root-list body with json.loads and
    # answers malformed JSON with a 500, where an object body goes through pydantic and gets a 400.
    @bentoml.api
    async def predict_batch(
        self, rides: Annotated[list[Ride], Field(min_length=1, max_length=MAX_BATCH_RIDES)]
    ) -> BatchPrediction:
        """Predicted durations of up to 10,000 rides, in the order given."""
        return BatchPrediction(predictions=await self.score(rides))

    @bentoml.api
    def feedback(self, feedback: Feedback, /) -> FeedbackReceipt:
        """Record the actual duration of a ride predicted earlier."""
        recorded = self._log([predlog.feedback_record(feedback.id, feedback.actual_duration)])
        return FeedbackReceipt(id=feedback.id, recorded=recorded)

    @bentoml.on_shutdown
    def close(self) -> None:
        self.model_process.close()
        self.predlog.close()
