"""The Prometheus Pushgateway that monitoring assets push their figures to; optional."""

import logging
from collections.abc import Iterable

import dagster as dg

from taxi_assets.core.metrics import Sample

logger = logging.getLogger(__name__)


class Pushgateway(dg.ConfigurableResource):
    """Pushes one group of gauges per job and grouping key; an empty `url` disables pushing.

    A push replaces the whole group (HTTP PUT), so a re-materialized month or window never keeps stale series.
    """

    url: str = ""
    timeout_seconds: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def push(
        self,
        job: str,
        grouping_key: dict[str, str],
        samples: Iterable[Sample],
        log: logging.Logger | None = None,
    ) -> bool:
        """Push `samples` as gauges; True when they landed. Errors are logged, not raised: the figures are
        already stored in DuckDB, and a monitoring outage must not fail the runs it monitors."""
        from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

        log = log or logger
        if not self.enabled:
            log.info("TAXI_PUSHGATEWAY_URL is not set: %s figures are not pushed", job)
            return False
        samples = list(samples)
        registry = CollectorRegistry()
        gauges: dict[str, Gauge] = {}
        for sample in samples:
            if sample.name not in gauges:
                gauges[sample.name] = Gauge(sample.name, sample.documentation, list(sample.labels), registry=registry)
            gauge = gauges[sample.name]
            (gauge.labels(**sample.labels) if sample.labels else gauge).set(sample.value)
        try:
            push_to_gateway(
                self.url, job=job, registry=registry, grouping_key=grouping_key, timeout=self.timeout_seconds
            )
        except OSError as error:
            log.warning("push of %s %s to %s failed: %s", job, grouping_key, self.url, error)
            return False
        log.info("pushed %d series of %s %s to %s", len(samples), job, grouping_key, self.url)
        return True
