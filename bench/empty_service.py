"""An empty BentoML service, the baseline for the real service's throughput: the same ride body, parsed by
pydantic the same way, the same worker-process fixes (bento_service/compat.py), and no model, no logging."""

import datetime as dt
import os

import bentoml
from pydantic import BaseModel

from bento_service import compat

compat.cancel_request_timers()


class Ride(BaseModel):
    PULocationID: int
    DOLocationID: int
    trip_distance: float
    pickup_datetime: dt.datetime


class Answer(BaseModel):
    duration_minutes: float


@bentoml.service(name="empty", workers=int(os.getenv("TAXI_SERVICE_WORKERS", "1")))
class Empty:
    def __init__(self) -> None:
        compat.freeze_startup_heap()

    @bentoml.api
    async def predict(self, ride: Ride, /) -> Answer:
        return Answer(duration_minutes=0.0)
