"""Worker-process fixes that keep garbage-collection pauses out of request latency (p99 was ~250 ms).

BentoML 1.4's TimeoutMiddleware arms a `traffic.timeout` timer per request and never cancels it, so each request
leaves a timer handle, a future and the request's tracing context (span, attributes, locks: a few dozen objects)
alive for the whole timeout: at 1,000 req/s and 30 s, some 30,000 requests' worth. Python's full collection
scans all of them, and the import-time heap besides, and it ran every second or so for 100-230 ms. With the timer
cancelled and the startup heap frozen, a full collection takes about 5 ms.

Light on purpose: the empty baseline service uses it too, so the bench compares the model's cost, not this one.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.responses import JSONResponse


async def _timeout_middleware_call(self: TimeoutMiddleware, scope, receive, send) -> None:
    """BentoML 1.4.40's `TimeoutMiddleware.__call__`, with the timer cancelled once the request is done."""
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: dict[str, Any]) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except asyncio.TimeoutError:
        if fut.cancel():
            error = {"error": f"Not able to process the request in {self.timeout} seconds"}
            await JSONResponse(error, status_code=504)(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()


def cancel_request_timers() -> None:
    """Install the timer-cancelling TimeoutMiddleware; call at import of a service module."""
    TimeoutMiddleware.__call__ = _timeout_middleware_call


def freeze_startup_heap() -> None:
    """Exempt everything allocated so far (imports, the model) from future collections; call at the end of the
    service's `__init__`. Those objects live as long as the process, so scanning them only costs pause time."""
    gc.freeze()
