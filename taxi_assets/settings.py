"""Every setting of the platform in one place: its environment variable, its embedded default, what it means.

Dagster (resources, partitions, sensors), the Bento service and the command-line tools all read their
configuration here, so a variable's name and default exist once: each is one field of `Settings`, whose metadata
carries its variable, default and meaning (`SETTINGS` is derived from those fields). Relative paths are relative
to the repository root, whatever directory a process starts in. This module imports neither dagster nor bentoml:
the service uses it too.

`load()` reads the environment once per call; `current()` is that reading, cached for the life of the process
(the service and the partition definitions take it at import). Dagster resources do not take values from here
but name the variable (`dg.EnvVar`), so the UI shows which variable a deployment set and never its value;
`taxi_assets.defs.resources` builds them from `SETTINGS`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"

TLC_TRIP_DATA_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_{month}.parquet"
TLC_ZONE_LOOKUP_URL = "https://d37ci6vzurychx.cloudfront.net/misc/taxi_zone_lookup.csv"
# The shared read-only copy of TLC's files next to the repository (relative to its root), where the machines this
# project runs on keep them.
LOCAL_TLC_MIRROR = "../shared/data/tlc"


def default_trip_data_url(root: Path = PROJECT_ROOT) -> str:
    """The embedded trip-data source of every entry point (`make up`, `make demo`, `taxi-replay`, `taxi-backfill`,
    the Dagster code): the local mirror when it holds TLC green-taxi files, else TLC's public address."""
    mirror = root / LOCAL_TLC_MIRROR
    return LOCAL_TLC_MIRROR if any(mirror.glob("green_tripdata_*.parquet")) else TLC_TRIP_DATA_URL


@dataclasses.dataclass(frozen=True)
class Setting:
    env: str
    default: str
    description: str
    path: bool = False
    """A filesystem location (or a URL): a relative path is taken relative to the repository root."""
    choices: tuple[str, ...] = ()
    kind: type = str
    """What the value is read as (str, int or float): the type of its `Settings` field."""


def _setting(env: str, default: str, description: str, *, path: bool = False, choices: tuple[str, ...] = ()) -> Any:
    """A `Settings` field: its variable, default and meaning travel with it as the field's metadata."""
    return dataclasses.field(metadata={"setting": Setting(env, default, description, path, choices)})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting, declared once: the field's name, its type, and (metadata) its variable, default and meaning.
    The order is the README's and .env.example's."""

    trip_data_url: str = _setting(
        "TAXI_TRIP_DATA_URL",
        default_trip_data_url(),
        "TLC green-taxi files: a URL or path template with {month}, a file:// template, or a directory; default: "
        f"the local mirror {LOCAL_TLC_MIRROR} when it exists, else TLC's public address",
        path=True,
    )
    zone_lookup_url: str = _setting(
        "TAXI_ZONE_LOOKUP_URL", "", "Zone lookup CSV; empty: next to local trip files, else TLC's address", path=True
    )
    start_month: str = _setting("TAXI_START_MONTH", "2021-01", "First monthly partition (YYYY-MM)")
    duckdb_path: str = _setting("TAXI_DUCKDB_PATH", "data/warehouse.duckdb", "The DuckDB warehouse file", path=True)
    cache_dir: str = _setting("TAXI_CACHE_DIR", "data/cache", "Downloaded trip files, kept once checked", path=True)
    reports_dir: str = _setting("TAXI_REPORTS_DIR", "data/reports", "Evidently HTML reports", path=True)
    bentoml_home: str = _setting(
        "BENTOML_HOME", "data/bentoml", "BentoML's model store (shared with the service)", path=True
    )
    predlog_uri: str = _setting(
        "TAXI_PREDLOG_URI", "data/prediction_logs", "Prediction-log store: a directory, or mongodb://…", path=True
    )
    predlog_spool_dir: str = _setting(
        "TAXI_PREDLOG_SPOOL_DIR", "data/prediction_logs_spool", "Local journal of the MongoDB store", path=True
    )
    predlog_start_day: str = _setting(
        "TAXI_PREDLOG_START_DAY", "2024-01-01", "First daily partition of prediction_logs (YYYY-MM-DD)"
    )
    model_tag: str = _setting("TAXI_MODEL_TAG", "taxi_duration_deployed:latest", "The model the service serves")
    model_reload_seconds: int = _setting(
        "TAXI_MODEL_RELOAD_SECONDS",
        "5",
        "How often the service looks for a newer model under TAXI_MODEL_TAG and swaps it in; 0: never",
    )
    deployed_month: str = _setting(
        "TAXI_DEPLOYED_MONTH", "2021-01", "Training month deployed_model deploys first (while nothing is deployed)"
    )
    promotion: str = _setting(
        "TAXI_PROMOTION",
        "auto",
        "auto: model_promotion_sensor deploys a challenger that wins its model_challenge by the minimum gain; "
        "manual: it waits until a user materializes deployed_model",
        choices=("auto", "manual"),
    )
    promotion_min_gain: float = _setting(
        "TAXI_PROMOTION_MIN_GAIN",
        "0.05",
        "Relative RMSE gain of the challenger over the deployed model (0.05 = 5%) at which the challenger alarm "
        "fires and the challenger is promoted (bench/bench_challenger.py measures it)",
    )
    service_host: str = _setting("TAXI_SERVICE_HOST", "127.0.0.1", "Address the Bento service listens on")
    service_port: int = _setting("TAXI_SERVICE_PORT", "3001", "Port of the Bento service")
    service_workers: int = _setting("TAXI_SERVICE_WORKERS", "1", "Worker processes of the Bento service")
    pushgateway_url: str = _setting(
        "TAXI_PUSHGATEWAY_URL", "", "Prometheus Pushgateway; empty: nothing is pushed (the run log says so)"
    )
    alertmanager_url: str = _setting(
        "TAXI_ALERTMANAGER_URL",
        "",
        "Alertmanager whose alerts alerts_sensor records on the assets they concern; empty: nothing is read (the "
        "sensor says so)",
    )
    alert_runs: str = _setting(
        "TAXI_ALERT_RUNS",
        "on",
        "on: an alert whose runbook names a run requests it when it starts (the online RMSE alarm: model_challenge "
        "on the newest month); off: alarms are only recorded",
        choices=("on", "off"),
    )
    alert_notifications: str = _setting(
        "TAXI_ALERT_NOTIFICATIONS",
        "data/alerts/notifications.jsonl",
        "Where the alert receiver of `make up` appends every notification Alertmanager sends it (one JSON a line)",
        path=True,
    )
    dagster_port: int = _setting("DAGSTER_PORT", "3000", "Port of the Dagster UI under `make up`")
    prometheus_port: int = _setting("TAXI_PROMETHEUS_PORT", "9090", "Port of Prometheus under `make up`")
    pushgateway_port: int = _setting(
        "TAXI_PUSHGATEWAY_PORT", "9091", "Port of the Pushgateway under `make up` (it sets TAXI_PUSHGATEWAY_URL)"
    )
    alertmanager_port: int = _setting(
        "TAXI_ALERTMANAGER_PORT", "9093", "Port of Alertmanager under `make up` (it sets TAXI_ALERTMANAGER_URL)"
    )
    alert_receiver_port: int = _setting(
        "TAXI_ALERT_RECEIVER_PORT", "9095", "Port of the alert receiver Alertmanager posts to"
    )
    evidently_workspace: str = _setting(
        "TAXI_EVIDENTLY_WORKSPACE",
        "data/evidently",
        "Local Evidently workspace: each month's report and figures, each online window's figures, dashboards",
        path=True,
    )
    evidently_port: int = _setting(
        "TAXI_EVIDENTLY_PORT", "8000", "Port of the Evidently UI under `make up` (reports link to it)"
    )
    evidently_window_days: int = _setting(
        "TAXI_EVIDENTLY_WINDOW_DAYS",
        "2",
        "Days of online windows the Evidently windows dashboard keeps: each publish deletes the points older than "
        "that before the newest (bench/bench_workspace.py); 0: keeps them all",
    )
    run_dir: str = _setting(
        "TAXI_RUN_DIR",
        "data/run",
        "What `make up` keeps while running: pid files, Prometheus', the Pushgateway's and Alertmanager's data",
        path=True,
    )
    logs_dir: str = _setting("TAXI_LOGS_DIR", "data/logs", "Logs of the processes `make up` starts", path=True)
    automation: str = _setting(
        "TAXI_AUTOMATION",
        "on",
        "on: the new-month sensor and the automation condition sensor start running with the daemon; off: they "
        "start stopped (a toggle in the UI's Automation tab overrides either)",
    )
    new_month_check_seconds: int = _setting(
        "TAXI_NEW_MONTH_CHECK_SECONDS", "3600", "How often the trip-data source is checked for the next month"
    )
    automation_check_seconds: int = _setting(
        "TAXI_AUTOMATION_CHECK_SECONDS",
        "30",
        "How often the assets' automation conditions and the retraining loop's promotion sensor are evaluated",
    )

    @property
    def evidently_url(self) -> str:
        """Where `make up` serves the Evidently UI: the links of reports and dashboards."""
        return f"http://127.0.0.1:{self.evidently_port}"

    @property
    def automation_on(self) -> bool:
        if self.automation not in ("on", "off"):
            raise ValueError(f"TAXI_AUTOMATION must be on or off, got {self.automation!r}")
        return self.automation == "on"


def _declared() -> dict[str, Setting]:
    kinds = typing.get_type_hints(Settings)
    return {
        field.name: dataclasses.replace(field.metadata["setting"], kind=kinds[field.name])
        for field in dataclasses.fields(Settings)
    }


# Field name -> setting, in declaration order: what the printer, the shell form and the resources iterate.
SETTINGS: dict[str, Setting] = _declared()


def resolve(location: str) -> str:
    """A relative path made absolute against the repository root; URLs and absolute paths unchanged."""
    if not location or "://" in location or Path(location).is_absolute():
        return location
    return str(PROJECT_ROOT / location)


_CREDENTIALS = re.compile(r"(\w[\w+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it masked (`mongodb://user:pw@host` -> `mongodb://***@host`),
    for logs and messages: a MongoDB URI or a Pushgateway URL may carry a password."""
    return _CREDENTIALS.sub(r"\1***@", text)


def value(field: str, environ: Mapping[str, str] | None = None) -> str | int | float:
    """One setting's value: the environment's when set and not empty, else the default; paths resolved."""
    setting = SETTINGS[field]
    raw = (os.environ if environ is None else environ).get(setting.env) or setting.default
    if setting.kind is not str:
        try:
            return setting.kind(raw)
        except ValueError:
            what = "a whole number" if setting.kind is int else "a number"
            raise ValueError(f"{setting.env} must be {what}, got {raw!r}") from None
    if setting.choices and raw not in setting.choices:
        raise ValueError(f"{setting.env} must be one of {', '.join(setting.choices)}, got {raw!r}")
    return resolve(raw) if setting.path else raw


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Every setting, read from `environ` (default: this process's environment) once."""
    environ = os.environ if environ is None else environ
    return Settings(**{field: value(field, environ) for field in SETTINGS})


@functools.cache
def current() -> Settings:
    """The settings of this process, read on first use."""
    return load()


def shell_assignments(environ: Mapping[str, str] | None = None) -> str:
    """Every setting as a shell assignment (`NAME='value'`), resolved: how scripts/*.sh read their configuration
    from this one place. Variables set in the environment keep their values."""
    import shlex

    current = load(environ)
    return "\n".join(
        f"{setting.env}={shlex.quote(str(getattr(current, field)))}" for field, setting in SETTINGS.items()
    )


def describe_source(location: str) -> str:
    """Where trip data comes from, in words: TLC's public address, the local mirror, or the location itself."""
    if location == TLC_TRIP_DATA_URL:
        return f"TLC's public address {TLC_TRIP_DATA_URL}"
    if "://" not in location and Path(location).resolve() == Path(resolve(LOCAL_TLC_MIRROR)).resolve():
        return f"the local mirror {Path(location).resolve()}"
    return location


def trip_data_line(environ: Mapping[str, str] | None = None) -> str:
    """The first line every entry point prints: which trip-data source it uses, and why."""
    environ = os.environ if environ is None else environ
    setting = SETTINGS["trip_data_url"]
    why = f"{setting.env}" if environ.get(setting.env) else "the embedded default"
    return f"trip data from {describe_source(str(value('trip_data_url', environ)))} ({why})"


def table(environ: Mapping[str, str] | None = None) -> str:
    """Every setting in effect, one per line: variable, value (credentials redacted), and whether it comes from
    the environment or is the embedded default."""
    environ = os.environ if environ is None else environ
    current = load(environ)
    width = max(len(setting.env) for setting in SETTINGS.values())
    return "\n".join(
        f"{setting.env:<{width}}  {redact(str(getattr(current, field))) or '(empty)'}"
        f"{'' if environ.get(setting.env) else '  (default)'}"
        for field, setting in SETTINGS.items()
    )
