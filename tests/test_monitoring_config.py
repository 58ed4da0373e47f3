"""Prometheus config, alert rules and their tests, Grafana provisioning and compose.yaml agree with the contracts."""

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, start_http_server

from taxi_assets.settings import SETTINGS
from tests.support.platform import REPO_ROOT, free_port
from tests.support.prometheus_harness import (
    DASHBOARD_DIR,
    PROMETHEUS_DIR,
    dashboard_queries,
    metric_names,
    query,
    start_prometheus,
    substitute,
)

GRAFANA_DIR = REPO_ROOT / "monitoring" / "grafana"
CONTRACTS = (REPO_ROOT / "docs" / "contracts.md").read_text()
COMPOSE = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())

# BentoML 1.4's own series (bentoml/_internal/server/http/instruments.py, RunnerTrafficMetricsMiddleware with the
# default `bentoml_service` namespace), and Prometheus's own `up`.
BENTOML_METRICS = {
    "bentoml_service_request_total",
    "bentoml_service_request_duration_seconds",
    "bentoml_service_request_in_progress",
    "bentoml_service_last_request_timestamp_seconds",
}
PROMETHEUS_METRICS = {"up"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: run `make setup`"
    return subprocess.run([binary, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def contract_metrics() -> set[str]:
    section = CONTRACTS.split("## Prometheus metric names", 1)[1].split("\n## ", 1)[0]
    # In the table only the first column names metrics (the others hold labels and job names).
    lines = [line.split("|")[1] if line.startswith("|") else line for line in section.splitlines()]
    return set(re.findall(r"`(taxi_\w+)", "\n".join(lines)))


def known_metric(name: str, recorded: set[str]) -> bool:
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name in recorded | PROMETHEUS_METRICS or bool({name, base} & (contract_metrics() | BENTOML_METRICS))


# ---- Prometheus config and rules


@pytest.mark.parametrize(
    "args",
    [("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml"), ("test", "rules", "alerts_test.yml")],
    ids=" ".join,
)
@pytest.mark.e2e
def test_promtool(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr  # e.g. a missing file_sd target file


@pytest.mark.e2e
def test_promtool_accepts_the_compose_layout(tmp_path: Path) -> None:
    """What the prometheus container sees: targets.compose/ mounted over targets/."""
    config_dir = shutil.copytree(PROMETHEUS_DIR, tmp_path / "prometheus")
    shutil.rmtree(config_dir / "targets")
    shutil.copytree(PROMETHEUS_DIR / "targets.compose", config_dir / "targets")
    result = promtool("check", "config", str(config_dir / "prometheus.yml"))
    assert result.returncode == 0 and "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.unit
def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        if "alert" not in rule:
            continue
        expectations = [case.get("exp_alerts") or [] for case in cases if case["alertname"] == rule["alert"]]
        assert any(expectations), f"{rule['alert']}: no test expects it to fire"
        assert not all(expectations), f"{rule['alert']}: no test expects it to stay silent"


@pytest.mark.unit
def test_every_recording_rule_is_checked() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    checked = {
        name for test in tests for case in test.get("promql_expr_test", []) for name in metric_names(case["expr"])
    }
    for rule in alert_rules():
        if "record" in rule:
            assert rule["record"] in checked, f"{rule['record']}: no promql_expr_test"


@pytest.mark.unit
def test_alerts_have_severity_and_annotations() -> None:
    for rule in alert_rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
            assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


@pytest.mark.unit
def test_rules_use_only_contract_metrics() -> None:
    rules = alert_rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    for rule in rules:
        unknown = {name for name in metric_names(rule["expr"]) if not known_metric(name, recorded)}
        assert not unknown, f"{rule.get('alert') or rule['record']} uses metrics outside the contract: {unknown}"


@pytest.mark.unit
def test_metric_names_parser() -> None:
    expr = (
        'sum by (le, endpoint) (rate(bentoml_service_request_duration_seconds_bucket{code=~"5..", x="a b"}[5m]))'
        " / on(job) group_left(model_tag) taxi:rule:threshold * 1.25 and time() - taxi_a offset 5m > bool 0.99"
    )
    assert metric_names(expr) == {"bentoml_service_request_duration_seconds_bucket", "taxi:rule:threshold", "taxi_a"}
    assert metric_names('up{job=~"bento|pushgateway"} == 0') == {"up"}


# ---- Grafana


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


@pytest.mark.unit
def test_dashboards_are_provisioned_with_the_fixed_datasource() -> None:
    datasource = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [prometheus] = datasource["datasources"]
    assert prometheus["uid"] == "prometheus"
    assert len(dashboards()) == 3
    uids = [dashboard["uid"] for dashboard in dashboards().values()]
    assert len(set(uids)) == len(uids)
    for name, dashboard in dashboards().items():
        for panel in dashboard["panels"]:
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
            for target in [panel, *panel["targets"]]:
                assert target["datasource"] == {"type": "prometheus", "uid": "prometheus"}, f"{name}: {panel['title']}"
            assert all(target["expr"].strip() for target in panel["targets"]), f"{name}: {panel['title']}"


@pytest.mark.unit
def test_dashboards_use_only_contract_metrics() -> None:
    recorded = {rule["record"] for rule in alert_rules() if "record" in rule}
    queries = dashboard_queries()
    assert len(queries) >= 30
    used = set()
    for panel_query in queries:
        names = metric_names(panel_query.expr)
        assert names, f"{panel_query}: selects no metric"
        unknown = {name for name in names if not known_metric(name, recorded)}
        assert not unknown, f"{panel_query.panel} ({panel_query.dashboard}) uses non-contract metrics: {unknown}"
        used |= names
    # Every pushed and served figure is on some dashboard.
    used_bases = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert not contract_metrics() - used_bases


@pytest.mark.unit
def test_variables_are_substituted() -> None:
    assert substitute('rate(x{w="$window"}[$__rate_interval]) ${m} [[m]]', {"window": "hour", "m": ".+"}, "30s") == (
        'rate(x{w="hour"}[30s]) .+ .+'
    )
    assert not any("$" in panel_query.expr for panel_query in dashboard_queries())
    with pytest.raises(KeyError):
        substitute("x[$nope]", {}, "1m")


# ---- compose


@pytest.mark.unit
def test_compose_services_and_mounted_files_exist() -> None:
    services = COMPOSE["services"]
    expected = {
        "postgres",
        "dagster-webserver",
        "dagster-daemon",
        "bento",
        "mongo",
        "prometheus",
        "pushgateway",
        "grafana",
        "alertmanager",
        "alert-receiver",
    }
    assert expected <= services.keys()
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            assert (REPO_ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name}: {source} does not exist"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


@pytest.mark.unit
def test_compose_prometheus_targets_match_services() -> None:
    services = COMPOSE["services"]
    for sd_file in (PROMETHEUS_DIR / "targets.compose").glob("*.yml"):
        for group in yaml.safe_load(sd_file.read_text()):
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in services, f"{sd_file.name}: no service {host}"
    assert {path.name for path in (PROMETHEUS_DIR / "targets").glob("*.yml")} == {
        path.name for path in (PROMETHEUS_DIR / "targets.compose").glob("*.yml")
    }


@pytest.mark.unit
def test_compose_environment_matches_the_settings() -> None:
    known = {setting.env for setting in SETTINGS.values()}
    for name, service in COMPOSE["services"].items():
        environment = service.get("environment", {})
        for variable in environment:
            if variable.startswith("TAXI_"):
                assert variable in known, f"{name}: {variable} is not a setting of taxi_assets/settings.py"
    # The Bento service serves the model Dagster deploys and logs where Dagster ingests from.
    bento = COMPOSE["services"]["bento"]["environment"]
    assert bento["TAXI_PREDLOG_URI"].startswith("mongodb://mongo:27017/")
    for name in ("dagster-webserver", "dagster-daemon"):
        for variable in ("TAXI_PREDLOG_URI", "BENTOML_HOME"):
            assert COMPOSE["services"][name]["environment"][variable] == bento[variable], f"{name}: {variable}"
    for name in ("dagster-webserver", "dagster-daemon"):
        assert COMPOSE["services"][name]["environment"]["TAXI_PUSHGATEWAY_URL"] == "http://pushgateway:9091"
        assert COMPOSE["services"][name]["environment"]["TAXI_ALERTMANAGER_URL"] == "http://alertmanager:9093"


# Compose's variable interpolation (compose-spec: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, …).
COMPOSE_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<operator>:?[-?+])(?P<argument>[^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)


@pytest.mark.unit
def test_compose_has_no_default_password() -> None:
    """Every secret is a required variable (`${VAR:?message}`: compose stops and says which), listed in
    .env.example without a value; none has a default or a literal value anywhere in compose.yaml."""
    text = (REPO_ROOT / "compose.yaml").read_text()
    required = set()
    for match in COMPOSE_VARIABLE.finditer(text):
        if SECRET_NAME.search(match["name"]):
            assert match["operator"] == ":?" and ".env" in match["argument"], f"{match[0]} is not required"
            required.add(match["name"])
    assert required == {"DAGSTER_PG_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
    for name, service in COMPOSE["services"].items():
        for variable, value in service.get("environment", {}).items():
            if SECRET_NAME.search(variable):
                match = COMPOSE_VARIABLE.fullmatch(str(value))
                assert match and match["name"] in required, f"{name}: {variable} is not a required variable"
    example = (REPO_ROOT / ".env.example").read_text()
    for variable in required:
        assert re.search(rf"^# {variable}=$", example, re.MULTILINE), f".env.example does not list {variable}"


@pytest.mark.unit
def test_platform_image_copies_existing_files() -> None:
    dockerfile = (REPO_ROOT / "docker" / "platform.Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    for source in re.findall(r"^COPY (\S+) ", dockerfile, re.MULTILINE):
        assert (REPO_ROOT / source).exists(), source


@pytest.mark.unit
def test_compose_dagster_instance_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config_schema

    for variable, value in COMPOSE["x-dagster-env"].items():
        monkeypatch.setenv(variable, value)
    config = yaml.safe_load((REPO_ROOT / "docker" / "dagster.yaml").read_text())
    result = process_config(dagster_instance_config_schema(), config)
    assert result.success, result.errors


@pytest.mark.unit
def test_compose_creates_the_dagster_instance_before_the_webserver_and_the_daemon_start() -> None:
    # What its command does is run as compose runs it, on PostgreSQL, by tests/test_instance.py.
    services = COMPOSE["services"]
    assert services["dagster-init"]["restart"] == "no"
    for name in ("dagster-webserver", "dagster-daemon"):
        assert services[name]["depends_on"]["dagster-init"] == {"condition": "service_completed_successfully"}


@pytest.mark.unit
def test_compose_dagster_instance_uses_postgres() -> None:
    config = yaml.safe_load((REPO_ROOT / "docker" / "dagster.yaml").read_text())
    postgres = config["storage"]["postgres"]["postgres_db"]
    environment = COMPOSE["services"]["postgres"]["environment"]
    for service in ("dagster-init", "dagster-webserver", "dagster-daemon"):
        dagster_env = COMPOSE["services"][service]["environment"]
        for field in ("username", "password", "db_name", "hostname"):
            variable = postgres[field]["env"]
            assert variable in dagster_env, f"{service}: {variable} unset"
        assert dagster_env[postgres["hostname"]["env"]] == "postgres"
        assert dagster_env[postgres["db_name"]["env"]] == environment["POSTGRES_DB"]


# ---- real processes


@pytest.mark.e2e
def test_prometheus_loads_config_and_rules(tmp_path: Path) -> None:
    with start_prometheus(tmp_path / "prometheus") as url:
        groups = requests.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        loaded = {rule["name"] for group in groups for rule in group["rules"]}
        names = {rule.get("alert") or rule["record"] for rule in alert_rules()}
        assert loaded == names
        assert all(rule["health"] != "err" for group in groups for rule in group["rules"])


@pytest.mark.e2e
def test_pushed_drift_share_reaches_the_dashboard_query(tmp_path: Path, pushgateway: str) -> None:
    registry = CollectorRegistry()
    Gauge("taxi_online_drift_share", "share of drifted features", registry=registry).set(0.4)
    push_to_gateway(pushgateway, job="taxi_online_monitoring", grouping_key={"window": "last_5000"}, registry=registry)
    [panel_query] = [q for q in dashboard_queries(rate_interval="5s") if q.panel == "Share of drifted features"]

    with start_prometheus(tmp_path / "prometheus", pushgateway=pushgateway.removeprefix("http://")) as url:
        deadline = time.monotonic() + 15
        while not (result := query(url, panel_query.expr)) and time.monotonic() < deadline:
            time.sleep(0.2)
        [series] = result
        assert series["metric"]["job"] == "taxi_online_monitoring"  # honor_labels kept the pushed job
        assert float(series["value"][1]) == 0.4


# One series of every pushed contract metric: (job, grouping key, {metric: label sets}).
PUSHED = [
    (
        "taxi_batch_monitoring",
        {"month": "2023-02"},
        {
            "taxi_batch_feature_drift_score": [{"feature": "trip_distance", "test": "ks"}],
            "taxi_batch_feature_drift_effect": [{"feature": "trip_distance", "effect": "ks_distance"}],
            "taxi_batch_feature_drifted": [{"feature": "trip_distance"}],
            "taxi_batch_feature_drift_priority": [{"feature": "trip_distance"}],
            "taxi_batch_drift_share": [{}],
            "taxi_batch_dataset_drift": [{}],
            "taxi_batch_mom_feature_drift_score": [{"feature": "trip_distance", "test": "ks"}],
            "taxi_batch_mom_feature_drift_effect": [{"feature": "trip_distance", "effect": "ks_distance"}],
            "taxi_batch_mom_feature_drifted": [{"feature": "trip_distance"}],
            "taxi_batch_mom_drift_share": [{}],
            "taxi_batch_mom_dataset_drift": [{}],
            "taxi_batch_month_start_timestamp_seconds": [{}],
            "taxi_batch_prediction_drift_score": [{"test": "ks"}],
            "taxi_batch_prediction_drifted": [{}],
            "taxi_batch_target_drift_score": [{"test": "ks"}],
            "taxi_batch_target_drifted": [{}],
            "taxi_batch_outlier_share": [{"rule": "any"}],
            "taxi_batch_rmse": [{}],
            "taxi_batch_mae": [{}],
            "taxi_batch_mean_error": [{}],
            "taxi_batch_segment_rmse": [
                {"segment_type": "borough", "segment": "Bronx"},
                {"segment_type": "hour", "segment": "8"},
            ],
            "taxi_batch_rows": [{}],
        },
    ),
    (
        "taxi_online_monitoring",
        {"window": "last_5000"},
        {
            "taxi_online_feature_drift_score": [{"feature": "trip_distance", "test": "ks"}],
            "taxi_online_feature_drift_effect": [{"feature": "trip_distance", "effect": "ks_distance"}],
            "taxi_online_feature_drifted": [{"feature": "trip_distance"}],
            "taxi_online_drift_share": [{}],
            "taxi_online_dataset_drift": [{}],
            "taxi_online_prediction_drift_score": [{"test": "ks"}],
            "taxi_online_prediction_drifted": [{}],
            "taxi_online_window_spread": [{}],
            "taxi_online_window_sufficient": [{}],
            "taxi_online_alarm": [
                {"alarm": "dataset"},
                {"alarm": "prediction"},
                {"alarm": "rmse"},
                {"alarm": "outliers"},
            ],
            "taxi_online_outlier_share": [{"rule": "any"}],
            "taxi_online_rmse": [{}],
            "taxi_online_mae": [{}],
            "taxi_online_rmse_bound": [{}],
            "taxi_online_rmse_cusum": [{}],
            "taxi_online_rmse_cusum_limit": [{}],
            "taxi_online_slowdown_cusum": [{}],
            "taxi_online_slowdown_cusum_limit": [{}],
            "taxi_online_distance_cusum": [{}],
            "taxi_online_distance_cusum_limit": [{}],
            "taxi_online_window_rows": [{}],
            "taxi_online_feedback_rows": [{}],
            "taxi_model_validation_rmse": [{"model_tag": "taxi_duration_deployed:v1"}],
        },
    ),
    (
        "taxi_model_challenge",
        {},
        {
            "taxi_model_challenger_gain": [
                {"month": "2023-03", "champion": "taxi_duration:v1", "challenger": "taxi_duration:v2"}
            ],
            "taxi_model_champion_rmse": [
                {"month": "2023-03", "champion": "taxi_duration:v1", "challenger": "taxi_duration:v2"}
            ],
            "taxi_model_challenger_rmse": [
                {"month": "2023-03", "champion": "taxi_duration:v1", "challenger": "taxi_duration:v2"}
            ],
            "taxi_model_promotion_min_gain": [{"month": "2023-03"}],
        },
    ),
    (
        "taxi_ingest",
        {},
        {
            "taxi_ingest_records_waiting": [{}],
            "taxi_ingest_oldest_pending_age_seconds": [{}],
            "taxi_ingest_last_success_timestamp_seconds": [{}],
        },
    ),
    (
        "taxi_automation",
        {},
        {"taxi_automation_failed_for_good": [{}], "taxi_automation_retrying": [{}]},
    ),
    (
        "taxi_platform",
        {},
        {
            "taxi_platform_process_up": [{"process": "evidently-ui"}],
            "taxi_platform_process_restarts": [{"process": "evidently-ui"}],
        },
    ),
]


@pytest.mark.unit
def test_pushed_series_are_what_the_code_pushes() -> None:
    """PUSHED (what the dashboard and alert tests feed Prometheus) names exactly the series and label names that
    batch_samples and online_samples produce, so a renamed or relabelled figure fails here first."""
    from taxi_assets.core.batch import BatchFigures
    from taxi_assets.core.drift import DriftVerdict, FeatureDrift
    from taxi_assets.core.drift_scores import NUMERICAL
    from taxi_assets.core.evidently_report import SegmentError
    from taxi_assets.core.metrics import batch_samples
    from taxi_assets.core.model import ErrorSummary
    from taxi_assets.core.online import WindowFigures, online_samples

    feature = FeatureDrift("trip_distance", NUMERICAL, "ks", 2.0, 1.5, "ks_distance", 0.1, 1000, True)
    verdict = DriftVerdict((feature,), 0.05)
    figures = BatchFigures(
        rows=1000,
        since_training=verdict,
        month_over_month=verdict,
        previous_month="2023-01",
        prediction=feature,
        target=feature,
        errors=ErrorSummary(1000, 5.0, 4.0, 0.1),
        segments=[SegmentError("borough", "Bronx", 10, 5.0, 4.0)],
        outliers={"any": 0.01},
        outlier_examples={},
        ranking=[(feature, 1.0, 1.3)],
        weights_from="permutation_importance",
    )
    window = WindowFigures(
        "last_5000",
        2000,
        500,
        "consecutive",
        verdict,
        feature,
        5.0,
        4.0,
        6.0,
        {"any": 0.0},
        {"dataset": True},
        0.5,
        0.2,
        distance_cusum=0.1,
    )
    produced = {
        "taxi_batch_monitoring": batch_samples(figures, 0.0),
        "taxi_online_monitoring": online_samples(window, [window], "taxi_duration_deployed:v1", 5.0),
    }
    for job, _, metrics in PUSHED:
        if job not in produced:
            continue
        code = {sample.name: set(sample.labels) for sample in produced[job]}
        assert set(code) == set(metrics), job
        for name, label_sets in metrics.items():
            assert code[name] == set(label_sets[0]), name


def push_contract_metrics(pushgateway: str) -> None:
    for job, grouping_key, metrics in PUSHED:
        registry = CollectorRegistry()
        for name, label_sets in metrics.items():
            gauge = Gauge(name, name, sorted(label_sets[0]), registry=registry)
            for labels in label_sets:
                (gauge.labels(**labels) if labels else gauge).set(1)
        push_to_gateway(pushgateway, job=job, grouping_key=grouping_key, registry=registry)


def serve_bento_metrics(port: int) -> tuple[ThreadingHTTPServer, Callable[[], None]]:
    """A stand-in for the Bento service's /metrics, with BentoML's and the contract's names and labels."""
    registry = CollectorRegistry()
    bento_labels = ["endpoint", "service_name", "service_version", "http_response_code", "runner_name"]
    requests_total = Counter("bentoml_service_request", "", bento_labels, registry=registry)
    duration = Histogram("bentoml_service_request_duration_seconds", "", bento_labels, registry=registry)
    in_progress_labels = ["endpoint", "service_name", "service_version", "runner_name"]
    in_progress = Gauge("bentoml_service_request_in_progress", "", in_progress_labels, registry=registry)
    predictions = Counter("taxi_predictions", "", ["model_tag"], registry=registry)
    histograms = [
        Histogram(name, "", registry=registry)
        for name in ("taxi_predicted_duration_minutes", "taxi_input_trip_distance_miles", "taxi_input_pickup_hour")
    ]
    for name in ("taxi_predlog_write_failures", "taxi_model_swaps", "taxi_model_refusals"):
        Counter(name, "", registry=registry)
    outliers = Counter("taxi_input_outliers", "", ["rule"], registry=registry)
    Gauge("taxi_predlog_spool_backlog", "", registry=registry).set(0)
    in_progress.labels("/predict", "taxi_duration", "v1", "TaxiDuration").set(0)

    def request(status: str = "200") -> None:
        labels = ("/predict", "taxi_duration", "v1", status, "TaxiDuration")
        requests_total.labels(*labels).inc()
        duration.labels(*labels).observe(0.02)
        predictions.labels("taxi_duration_deployed:v1").inc()
        outliers.labels("zero_distance").inc()
        for histogram in histograms:
            histogram.observe(12)

    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server, request


@pytest.mark.e2e
def test_every_panel_query_returns_data_when_the_contract_metrics_exist(tmp_path: Path, pushgateway: str) -> None:
    push_contract_metrics(pushgateway)
    bento_port = free_port()
    server, request = serve_bento_metrics(bento_port)
    try:
        with start_prometheus(
            tmp_path / "prometheus", bento=f"127.0.0.1:{bento_port}", pushgateway=pushgateway.removeprefix("http://")
        ) as url:
            empty = dashboard_queries(rate_interval="5s")
            deadline = time.monotonic() + 20
            while empty and time.monotonic() < deadline:
                request()
                request("500")
                time.sleep(0.5)
                empty = [panel_query for panel_query in empty if not query(url, panel_query.expr)]
            assert not empty, f"panels without data: {[(q.dashboard, q.panel, q.expr) for q in empty]}"
    finally:
        server.shutdown()
