"""Resources that more than one capability uses: the DuckDB warehouse, the BentoML model registry, the
Pushgateway and the automation policy. The first three take their deployment-specific values as `dg.EnvVar` when
the variable is set, so the UI shows the variable's name and never its value (a Pushgateway URL may carry a
password); otherwise the embedded default from `taxi_assets.settings`. The policy holds values, not variables: they
are no secret, and the point is that the UI shows the promotion mode and minimum gain a run used.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from taxi_assets import execution, settings
from taxi_assets.core.metrics import Sample

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

logger = logging.getLogger(__name__)

DUCKDB_POOL = "duckdb"
DEPLOYED_MODEL = "taxi_duration_deployed"


def configured(field: str) -> Any:
    """The resource value for a setting: `dg.EnvVar(<its variable>)` when set, else its embedded default (an
    integer setting's as an integer, and its variable read as one)."""
    setting = settings.SETTINGS[field]
    if setting.kind is int:
        return dg.EnvVar.int(setting.env) if os.environ.get(setting.env) else int(setting.default)
    return dg.EnvVar(setting.env) if os.environ.get(setting.env) else setting.default


class Warehouse(DuckDBResource):
    """The DuckDB file: a connection that creates its folder and always closes, even when the body fails.

    DuckDB allows one writing process per file: every asset that opens it takes the `duckdb` concurrency pool.
    Connections are short: open one per step, never hold it across steps, so that the next run in the pool
    finds the file free.

    Set up for a run, it records which process executes the run when the run's executor did not
    (`dg.materialize`, `execute_in_process`): that run holds the pool's slot while its step runs, and if its
    process dies (kill -9, OOM kill) a waiting step or run monitoring can then tell and free the slot
    (`taxi_assets.execution.record_worker`).
    """

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        execution.record_worker(context.instance, context.run)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        database = settings.resolve(self.database)
        if database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        conn = duckdb.connect(database, config={"custom_user_agent": "taxi-monitoring", **self.connection_config})
        try:
            yield conn
        finally:
            conn.close()


# BentoML fixes its store from BENTOML_HOME once per process, on first use; this is the home this process chose.
_process_bentoml_home: str | None = None


class ModelRegistry(dg.ConfigurableResource):
    """BentoML's local model store under `home`, shared with the Bento service: saves and loads scikit-learn
    pipelines as BentoML models.

    BentoML reads its home from the `BENTOML_HOME` environment variable once per process, so the registry sets
    it before BentoML's first use and refuses a second, different home in the same process (a Dagster run is a
    process of its own). BentoML is imported on first use, so loading the definitions stays fast.
    """

    home: str

    def _bentoml(self) -> Any:
        global _process_bentoml_home
        home = settings.resolve(self.home)
        if _process_bentoml_home is None:
            os.environ["BENTOML_HOME"] = home
            _process_bentoml_home = home
        elif _process_bentoml_home != home:
            raise RuntimeError(
                f"this process already uses the BentoML store {_process_bentoml_home}; BentoML has one store per "
                f"process, so {home} needs a process of its own"
            )
        import bentoml

        return bentoml

    def save(self, pipeline: Pipeline, name: str, labels: dict[str, str], metadata: dict[str, Any]) -> str:
        """Store `pipeline` as a new version of `name`; return its tag (`name:version`)."""
        bento_model = self._bentoml().sklearn.save_model(name, pipeline, labels=labels, metadata=metadata)
        return str(bento_model.tag)

    def load(self, tag: str) -> Pipeline:
        return self._bentoml().sklearn.load_model(tag)

    def info(self, tag: str) -> dict[str, Any]:
        """Tag, labels, metadata and size on disk of the stored model `tag` (`name:latest` works too)."""
        bento_model = self._bentoml().models.get(tag)
        return {
            "tag": str(bento_model.tag),
            "labels": dict(bento_model.info.labels),
            "metadata": dict(bento_model.info.metadata),
            "size_bytes": sum(path.stat().st_size for path in Path(bento_model.path).rglob("*") if path.is_file()),
        }

    def latest(self, name: str, labels: dict[str, str]) -> str | None:
        """The newest version of `name` carrying all of `labels`, or None."""
        bentoml = self._bentoml()
        try:
            versions = bentoml.models.list(name)
        except bentoml.exceptions.NotFound:
            return None
        matching = [bento_model for bento_model in versions if labels.items() <= bento_model.info.labels.items()]
        if not matching:
            return None
        return str(max(matching, key=lambda bento_model: bento_model.info.creation_time).tag)

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every version of `name`, newest first: tag, labels and metadata (as `info`, without the size)."""
        bentoml = self._bentoml()
        try:
            versions = bentoml.models.list(name)
        except bentoml.exceptions.NotFound:
            return []
        versions = sorted(versions, key=lambda bento_model: bento_model.info.creation_time, reverse=True)
        return [
            {"tag": str(version.tag), "labels": dict(version.info.labels), "metadata": dict(version.info.metadata)}
            for version in versions
        ]

    def deployed(self) -> dict[str, Any]:
        """What scoring and monitoring report about the deployed model: tag, training month, recipe, validation
        month and RMSE (no pipeline: unpickling one takes 0.1 s, which a step that only names the model spares)."""
        info = self.info(f"{DEPLOYED_MODEL}:latest")
        return {
            "tag": info["tag"],
            "source_tag": info["labels"]["source_tag"],
            "training_month": info["labels"]["training_month"],
            "recipe": info["labels"]["recipe"],
            "validation_month": info["metadata"]["validation_month"],
            "validation_rmse": float(info["metadata"]["validation_rmse"]),
        }

    def load_deployed(self) -> tuple[Pipeline, dict[str, Any]]:
        """The deployed pipeline and `deployed()`'s summary of it."""
        summary = self.deployed()
        return self.load(summary["tag"]), summary


class Pushgateway(dg.ConfigurableResource):
    """The Prometheus Pushgateway the monitoring pushes its figures to; an empty `url` disables pushing.

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
        # The URL may carry credentials: logs name the gateway without them.
        gateway = settings.redact(self.url)
        try:
            push_to_gateway(
                self.url, job=job, registry=registry, grouping_key=grouping_key, timeout=self.timeout_seconds
            )
        except OSError as error:
            log.warning("push of %s %s to %s failed: %s", job, grouping_key, gateway, settings.redact(str(error)))
            return False
        log.info("pushed %d series of %s %s to %s", len(samples), job, grouping_key, gateway)
        return True

    def delete_groups(self, job: str, log: logging.Logger | None = None) -> list[dict[str, str]]:
        """Delete every group of `job` (all its grouping keys) through the Pushgateway's HTTP API; return the
        grouping keys deleted. Errors are logged, not raised, as for `push`."""
        import requests  # the URL may carry credentials: requests turns them into basic auth

        log = log or logger
        if not self.enabled:
            return []
        gateway = settings.redact(self.url)
        base = self.url.rstrip("/")
        deleted = []
        try:
            answer = requests.get(f"{base}/api/v1/metrics", timeout=self.timeout_seconds)
            answer.raise_for_status()
            for group in answer.json()["data"]:
                labels = dict(group["labels"])
                if labels.pop("job", None) != job:
                    continue
                # Every label as base64 (the Pushgateway's `@base64` form), whatever characters its value holds.
                path = "/".join(f"{name}@base64/{_base64(value)}" for name, value in [("job", job), *labels.items()])
                requests.delete(f"{base}/metrics/{path}", timeout=self.timeout_seconds).raise_for_status()
                deleted.append(labels)
        except (requests.RequestException, ValueError, KeyError) as error:
            log.warning("deleting the groups of %s on %s failed: %s", job, gateway, settings.redact(str(error)))
            return deleted
        log.info("deleted %d groups of %s from %s: %s", len(deleted), job, gateway, deleted)
        return deleted


def _described(field: str) -> Any:
    return Field(description=f"{settings.SETTINGS[field].description} ({settings.SETTINGS[field].env})")


class AutomationPolicy(dg.ConfigurableResource):
    """What the platform decides by itself at run time: whether and when the retraining loop deploys a challenger,
    which model is deployed first, and whether an alarm requests the run its runbook names.

    Taken from the settings (TAXI_PROMOTION, TAXI_PROMOTION_MIN_GAIN, TAXI_DEPLOYED_MONTH, TAXI_ALERT_RUNS) when the
    definitions load; a run can override any of them in its config (the Launchpad's `resources.policy`), and the
    assets that apply them record the values used in their metadata. TAXI_AUTOMATION and the sensors' intervals
    are not here: Dagster fixes a sensor's default status and interval when it loads the definitions.
    """

    promotion: Literal["auto", "manual"] = _described("promotion")
    promotion_min_gain: float = _described("promotion_min_gain")
    deployed_month: str = _described("deployed_month")
    alert_runs: Literal["on", "off"] = _described("alert_runs")

    @classmethod
    def from_settings(cls, current: settings.Settings) -> AutomationPolicy:
        return cls(**{field: getattr(current, field) for field in cls.model_fields})

    def metadata(self) -> dict[str, str | float]:
        """The promotion policy a materialization applied, as its metadata."""
        return {
            "promotion_mode": self.promotion,
            "min_gain": float(self.promotion_min_gain),
            "deployed_month": self.deployed_month,
        }


def _base64(value: str) -> str:
    # The Pushgateway reads an empty value as "=" (RFC 4648 URL-safe alphabet, padding kept).
    return base64.urlsafe_b64encode(value.encode()).decode() or "="


def shared_resources() -> dict[str, dg.ConfigurableResource]:
    """The shared resources for the current environment (built at call time: tests point them elsewhere)."""
    return {
        "warehouse": Warehouse(database=configured("duckdb_path")),
        "model_registry": ModelRegistry(home=configured("bentoml_home")),
        "pushgateway": Pushgateway(url=configured("pushgateway_url")),
        "policy": AutomationPolicy.from_settings(settings.load()),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=shared_resources())
