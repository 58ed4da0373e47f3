"""Run the repo's Prometheus and Alertmanager configs and Grafana panel queries against real processes.

Used by test_monitoring_config.py and by the end-to-end test, which replays traffic and then asserts that
every panel query of `dashboard_queries()` returns at least one series from `start_prometheus()`.
"""

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from tests.support.platform import REPO_ROOT, free_port, start_process, stop_process

PROMETHEUS_DIR = REPO_ROOT / "monitoring" / "prometheus"
DASHBOARD_DIR = REPO_ROOT / "monitoring" / "grafana" / "dashboards"
ALERTMANAGER_DIR = REPO_ROOT / "monitoring" / "alertmanager"
# Where alertmanager.yml's receivers post (the alert receiver of `make up` on its default port).
RECEIVER_ADDRESS = "http://127.0.0.1:9095/"


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str


def _variable_values(dashboard: dict) -> dict[str, str]:
    """What each template variable expands to with the dashboard's saved selection, as Grafana would."""
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        current = variable.get("current", {}).get("value")
        if isinstance(current, list):
            current = current[0] if len(current) == 1 else "|".join(current)
        if current == "$__all":
            current = variable["allValue"]
        values[variable["name"]] = current
    return values


def substitute(expr: str, variables: dict[str, str], rate_interval: str) -> str:
    builtins = {"__rate_interval": rate_interval, "__interval": rate_interval, "__range": rate_interval}
    values = {**variables, **builtins}

    def replace(match: re.Match) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\[\[(\w+)\]\]|\$(\w+)", replace, expr)


def dashboard_queries(rate_interval: str = "1m") -> list[PanelQuery]:
    """Every PromQL expression of every provisioned dashboard, ready to send to Prometheus.

    `rate_interval` stands in for `$__rate_interval`; it must span at least two scrapes of the Prometheus queried.
    """
    queries = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        variables = _variable_values(dashboard)
        panels = [
            panel
            for top in dashboard["panels"]
            for panel in [top, *top.get("panels", [])]  # collapsed rows nest their panels
        ]
        for panel in panels:
            for target in panel.get("targets", []):
                queries.append(
                    PanelQuery(dashboard["title"], panel["title"], substitute(target["expr"], variables, rate_interval))
                )
    return queries


_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (good enough for our rules and panels, not a full PromQL parser)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values can hold anything
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # matchers and range durations
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)  # not function calls
    return {name for name in names if name.lower() not in _PROMQL_KEYWORDS}


def _write_targets(directory: Path, sd_configs: list[dict], target: str | None) -> None:
    for sd_config in sd_configs:
        for sd_file in sd_config["files"]:
            path = directory / sd_file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump([{"targets": [target] if target else []}]))


def write_config(
    directory: Path,
    bento: str | None,
    pushgateway: str | None,
    scrape_interval: str = "1s",
    alertmanager: str | None = None,
    rule_for: str | None = None,
) -> Path:
    """The repo's prometheus.yml and alert rules in `directory`, scraping the given host:port targets and sending
    alerts to `alertmanager` (host:port). `rule_for` replaces every rule's `for` (a test of what happens after an
    alert fires need not wait the rule's 15 minutes; promtool tests the durations)."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=scrape_interval, evaluation_interval=scrape_interval)
    for rule_file in config["rule_files"]:
        rules = yaml.safe_load((PROMETHEUS_DIR / rule_file).read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if rule_for is not None and "alert" in rule:
                    rule["for"] = rule_for
        (directory / rule_file).write_text(yaml.safe_dump(rules, sort_keys=False))
    targets = {"bento": bento, "pushgateway": pushgateway}
    for job in config["scrape_configs"]:
        _write_targets(directory, job["file_sd_configs"], targets[job["job_name"]])
    for alertmanager_config in config["alerting"]["alertmanagers"]:
        _write_targets(directory, alertmanager_config["file_sd_configs"], alertmanager)
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


@contextmanager
def start_prometheus(
    directory: Path,
    bento: str | None = None,
    pushgateway: str | None = None,
    scrape_interval: str = "1s",
    alertmanager: str | None = None,
    rule_for: str | None = None,
) -> Iterator[str]:
    """A real Prometheus on a free loopback port running the repo's config and rules; yields its URL.

    `bento`, `pushgateway` and `alertmanager` are host:port targets (None leaves that job without targets);
    `rule_for` as for `write_config`.
    """
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run `make setup`"
    directory.mkdir(parents=True, exist_ok=True)
    config_path = write_config(directory, bento, pushgateway, scrape_interval, alertmanager, rule_for)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process: subprocess.Popen = start_process(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        f"{url}/-/ready",
        directory / "prometheus.log",
    )
    try:
        _wait_for_first_scrapes(url, expected=len([target for target in (bento, pushgateway) if target]))
        yield url
    finally:
        stop_process(process)


def pushgateway_command(port: int) -> list[str]:
    """The command line of a Pushgateway on `port` that keeps its series in memory only (see `start_pushgateway`),
    for the tests that start it as `make up` does."""
    binary = shutil.which("prometheus-pushgateway")
    assert binary, "prometheus-pushgateway is not installed: run `make setup`"
    return [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]


@contextmanager
def start_pushgateway(directory: Path, port: int | None = None) -> Iterator[str]:
    """A real Pushgateway (Debian's `prometheus-pushgateway`) on `port` or a free loopback port; yields its URL. Its
    log is `directory/pushgateway.log`.

    The only way a test or a benchmark starts one: Debian's build persists to a machine-wide file
    (/var/lib/prometheus/pushgateway.data) unless told otherwise, so every run would inherit the series of the
    last one (stale alerts, help-string conflicts). This one keeps its series in memory only.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_process(pushgateway_command(port), f"{url}/-/ready", directory / "pushgateway.log")
    try:
        yield url
    finally:
        stop_process(process)


def _wait_for_first_scrapes(url: str, expected: int, timeout: float = 20.0) -> None:
    """Prometheus hands new targets to the scrapers only every 5 s; queries before that find nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        targets = requests.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        if len([target for target in targets if target["health"] != "unknown"]) >= expected:
            return
        time.sleep(0.2)
    raise TimeoutError(f"Prometheus at {url} did not scrape its {expected} targets within {timeout} s")


def query(url: str, expr: str) -> list[dict]:
    """The result of an instant query; raises when Prometheus rejects the expression."""
    response = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    body = response.json()
    if body.get("status") != "success":
        raise ValueError(f"{expr!r}: {body.get('error', response.text)}")
    return body["data"]["result"]


def write_alertmanager_config(
    directory: Path, receiver: str, group_wait: str = "1s", group_interval: str = "1s"
) -> Path:
    """The repo's alertmanager.yml in `directory`, its receivers posting to `receiver` (a base URL) instead of
    127.0.0.1:9095, and its grouping timers shortened (the routes, grouping and inhibition stay the repo's)."""
    config = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    for route in [config["route"], *config["route"].get("routes", [])]:
        for timer, value in (("group_wait", group_wait), ("group_interval", group_interval)):
            if timer in route:
                route[timer] = value
    for receiver_config in config["receivers"]:
        for webhook in receiver_config.get("webhook_configs", []):
            assert webhook["url"].startswith(RECEIVER_ADDRESS), webhook["url"]
            webhook["url"] = receiver.rstrip("/") + "/" + webhook["url"].removeprefix(RECEIVER_ADDRESS)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def start_alertmanager(directory: Path, config: Path) -> Iterator[str]:
    """A real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port with `config`, its state in
    `directory`, clustering off; yields its URL."""
    binary = shutil.which("prometheus-alertmanager")
    assert binary, "prometheus-alertmanager is not installed: run `make setup`"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_process(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url={url}",
            "--cluster.listen-address=",
        ],
        f"{url}/-/ready",
        directory / "alertmanager.log",
    )
    try:
        yield url
    finally:
        stop_process(process)


@contextmanager
def start_alert_receiver(directory: Path, port: int | None = None) -> Iterator[tuple[str, Path]]:
    """The platform's alert receiver (`python -m taxi_assets.alert_receiver`, as `make up` runs it) on `port` or a
    free loopback port; yields its URL and the JSON-lines file it appends to."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    notifications = directory / "notifications.jsonl"
    command = [sys.executable, "-m", "taxi_assets.alert_receiver", "--port", str(port), "--file", str(notifications)]
    process = start_process(command, f"{url}/", directory / "alert_receiver.log")
    try:
        yield url, notifications
    finally:
        stop_process(process)


def amtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("amtool")
    assert binary, "amtool is not installed: run `make setup`"
    return subprocess.run([binary, *args], cwd=ALERTMANAGER_DIR, capture_output=True, text=True, timeout=60)
