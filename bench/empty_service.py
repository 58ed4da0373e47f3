"""An empty BentoML service, the baseline for the real service's throughput: same body, no model, no logging."""

import os

import bentoml


@bentoml.service(name="empty", workers=int(os.getenv("TAXI_SERVICE_WORKERS", "1")))
class Empty:
    @bentoml.api
    async def predict(self, ride: dict, /) -> dict:
        return ride
