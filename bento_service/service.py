"""The ride-duration service: `/predict`, `/predict_batch`, `/feedback`, with every prediction logged.

Run: `python -m bento_service` (BENTOML_HOME defaulting to data/bentoml), or
`bentoml serve bento_service.service:TaxiDuration` with BENTOML_HOME set. Configuration comes from
`taxi_assets.settings`: listens on TAXI_SERVICE_HOST:TAXI_SERVICE_PORT (127.0.0.1:3001) unless `--host`/`--port`
say otherwise; TAXI_SERVICE_WORKERS sets the number of worker processes (each with its own model process, see
model_process.py).

The model is the deployed pipeline from the BentoML store (TAXI_MODEL_TAG, `taxi_duration_deployed:latest`),
which prepares its own features from the raw ride fields. Predictions and feedback go to the prediction-log
store named by TAXI_PREDLOG_URI; a log that cannot be written is counted and logged, never turned into an error
for the caller, and a MongoDB outage only grows the local spool.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from typing import Annotated

import bentoml
import numpy as np
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from starlette.responses import Response

from bento_service import columnar, compat, http, openapi
from bento_service.microbatch import MicroBatcher
from bento_service.model_process import ModelProcess
from taxi_assets import settings
from taxi_assets.core import predlog
from taxi_assets.core.drift_scores import MAX_TRIP_MILES
from taxi_assets.core.tlc import MAX_LOCATION_ID

compat.cancel_request_timers()
compat.record_sampled_spans_only()

SETTINGS = settings.current()
# Under BentoML's server logging the root logger shows warnings only; its `bentoml` logger shows INFO.
log = logging.getLogger("bentoml.taxi_duration")
TITLE = "NYC taxi ride duration"
API_VERSION = "1"
DESCRIPTION = """Predicted duration, in minutes, of NYC green-taxi rides, from the deployed model of the taxi
monitoring platform. Every prediction and feedback is logged durably before it is answered; the platform joins
them to measure drift and error online.

* `POST /predict`: one ride; `POST /predict_batch`: up to 10,000 rides in order; `POST /feedback`: the actual
  duration of a ride predicted earlier, under the same `id`.
* Bodies are JSON (`Content-Type: application/json`, no Content-Encoding), else 415. Invalid bodies (a wrong
  type, a zone id that does not exist, NaN or infinity, a missing field) get a 400 whose message names each
  invalid field. Implausible but real values (a 600-mile or zero distance) are predicted and counted as outliers.
* A prediction carries `duration_minutes` and, for the course's client, the same value as `duration`.
* `GET /readyz` is 200 once the model is loaded and warmed up; `GET /metrics` is Prometheus' exposition."""
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


# Ids join predictions to feedback across log files, MongoDB and DuckDB: a control character (NUL above all,
# which C-string consumers truncate at) is never part of a real id.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters (NUL, newline, tab, …)")
    return value


LocationID = Annotated[int, Field(strict=True, ge=1, le=MAX_LOCATION_ID)]
RideId = Annotated[
    str,
    Field(min_length=1, max_length=128, json_schema_extra={"pattern": "^[^\\x00-\\x1f\\x7f]*$"}),
    AfterValidator(_printable),
]
PickupTime = Annotated[
    dt.datetime,
    AfterValidator(_wall_clock),
    Field(
        description=f"NYC wall-clock time (an offset is dropped), from {EARLIEST_PICKUP:%Y-%m-%d} "
        f"(inclusive) to {LATEST_PICKUP:%Y-%m-%d} (exclusive)",
        json_schema_extra={
            "formatMinimum": EARLIEST_PICKUP.isoformat(),
            "formatExclusiveMaximum": LATEST_PICKUP.isoformat(),
        },
    ),
]
PICKUP_TIME = TypeAdapter(PickupTime)
TLC_PICKUP = "lpep_pickup_datetime"


def _parsed_pickup(value: object) -> dt.datetime | None:
    try:
        return PICKUP_TIME.validate_python(value)
    except ValidationError:
        return None


def _ride_schema(schema: dict) -> None:
    """The TLC alias in the document. `pickup_datetime` stays required there: the document's readers and test
    generators (schemathesis could not generate bodies for `anyOf` required alternatives) get the documented
    name, and the alias is stated beside it."""
    properties = schema["properties"]
    properties[TLC_PICKUP] = {
        **properties["pickup_datetime"],
        "title": "Lpep Pickup Datetime",
        "description": "The TLC green-taxi column name, accepted instead of pickup_datetime (so a raw TLC row is "
        "a ride); if both are given they must agree",
    }


class Ride(BaseModel):
    """One ride as the model sees it; `id` is the caller's ride id, generated when absent. A raw TLC green-taxi
    row is a ride too: `lpep_pickup_datetime` stands for `pickup_datetime`, and other columns (VendorID,
    fare_amount, …) are ignored."""

    model_config = ConfigDict(json_schema_extra=_ride_schema)

    id: RideId | None = None
    PULocationID: LocationID
    DOLocationID: LocationID
    # No upper bound: TLC's files hold odometer glitches of up to 260,000 miles. Such a ride is predicted, logged
    # and counted as an outlier (taxi_input_outliers_total here, outlier shares in the monitoring), not refused.
    trip_distance: Annotated[
        float,
        Field(
            strict=True,
            ge=0,
            allow_inf_nan=False,
            description=f"Miles; an implausible value (0, or above {MAX_TRIP_MILES:g}) is predicted and counted as an "
            "outlier",
        ),
    ]
    pickup_datetime: Annotated[PickupTime, Field(validation_alias=AliasChoices("pickup_datetime", TLC_PICKUP))]

    @model_validator(mode="before")
    @classmethod
    def _pickup_names_agree(cls, data: object) -> object:
        if isinstance(data, dict) and "pickup_datetime" in data and TLC_PICKUP in data:
            given = data["pickup_datetime"], data[TLC_PICKUP]
            if given[0] != given[1] and _parsed_pickup(given[0]) != _parsed_pickup(given[1]):
                raise ValueError(f"pickup_datetime {given[0]!r} and {TLC_PICKUP} {given[1]!r} differ")
        return data


def _distinct_ids(rides: list[Ride]) -> list[Ride]:
    seen: dict[str, int] = {}
    for index, ride in enumerate(rides):
        if ride.id is not None:
            if ride.id in seen:
                raise ValueError(f"ride id {ride.id!r} is given twice (rides {seen[ride.id]} and {index})")
            seen[ride.id] = index
    return rides


class Prediction(BaseModel):
    id: str
    duration_minutes: float = Field(description="Predicted ride duration, minutes")
    duration: float = Field(
        description="The same value as duration_minutes, under the key the MLOps Zoomcamp course's client "
        "(send_data.py) reads"
    )
    model_tag: str = Field(description="The deployed model that made the prediction")


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class Feedback(BaseModel):
    """The actual duration, in minutes, of a ride predicted earlier under `id`. The service does not look the id
    up (that would cost a read per feedback): feedback for an id never predicted is logged like any other, and
    the ingest keeps it without a prediction to join."""

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
# Inputs predicted although no real ride looks like them: an odometer glitch beyond the distance the drift tests
# treat as missing, or no distance at all. The monitoring's outlier shares judge them against the reference.
OUTLIER_RULES = {
    "distance_above_max": lambda distance: distance > MAX_TRIP_MILES,
    "zero_distance": lambda distance: distance == 0,
}
INPUT_OUTLIERS = bentoml.metrics.Counter(
    "taxi_input_outliers_total",
    f"Rides predicted with an implausible input, by rule: trip_distance above {MAX_TRIP_MILES:g} miles, or zero",
    ["rule"],
)
INPUT_HOUR = bentoml.metrics.Histogram(
    "taxi_input_pickup_hour", "Pickup hour (wall clock) of the rides predicted", buckets=HOUR_BUCKETS
)
MODEL_SWAPS = bentoml.metrics.Counter("taxi_model_swaps_total", "Newer models swapped in without a restart")
MODEL_REFUSALS = bentoml.metrics.Counter(
    "taxi_model_refusals_total", "Newer models refused (could not load or warm up); the previous one kept serving"
)
LOG_FAILURES = bentoml.metrics.Counter("taxi_predlog_write_failures_total", "Failed prediction-log writes")
# livesum: each worker process has its own spool; the service's backlog is their sum.
SPOOL_BACKLOG = bentoml.metrics.Gauge(
    "taxi_predlog_spool_backlog", "Log records waiting for MongoDB", multiprocess_mode="livesum"
)


def _ride_columns(rides: list[Ride]) -> columnar.RideColumns:
    return columnar.RideColumns(
        id=[r.id for r in rides],
        PULocationID=np.array([r.PULocationID for r in rides], dtype=np.int64),
        DOLocationID=np.array([r.DOLocationID for r in rides], dtype=np.int64),
        trip_distance=np.array([r.trip_distance for r in rides], dtype=np.float64),
        pickup_datetime=np.array([r.pickup_datetime for r in rides], dtype="datetime64[us]"),
    )


def _with_ids(given: list[str | None]) -> list[str]:
    """The rides' ids, generated where none was given."""
    missing = given.count(None)
    if missing == len(given):  # most callers give none: no merging
        return predlog.new_record_ids(missing)
    fresh = iter(predlog.new_record_ids(missing))
    return [next(fresh) if i is None else i for i in given]


def _model_input(columns: columnar.RideColumns) -> dict[str, np.ndarray]:
    return {
        "PULocationID": columns.PULocationID,
        "DOLocationID": columns.DOLocationID,
        "trip_distance": columns.trip_distance,
        "pickup_datetime": columns.pickup_datetime,
    }


def _parse_batch(body: bytes) -> columnar.RideColumns | None:
    return columnar.parse(
        body,
        max_rides=MAX_BATCH_RIDES,
        max_location_id=MAX_LOCATION_ID,
        earliest=EARLIEST_PICKUP,
        latest=LATEST_PICKUP,
    )


WARM_UP = Ride(PULocationID=1, DOLocationID=1, trip_distance=1.0, pickup_datetime=dt.datetime(2022, 1, 1))


@bentoml.service(
    name="taxi_duration",
    description=DESCRIPTION,  # the read-me of a built bento
    workers=SETTINGS.service_workers,
    http={"host": SETTINGS.service_host, "port": SETTINGS.service_port},
    traffic={"timeout": 30},
)
class TaxiDuration:
    model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        # Starts the model process and pays its first-call costs before /readyz says yes.
        self.predictor = self.open_model(self.model)
        self.predlog = predlog.open_writer(SETTINGS.predlog_uri, SETTINGS.predlog_spool_dir)
        self.batcher = MicroBatcher(self.score)
        self._failures_seen = 0
        self._reloader: asyncio.Task | None = None
        compat.freeze_startup_heap()

    def open_model(self, model: bentoml.Model) -> ModelProcess:
        """The model's pipeline in a model process of its own, warmed up."""
        return ModelProcess(str(model.tag), bentoml.sklearn.load_model(model), _model_input(_ride_columns([WARM_UP])))

    @bentoml.on_startup
    def start_hot_reload(self) -> None:
        if SETTINGS.model_reload_seconds > 0:
            self._reloader = asyncio.get_running_loop().create_task(self._reload_forever())

    async def _reload_forever(self) -> None:
        """Serve the newest model under TAXI_MODEL_TAG: each worker looks every TAXI_MODEL_RELOAD_SECONDS, loads
        and warms a newer one off the request path, then swaps it in between two batches."""
        refused: set[str] = set()  # a version that failed once is not retried every few seconds
        while True:
            await asyncio.sleep(SETTINGS.model_reload_seconds)
            try:
                model = await asyncio.to_thread(bentoml.models.get, SETTINGS.model_tag)
            except Exception:
                log.exception("could not look up %s; still serving %s", SETTINGS.model_tag, self.predictor.tag)
                continue
            tag = str(model.tag)
            if tag == self.predictor.tag or tag in refused:
                continue
            try:
                predictor = await asyncio.to_thread(self.open_model, model)
            except Exception:
                refused.add(tag)
                MODEL_REFUSALS.inc()
                log.exception("model %s refused; still serving %s", tag, self.predictor.tag)
                continue
            previous, self.predictor = self.predictor, predictor
            previous.retire()  # its process stops once the batches it already has are answered
            MODEL_SWAPS.inc()
            log.info("now serving model %s (was %s)", tag, previous.tag)

    async def score(self, rides: list[Ride]) -> list[Prediction]:
        """Predict, log and count a batch of rides; the log write completes before anyone is answered."""
        ids, durations, tag = await self.score_columns(_ride_columns(rides))
        return [
            Prediction.model_construct(id=i, duration_minutes=d, duration=d, model_tag=tag)
            for i, d in zip(ids, durations, strict=True)
        ]

    async def score_columns(self, columns: columnar.RideColumns) -> tuple[list[str], list[float], str]:
        """Predict, log and count rides given column-wise: their ids, predicted durations and model tag."""
        predictor = self.predictor  # one model per batch, and its tag is the one answered and logged
        durations = await predictor.predict(_model_input(columns))
        ids = _with_ids(columns.id)
        predictions = durations.tolist()
        rides = {
            "id": ids,
            "PULocationID": columns.PULocationID.tolist(),
            "DOLocationID": columns.DOLocationID.tolist(),
            "trip_distance": columns.trip_distance.tolist(),
            "pickup_datetime": columns.pickup_datetime.tolist(),  # naive datetimes, logged as before
        }
        self._log(predlog.PredictionBatch(rides, predictions, predictor.tag, predlog.utc_now_iso()))
        PREDICTIONS.labels(model_tag=predictor.tag).inc(len(ids))
        compat.observe_many(PREDICTED_DURATION, durations)
        compat.observe_many(INPUT_DISTANCE, columns.trip_distance)
        for rule, flagged in OUTLIER_RULES.items():
            if count := int(flagged(columns.trip_distance).sum()):
                INPUT_OUTLIERS.labels(rule=rule).inc(count)
        compat.observe_many(INPUT_HOUR, columns.pickup_datetime.astype("datetime64[h]").astype(np.int64) % 24)
        return ids, predictions, predictor.tag

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
        self,
        rides: Annotated[
            list[Ride],
            Field(min_length=1, max_length=MAX_BATCH_RIDES, description="Ride ids, where given, must be distinct"),
            AfterValidator(_distinct_ids),
        ],
    ) -> BatchPrediction:
        """Predicted durations of up to 10,000 rides, in the order given; ride ids, where given, must be distinct."""
        # `rides` is column-wise when `_parse_batch` took the body (see compat.parse_input_first), else the
        # pydantic-validated rides of a body it declined.
        columns = rides if isinstance(rides, columnar.RideColumns) else _ride_columns(rides)
        # BatchPrediction's JSON (the annotation documents it), encoded by msgspec: BentoML passes a Response on.
        body = columnar.encode_predictions(*await self.score_columns(columns))
        return Response(body, media_type="application/json")

    @bentoml.api
    def feedback(self, feedback: Feedback, /) -> FeedbackReceipt:
        """Record the actual duration of a ride predicted earlier."""
        recorded = self._log([predlog.feedback_record(feedback.id, feedback.actual_duration)])
        return FeedbackReceipt(id=feedback.id, recorded=recorded)

    @bentoml.on_shutdown
    def close(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
        self.predictor.retire()
        self.predlog.close()


def _openapi_document() -> dict:
    return openapi.build(
        TaxiDuration.openapi_spec.asdict(),
        title=TITLE,
        description=DESCRIPTION,
        version=API_VERSION,
        models=[Ride, Prediction, BatchPrediction, Feedback, FeedbackReceipt],
    )


compat.parse_input_first(TaxiDuration, "predict_batch", "rides", _parse_batch)
TaxiDuration.add_asgi_middleware(http.JsonBodiesOnly)
TaxiDuration.add_asgi_middleware(http.OpenAPIDocument, document=_openapi_document)
