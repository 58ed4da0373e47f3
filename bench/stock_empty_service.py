"""BentoML's stock empty service, the baseline issue 21 names for `/predict`: the ride body parsed by pydantic,
no model, no logging, and none of the worker-process fixes of bento_service/compat.py (so its request timers
outlive each request, as they do in any BentoML 1.4.40 service). bench/empty_service.py is the stricter
baseline, with those fixes."""

import datetime as dt
import os

import bentoml
from pydantic import BaseModel


class Ride(BaseModel):
    PULocationID: int
    DOLocationID: int
    trip_distance: float
    pickup_datetime: dt.datetime


class Answer(BaseModel):
    duration_minutes: float


@bentoml.service(name="stock_empty", workers=int(os.getenv("TAXI_SERVICE_WORKERS", "1")))
class StockEmpty:
    @bentoml.api
    async def predict(self, ride: Ride, /) -> Answer:
        return Answer(duration_minutes=0.0)
