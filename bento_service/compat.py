"""Every use of a private BentoML or prometheus_client interface, in one place, pinned to the versions it was
written for (pyproject: `bentoml==1.4.40`; tests/test_compat.py fails when the upstream code changes).

1. Request timers (BentoML 1.4.40, `bentoml/_internal/server/http/traffic.py`, `TimeoutMiddleware.__call__`).
   Upstream arms a `traffic.timeout` timer per request with `loop.call_later` and never cancels it, so each
   request leaves a timer handle, a future and the request's tracing context (span, attributes, locks: a few
   dozen objects) alive for the whole timeout: at 1,000 req/s and 30 s, some 30,000 requests' worth. Python's
   full collection scans all of them, and it ran every second or so for 100-230 ms: p99 was ~250 ms. No upstream
   issue or fix is known (checked against 1.4.40); `cancel_request_timers` installs the same method with the
   timer cancelled once the request is done. Together with `freeze_startup_heap` (public `gc.freeze`), a full
   collection takes about 5 ms.
2. Histogram bulk observe (prometheus_client `Histogram._upper_bounds/_buckets/_sum`, BentoML's lazy metric
   wrapper `_proxy`). The public `observe` in a loop costs 3.1 ms per 1,000 values in multiprocess mode (each
   value is an mmap write per bucket); three histograms per 1,000-ride batch were ~9 ms of a ~20 ms batch.
   `observe_many` adds a batch with one increment per bucket: 0.03 ms per 1,000.
3. An API's input parsing (BentoML 1.4.40 `APIMethod.input_spec`, the pydantic model whose `model_validate_json`
   the JSON serde calls on the request body, `_bentoml_impl/serde.py` `JSONSerde.deserialize_model`).
   `parse_input_first` lets a column-wise parser take the body first and build the input without per-item models;
   a body it declines goes through the pydantic model as before, so the 4xx answers stay BentoML's own.
4. A fitted HistGradientBoostingRegressor's trees (scikit-learn `_predictors`, `_baseline_prediction`,
   `_bin_mapper.make_known_categories_bitsets`, the node records of `TreePredictor.nodes`), for
   boosted_trees.BoostedTrees, which predicts 1,000 rides 7 to 14 times faster than scikit-learn does. Not pinned
   (scikit-learn>=1.5): tests/test_boosted_trees.py checks its answers against scikit-learn's own, bit for bit,
   and the model process checks them on the warm-up rides before the trees serve (else the pipeline predicts).

5. Unsampled tracing spans (BentoML 1.4.40 `bentoml/_internal/utils/telemetry.py` `ParentBasedTraceIdRatio`, which
   `BentoMLContainer.tracer_provider` imports when it builds the provider). Upstream's sampler records every span it
   does not sample (`TraceIdRatioBasedAlwaysRecording`, and `RECORD_ONLY` under an unsampled parent), and
   `tracing.sample_rate` defaults to 0: each request builds the full SDK spans of its middlewares, attributes and
   all, that no exporter ever receives, about a tenth of the request worker's CPU per `/predict`.
   `record_sampled_spans_only` makes the sampler OpenTelemetry's own `ParentBased(TraceIdRatioBased(rate))`: a
   sampled span is recorded and exported as before; an unsampled one is a non-recording span that still carries
   its trace and span ids, so the access log shows them as before (`tests/test_service.py` reads them there).

The stricter empty baseline (bench/empty_service.py) uses 1. and 5. too, so the bench compares the model's cost;
the stock empty baseline (bench/stock_empty_service.py) is BentoML as it comes.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import numpy as np
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from bentoml._internal.utils import telemetry
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from starlette.responses import JSONResponse

from bento_service.boosted_trees import CATEGORIES, BoostedTrees, Tree

BENTOML_VERSION = "1.4.40"
# The upstream method `_timeout_middleware_call` replaces, kept to check its source has not changed.
UPSTREAM_TIMEOUT_CALL = TimeoutMiddleware.__call__
# The upstream sampler `SampledSpansRecorded` replaces, kept likewise.
UPSTREAM_SAMPLER = telemetry.ParentBasedTraceIdRatio


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


class SampledSpansRecorded(ParentBased):
    """BentoML's sampler by its name and signature, recording only what it samples: OpenTelemetry's default
    `ParentBased` sampler over a trace-id ratio (unsampled parents' children are dropped, sampled ones' kept)."""

    def __init__(self, rate: float) -> None:
        super().__init__(root=TraceIdRatioBased(rate=rate))


def record_sampled_spans_only() -> None:
    """Make BentoML's tracer provider record the spans it samples only; call at import of a service module (the
    worker builds the provider after importing the service)."""
    telemetry.ParentBasedTraceIdRatio = SampledSpansRecorded


def cancel_request_timers() -> None:
    """Install the timer-cancelling TimeoutMiddleware; call at import of a service module."""
    TimeoutMiddleware.__call__ = _timeout_middleware_call


def freeze_startup_heap() -> None:
    """Exempt everything allocated so far (imports, the model) from future collections; call at the end of the
    service's `__init__`. Those objects live as long as the process, so scanning them only costs pause time."""
    gc.freeze()


def observe_many(histogram, values: np.ndarray) -> None:
    """`histogram.observe(v)` for every v in `values`, with one increment per bucket."""
    metric = getattr(histogram, "_proxy", histogram)  # bentoml.metrics creates the prometheus_client metric lazily
    counts = np.bincount(np.searchsorted(metric._upper_bounds, values), minlength=len(metric._upper_bounds))
    for bucket, count in zip(metric._buckets, counts, strict=True):
        if count:
            bucket.inc(int(count))
    metric._sum.inc(float(values.sum()))


def parse_input_first(service, api: str, field: str, parse: Callable[[bytes], Any | None]) -> None:
    """Before `service`'s `api` validates its JSON body, try `parse(body)`: a result other than None becomes the
    API's `field` argument as it is; None leaves the body to the pydantic input model."""
    spec = service.apis[api].input_spec
    validate = spec.model_validate_json

    def model_validate_json(json_data, *args, **kwargs):
        parsed = parse(json_data) if isinstance(json_data, bytes) else None
        if parsed is None:
            return validate(json_data, *args, **kwargs)
        return spec.model_construct(**{field: parsed})

    spec.model_validate_json = staticmethod(model_validate_json)


def boosted_trees(regressor) -> BoostedTrees | None:
    """`regressor`'s predict as a BoostedTrees when it is a fitted squared-error HistGradientBoostingRegressor
    (whose predictions are its raw sums), else None."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    if not isinstance(regressor, HistGradientBoostingRegressor) or regressor.loss != "squared_error":
        return None
    known_bitsets, bitset_of_feature = regressor._bin_mapper.make_known_categories_bitsets()
    categories = np.arange(CATEGORIES)

    def in_bitset(bitset: np.ndarray) -> np.ndarray:
        return ((bitset[..., categories // 32] >> (categories % 32)) & 1).astype(bool)

    trees = []
    for (predictor,) in regressor._predictors:
        nodes = predictor.nodes
        missing_left = nodes["missing_go_to_left"].astype(bool)
        split = nodes["is_categorical"].astype(bool)
        # scikit-learn's rule for a category: in the split's left set goes left; any other known category goes
        # right; an unknown one goes where missing values go.
        categories_left = np.zeros((len(nodes), CATEGORIES), dtype=bool)
        categories_left[split] = in_bitset(predictor.raw_left_cat_bitsets[nodes["bitset_idx"][split]]) | (
            ~in_bitset(known_bitsets[bitset_of_feature[nodes["feature_idx"][split]]]) & missing_left[split, None]
        )
        trees.append(
            Tree(
                is_leaf=nodes["is_leaf"].astype(bool),
                value=nodes["value"],
                left=nodes["left"],
                right=nodes["right"],
                feature=nodes["feature_idx"],
                categorical=split,
                threshold=nodes["num_threshold"],
                categories_left=categories_left,
                missing_left=missing_left,
            )
        )
    return BoostedTrees(float(regressor._baseline_prediction.item()), trees)
