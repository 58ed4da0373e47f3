"""An empty BentoML service with the real service's worker-process fixes (bento_service/compat.py): the stricter
baseline for the real service's throughput. The same ride body as the stock empty service
(bench/stock_empty_service.py), parsed by pydantic the same way; no model, no logging."""

import os

import bentoml

from bench.stock_empty_service import Answer, Ride
from bento_service import compat

compat.cancel_request_timers()
compat.record_sampled_spans_only()


@bentoml.service(name="empty", workers=int(os.getenv("TAXI_SERVICE_WORKERS", "1")))
class Empty:
    def __init__(self) -> None:
        compat.freeze_startup_heap()

    @bentoml.api
    async def predict(self, ride: Ride, /) -> Answer:
        return Answer(duration_minutes=0.0)
