"""The model pipeline in a process of its own, so predicting does not compete with HTTP handling for the GIL.

A batch of rides costs the pipeline a fixed ~5-15 ms of pandas and scikit-learn work, with the GIL held: run in
the event loop's process it stalls request parsing for that long, so throughput fell to about half of an empty
service's. In a child process it runs on the other core while the event loop keeps accepting and parsing, and
the requests arriving meanwhile form the next batch. Only plain columns cross the process boundary.

This module stays light (no bentoml): the spawned child imports it to find the functions it runs.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pandas as pd

from taxi_assets.core import model as taxi_model

log = logging.getLogger(__name__)

Columns = dict[str, list]

_pipeline = None


def _install(pipeline) -> None:
    global _pipeline
    _pipeline = pipeline


def _predict(columns: Columns) -> np.ndarray:
    frame = pd.DataFrame(columns, columns=taxi_model.FEATURE_FIELDS)
    frame["pickup_datetime"] = pd.to_datetime(frame["pickup_datetime"])
    return taxi_model.predict(_pipeline, frame)


class ModelProcess:
    """Predicts with `pipeline` in one spawned child process, started again if it dies."""

    def __init__(self, pipeline, warm_up: Columns) -> None:
        self._pipeline = pipeline
        self._pool = self._start()
        # Blocks until the child has imported everything and paid the first-call costs: ready means ready.
        self._pool.submit(_predict, warm_up).result()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs threads (event loop, log flusher) that a fork would copy mid-state.
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_install,
            initargs=(self._pipeline,),
        )

    async def predict(self, columns: Columns) -> np.ndarray:
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            return await loop.run_in_executor(pool, _predict, columns)
        except BrokenProcessPool:
            log.error("the model process died; starting a new one and retrying the batch once")
            if self._pool is pool:
                self._pool = self._start()
            return await loop.run_in_executor(self._pool, _predict, columns)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
