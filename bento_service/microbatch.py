"""Gather concurrent single-item requests into one vectorised call.

A one-row scikit-learn predict costs about as much as a 50-row one, and more than a whole HTTP request, so
concurrent `/predict` calls are served by one call on all of them. No timer is involved: the first request is
dispatched on the next event-loop turn, and the requests that arrive while a batch is being computed form the
next batch, so an idle service adds no latency and a busy one batches by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Awaits `fn(items) -> results` (same length, same order) on batches of concurrently submitted items,
    one batch at a time."""

    def __init__(self, fn: Callable[[list[T]], Awaitable[Sequence[R]]], max_batch: int = 512) -> None:
        self._fn = fn
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task | None = None

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                results = await self._fn([item for item, _ in batch])
            except Exception as error:  # every caller of the batch gets the error, the drainer carries on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
