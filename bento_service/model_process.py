"""The model pipeline in a process of its own, so predicting does not compete with HTTP handling for the GIL.

A batch of rides costs the pipeline a fixed ~5-15 ms of pandas and scikit-learn work, with the GIL held: run in
the event loop's process it stalls request parsing for that long, so throughput fell to about half of an empty
service's. In a child process it runs on the other core while the event loop keeps accepting and parsing, and
the requests arriving meanwhile form the next batch. Only plain columns cross the process boundary.

The pipeline's own steps prepare the features (the ones training used); a gradient-boosting regressor at its end
then predicts as boosted_trees.BoostedTrees, its answers bit for bit in a fraction of its time.

This module stays light (no bentoml): the spawned child imports it to find the functions it runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection

import numpy as np
import pandas as pd
import sklearn

from bento_service.boosted_trees import BoostedTrees
from taxi_assets.core import model as taxi_model

log = logging.getLogger(__name__)

Columns = dict[str, list]


# Typed NumPy columns: a frame built from them costs a fifth of one that pandas infers from lists (0.15 against
# 0.8 ms for a /predict-sized batch), a fixed cost of every batch.
_DTYPES = {
    "PULocationID": "int64",
    "DOLocationID": "int64",
    "trip_distance": "float64",
    "pickup_datetime": "datetime64[us]",
}


def _predict(pipeline, trees: BoostedTrees | None, columns: Columns) -> np.ndarray:
    frame = pd.DataFrame({field: np.array(columns[field], dtype=dtype) for field, dtype in _DTYPES.items()})
    if trees is None:
        return taxi_model.predict(pipeline, frame)
    return trees.predict(taxi_model.regressor_input(pipeline, frame))


def served_trees(pipeline, rides: Columns) -> BoostedTrees | None:
    """The trees that predict for `pipeline`'s regressor when it is gradient boosting, else None (the pipeline
    predicts). Read in the parent: the scikit-learn internals are compat's, and compat imports BentoML, which the
    child does without. scikit-learn is not pinned, so the trees must give the pipeline's own answers, bit for
    bit, on `rides` (the warm-up rides) before they serve: a version whose internals read differently is served
    by the pipeline, slower but right, and the log says so."""
    from bento_service import compat

    if not hasattr(pipeline, "steps"):
        return None
    try:
        trees = compat.boosted_trees(pipeline.steps[-1][1])
        if trees is None or np.array_equal(_predict(pipeline, trees, rides), _predict(pipeline, None, rides)):
            return trees
        reason = "answers that differ from scikit-learn's"
    except Exception as error:  # the internals compat reads are not there: scikit-learn changed them
        reason = repr(error)
    log.warning(
        "model served by the scikit-learn pipeline: the fast tree predictor gave %s (scikit-learn %s)",
        reason,
        sklearn.__version__,
    )
    return None


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_freed_memory() -> None:
    """Have malloc reuse freed blocks instead of handing them back to the kernel. A 1,000-ride batch allocates a
    dozen arrays of 0.4-0.8 MB: glibc maps each afresh and unmaps it when freed, and the ~750 page faults a batch
    cost as much CPU as the prediction itself (1.7 ms of system time beside 2.4 ms of user time)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:  # not glibc: its allocator is left as it is
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum; a 10,000-ride batch's largest array is 4 MB
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def _serve(conn: Connection, pipeline, trees: BoostedTrees | None) -> None:
    """The child's loop: one batch of columns in, its predictions (or the exception raised) out."""
    _keep_freed_memory()
    # The service validated every value (finite, typed) and the pipeline's parameters were checked when it was
    # fitted: scikit-learn's own re-checks were a sixth of a 1,000-ride predict, and this process is the batch
    # path's bound.
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
    while True:
        try:
            columns = conn.recv()
        except EOFError:  # the parent closed the pipe or died
            return
        try:
            answer = _predict(pipeline, trees, columns)
        except Exception as error:  # the callers of the batch get it, the child serves on
            answer = error
        conn.send(answer)


class ModelProcess:
    """Predicts with `pipeline`, the model `tag`, in one spawned child process, started again if it dies.

    Batches go over a pipe whose answers the event loop watches itself (`add_reader`). A ProcessPoolExecutor
    moves every batch through two helper threads each way, and their GIL hand-offs cost the request-handling
    process more CPU per batch than the pickling does.
    """

    def __init__(self, tag: str, pipeline, warm_up: Columns) -> None:
        self.tag = tag
        self._pipeline = pipeline
        self._trees = served_trees(pipeline, warm_up)
        # One batch in flight: the child serves one at a time, and a large batch written while the child is
        # still writing the previous answer would block both ends.
        self._lock = asyncio.Lock()
        self._users = 0
        self._retired = False
        self._start()
        # Blocks until the child has imported everything and paid the first-call costs: ready means ready. A
        # model that cannot predict the warm-up rides, or predicts nonsense, never serves.
        try:
            self._conn.send(warm_up)
            answer = self._answer()
            if answer.shape != (len(next(iter(warm_up.values()))),) or not np.isfinite(answer).all():
                raise ValueError(f"model {tag} predicted {answer!r} for the warm-up rides")
        except BaseException:
            self._stop()
            raise

    def _start(self) -> None:
        # spawn, not fork: the parent runs threads (event loop, log flusher) that a fork would copy mid-state.
        context = multiprocessing.get_context("spawn")
        self._conn, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end, self._pipeline, self._trees), daemon=True)
        self._process.start()
        child_end.close()  # so that the child's death reads as end-of-file here
        # Reaps the child the moment it exits, so a dead one never lingers as a zombie until the next batch.
        threading.Thread(target=self._process.join, name="model-process-reaper", daemon=True).start()

    def _stop(self) -> None:
        self._conn.close()  # the child's recv sees end-of-file and returns
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def _answer(self) -> np.ndarray:
        answer = self._conn.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def _exchange(self, columns: Columns) -> np.ndarray:
        loop = asyncio.get_running_loop()
        self._conn.send(columns)
        readable = loop.create_future()
        fd = self._conn.fileno()
        loop.add_reader(fd, readable.set_result, None)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
            # uvloop leaves a watched descriptor non-blocking; `Connection` reads and writes whole messages only on
            # a blocking one (an answer may still be arriving in pieces, a large batch may not fit the buffer).
            os.set_blocking(fd, True)
        return self._answer()

    async def _predict_locked(self, columns: Columns) -> np.ndarray:
        async with self._lock:
            try:
                return await self._exchange(columns)
            except (EOFError, OSError):
                log.error("the model process died; starting a new one and retrying the batch once")
                self._stop()
                self._start()
                return await self._exchange(columns)

    async def _predict_counted(self, columns: Columns) -> np.ndarray:
        try:
            return await self._predict_locked(columns)
        finally:
            self._users -= 1
            if self._retired and not self._users:
                self._stop()

    async def predict(self, columns: Columns) -> np.ndarray:
        # Counted before anything awaits, so that `retire` never stops the child under a batch already handed
        # to it. Shielded: a caller that gives up must not leave its answer in the pipe for the next batch.
        self._users += 1
        return await asyncio.shield(self._predict_counted(columns))

    def retire(self) -> None:
        """Stop the child once the batches already submitted are answered (a newer model took over)."""
        self._retired = True
        if not self._users:
            self._stop()
