"""Alerts reach someone and say what to do: Alertmanager's routes, grouping, inhibition and silences with the
repository's config, the runbook of every alert, the alert receiver's file, and alerts_sensor recording every alert
on the asset it is about, tested against real Prometheus, Pushgateway and Alertmanager processes."""

import functools
import json
import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml

from taxi_assets import settings
from taxi_assets.core import alerts as core
from taxi_assets.core.metrics import BATCH_JOB, CHALLENGE_JOB, HELP, INGEST_JOB, ONLINE_JOB, Sample, challenge_samples
from taxi_assets.defs.alerts.resources import Alertmanager
from taxi_assets.defs.alerts.sensors import alerts_sensor
from taxi_assets.defs.resources import AutomationPolicy, Pushgateway
from tests.support.platform import REPO_ROOT, automation_policy, free_port, wait_until
from tests.support.prometheus_harness import (
    ALERTMANAGER_DIR,
    PROMETHEUS_DIR,
    amtool,
    start_alert_receiver,
    start_alertmanager,
    start_prometheus,
    write_alertmanager_config,
)

RUNBOOKS = (REPO_ROOT / "docs" / "runbooks.md").read_text()
ROUTE_CASES = yaml.safe_load((ALERTMANAGER_DIR / "routes_test.yml").read_text())


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def anchors(markdown: str) -> dict[str, str]:
    """GitHub's anchor of every `##` heading, and the section's text."""
    sections = re.split(r"^## ", markdown, flags=re.MULTILINE)[1:]
    result = {}
    for section in sections:
        heading, _, body = section.partition("\n")
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        result[anchor] = body
    return result


def rule_assets(rule: dict) -> set[str]:
    """The asset names an `asset` annotation can produce (a template's branches, or the plain name)."""
    asset = rule["annotations"].get("asset", "")
    return set(re.findall(r"}}\s*(\w+)\s*{{", asset)) if "{{" in asset else {asset}


# ---- routes, runbooks, assets: the config agrees with the rules


@pytest.mark.unit
def test_every_alert_rule_has_a_route_case_with_its_severity() -> None:
    cases = {case["alert"]: case for case in ROUTE_CASES}
    for rule in alert_rules():
        assert rule["alert"] in cases, f"{rule['alert']}: no case in monitoring/alertmanager/routes_test.yml"
        case = cases[rule["alert"]]
        assert case["labels"]["severity"] == rule["labels"]["severity"], rule["alert"]
        expected = "quiet" if rule["labels"]["severity"] == "info" else "actionable"
        assert case["receiver"] == expected, f"{rule['alert']}: {rule['labels']['severity']} goes to {expected}"


@pytest.mark.e2e
def test_amtool_accepts_the_config() -> None:
    result = amtool("check-config", "alertmanager.yml")
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


@pytest.mark.e2e
def test_the_readmes_slack_email_and_pagerduty_receivers_are_valid_config(tmp_path: Path) -> None:
    """The README's example of receivers that reach a person, put in place of the repository's: amtool accepts it."""
    readme = (REPO_ROOT / "README.md").read_text()
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if "pagerduty_configs" in b]
    receivers = yaml.safe_load(textwrap.dedent(block))["receivers"]
    config = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    assert {r["name"] for r in receivers} == {r["name"] for r in config["receivers"]}
    text = yaml.safe_dump({**config, "receivers": receivers})
    for secret in set(re.findall(r"/etc/alertmanager/[\w.]+", text)):  # the secret files it names
        (tmp_path / Path(secret).name).write_text("secret\n")
        text = text.replace(secret, str(tmp_path / Path(secret).name))
    (tmp_path / "alertmanager.yml").write_text(text)
    result = amtool("check-config", str(tmp_path / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("case", ROUTE_CASES, ids=[case["alert"] for case in ROUTE_CASES])
def test_amtool_routes_every_alert_to_its_receiver(case: dict) -> None:
    labels = [f"{name}={value}" for name, value in {"alertname": case["alert"], **case["labels"]}.items()]

    def route(receiver: str):
        return amtool(
            "config", "routes", "test", "--config.file=alertmanager.yml", f"--verify.receivers={receiver}", *labels
        )

    result = route(case["receiver"])
    assert result.returncode == 0, result.stdout + result.stderr
    other = "quiet" if case["receiver"] == "actionable" else "actionable"
    assert route(other).returncode != 0  # amtool does verify: the other receiver is refused


@pytest.mark.unit
def test_every_alert_has_a_runbook_section_with_measured_figures_and_commands() -> None:
    sections = anchors(RUNBOOKS)
    for rule in alert_rules():
        url = rule["annotations"].get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert path == "docs/runbooks.md" and anchor, f"{rule['alert']}: runbook_url {url!r}"
        assert anchor in sections, f"{rule['alert']}: docs/runbooks.md has no section #{anchor}"
        body = sections[anchor]
        for part in ("**Means:**", "**Measured", "**Look first:**", "**Do:**"):
            assert part in body, f"{rule['alert']}: its runbook section has no {part}"


@pytest.mark.unit
def test_every_alert_says_its_live_values_and_names_an_asset_of_the_code_location() -> None:
    from taxi_assets.definitions import defs

    keys = {key.to_user_string() for key in defs().resolve_asset_graph().get_all_asset_keys()}
    for rule in alert_rules():
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "$value" in text or "$labels" in text, f"{rule['alert']}: summary and description show no live value"
        assert rule_assets(rule) and rule_assets(rule) <= keys, f"{rule['alert']}: asset {rule_assets(rule)}"


@pytest.mark.unit
def test_every_run_an_alert_requests_is_a_job_of_its_sensor_and_the_alert_exists() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    jobs = {target.job_name for target in alerts_sensor.targets}
    for alert, job in core.ALERT_RUNS.items():
        assert alert in names and job in jobs, (alert, job)
        # The runbook says so: the run is named in the alert's section.
        assert job.removesuffix("_job") in anchors(RUNBOOKS)[alert.lower()], alert


@pytest.mark.unit
def test_the_receivers_address_holds_under_make_up_and_compose() -> None:
    """alertmanager.yml posts to 127.0.0.1 on the alert receiver's default port: `make up` rewrites exactly that
    address to TAXI_ALERT_RECEIVER_PORT, and compose runs the receiver in Alertmanager's network namespace."""
    config = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    default_port = settings.SETTINGS["alert_receiver_port"].default
    address = f"http://127.0.0.1:{default_port}/"
    urls = [hook["url"] for r in config["receivers"] for hook in r.get("webhook_configs", [])]
    assert urls and all(url.startswith(address) for url in urls), urls
    up = (REPO_ROOT / "scripts" / "up.sh").read_text()
    assert (
        f'sed "s#{address}#http://127.0.0.1:$TAXI_ALERT_RECEIVER_PORT/#" monitoring/alertmanager/alertmanager.yml' in up
    )
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())["services"]
    assert compose["alert-receiver"]["network_mode"] == "service:alertmanager"
    assert "./monitoring/alertmanager:/etc/alertmanager:ro" in compose["alertmanager"]["volumes"]
    assert "--cluster.listen-address=" in compose["alertmanager"]["command"]
    assert compose["alertmanager"]["ports"] == ["127.0.0.1:9093:9093"]


@pytest.mark.unit
def test_the_pushed_jobs_are_those_a_pushgateway_outage_inhibits() -> None:
    config = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    [rule] = [rule for rule in config["inhibit_rules"] if 'job="pushgateway"' in rule["source_matchers"]]
    [matcher] = rule["target_matchers"]
    pattern = re.fullmatch(r'job=~"(.+)"', matcher)[1]
    for job in (BATCH_JOB, ONLINE_JOB, CHALLENGE_JOB, INGEST_JOB):
        assert re.fullmatch(pattern, job), job


# ---- the pure logic of alerts_sensor

# An alert as Alertmanager 0.25's GET /api/v2/alerts answers it.
AM_ALERT = {
    "annotations": {
        "asset": "drift_metrics",
        "runbook_url": "docs/runbooks.md#taxibatchdatasetdrift",
        "summary": "Month 2023-04 drifted from the month before",
        "description": "The trips of 2023-04 …",
    },
    "endsAt": "2026-12-02T17:05:00.000Z",
    "fingerprint": "0f1e2d3c4b5a6978",
    "receivers": [{"name": "actionable"}],
    "startsAt": "2026-12-02T16:59:58.123456789Z",
    "status": {"inhibitedBy": [], "silencedBy": [], "state": "active"},
    "updatedAt": "2026-12-02T17:00:00.000Z",
    "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x",
    "labels": {
        "alertname": "TaxiBatchDatasetDrift",
        "job": "taxi_batch_monitoring",
        "month": "2023-04",
        "severity": "warning",
    },
}


@pytest.mark.unit
def test_times_parse_with_nanoseconds_and_zones() -> None:
    assert core.parse_time("2026-12-02T16:59:58.123456789Z") == pytest.approx(1796230798.123456789)
    assert core.parse_time("2026-12-02T17:59:58+01:00") == core.parse_time("2026-12-02T16:59:58Z")
    with pytest.raises(ValueError, match="RFC 3339"):
        core.parse_time("yesterday")


@pytest.mark.unit
def test_alerts_parse_and_a_malformed_answer_is_refused() -> None:
    [alert] = core.parse_alerts([AM_ALERT])
    assert (alert.name, alert.asset, alert.severity, alert.actionable) == (
        "TaxiBatchDatasetDrift",
        "drift_metrics",
        "warning",
        True,
    )
    assert core.partition_of(alert, "month") == "2023-04"
    assert core.partition_of(alert, "day") == "2026-12-02"
    assert core.partition_of(alert, None) is None
    silenced = core.parse_alerts([{**AM_ALERT, "status": {"state": "suppressed", "silencedBy": ["s1"]}}])[0]
    assert not silenced.actionable and silenced.silenced_by == ("s1",)
    with pytest.raises(ValueError, match="JSON list"):
        core.parse_alerts({"alerts": []})
    with pytest.raises(ValueError, match="not an Alertmanager v2 alert"):
        core.parse_alerts([{"labels": {}}])


@pytest.mark.unit
def test_diff_records_starts_and_resolutions_once_and_not_during_a_restart() -> None:
    [alert] = core.parse_alerts([AM_ALERT])
    events, known = core.diff({}, [alert], now=2e9, can_resolve=True)
    assert [(event.status, event.at) for event in events] == [("firing", core.parse_time(alert.starts_at))]
    assert core.diff(known, [alert], now=2e9, can_resolve=True) == ([], known)  # still firing: nothing new

    held, still_known = core.diff(known, [], now=2e9, can_resolve=False)  # Alertmanager restarted: not resolved
    assert held == [] and still_known == known
    [resolved], after = core.diff(json.loads(json.dumps(known)), [], now=2e9, can_resolve=True)
    assert (resolved.status, resolved.at, resolved.alert) == ("resolved", 2e9, alert) and after == {}
    metadata = core.event_metadata(resolved)
    assert metadata["resolved_at"] == 2e9 and metadata["labels"]["month"] == "2023-04"

    again = core.parse_alerts([{**AM_ALERT, "startsAt": "2026-12-02T18:00:00Z"}])  # fired again after resolving
    events, _ = core.diff(known, again, now=2e9, can_resolve=True)
    assert sorted(event.status for event in events) == ["firing", "resolved"]


# ---- real processes


@pytest.mark.e2e
def test_the_alert_receiver_appends_notifications_and_refuses_what_is_not_one(tmp_path: Path) -> None:
    with start_alert_receiver(tmp_path) as (url, notifications):
        assert requests.post(f"{url}/actionable", data=b"{not json", timeout=5).status_code == 400
        assert requests.post(f"{url}/actionable", json={"alerts": "no"}, timeout=5).status_code == 400
        assert not notifications.exists() or notifications.read_text() == ""
        payload = {"receiver": "actionable", "status": "firing", "groupLabels": {"alertname": "X"}, "alerts": [{}]}
        assert requests.post(f"{url}/actionable", json=payload, timeout=5).json() == {"appended": 1}
        [line] = notifications.read_text().splitlines()
        assert json.loads(line)["route"] == "actionable" and json.loads(line)["groupLabels"] == {"alertname": "X"}
        assert requests.get(url, timeout=5).json()["notifications"][0]["status"] == "firing"


@pytest.mark.e2e
def test_a_notification_sent_while_the_receiver_is_down_arrives_once_it_is_back(tmp_path: Path) -> None:
    port = free_port()
    config = write_alertmanager_config(tmp_path / "am", f"http://127.0.0.1:{port}")
    with start_alertmanager(tmp_path / "am", config) as url:
        post_alerts(url, [{"alertname": "TaxiBentoHighErrorRate", "severity": "critical", "service_name": "taxi"}])
        log = tmp_path / "am" / "alertmanager.log"
        wait_for("a failed delivery", lambda: "Notify attempt failed" in log.read_text(), timeout=20)
        with start_alert_receiver(tmp_path / "receiver", port=port) as (_, notification_file):
            [notification] = wait_for("the late notification", lambda: notifications(notification_file), timeout=30)
    assert notification["groupLabels"] == {"alertname": "TaxiBentoHighErrorRate"}
    assert notification["receiver"] == "actionable" and notification["status"] == "firing"


def post_alerts(alertmanager: str, label_sets: list[dict[str, str]]) -> None:
    body = [{"labels": labels, "annotations": {}} for labels in label_sets]
    requests.post(f"{alertmanager}/api/v2/alerts", json=body, timeout=5).raise_for_status()


def inhibited(alertmanager: str, expected: int) -> dict[str, bool]:
    """alertname + window/job -> inhibited, once Alertmanager lists `expected` alerts and their marks settle."""
    deadline = time.monotonic() + 15
    previous = None
    while time.monotonic() < deadline:
        listed = requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        current = {
            f"{a['labels']['alertname']} {a['labels'].get('window') or a['labels'].get('job', '')}": bool(
                a["status"]["inhibitedBy"]
            )
            for a in listed
        }
        if len(listed) == expected and current == previous:
            return current
        previous = current
        time.sleep(0.5)
    raise AssertionError(f"Alertmanager did not settle on {expected} alerts: {previous}")


@pytest.mark.e2e
def test_an_unreachable_target_inhibits_the_alerts_built_on_its_figures(tmp_path: Path) -> None:
    """Every rule's alert (the route cases' labels) while both scrape targets are down: the service's alerts and
    every alert on pushed figures are inhibited, the outages themselves and an unknown alert are not."""
    with start_alert_receiver(tmp_path / "receiver") as (receiver, _):
        config = write_alertmanager_config(tmp_path / "am", receiver)
        with start_alertmanager(tmp_path / "am", config) as url:
            cases = [{"alertname": case["alert"], **case["labels"]} for case in ROUTE_CASES]
            bento_down = {"alertname": "TaxiScrapeTargetDown", "severity": "critical", "job": "bento"}
            post_alerts(url, [*cases, bento_down])
            marks = inhibited(url, expected=len(cases) + 1)
    not_inhibited = {"TaxiScrapeTargetDown pushgateway", "TaxiScrapeTargetDown bento", "SomeNewAlert "}
    assert {name for name, mark in marks.items() if not mark} == not_inhibited, marks


@pytest.mark.e2e
def test_an_rmse_alarm_inhibits_the_drift_info_alerts_of_its_window_only(tmp_path: Path) -> None:
    with start_alert_receiver(tmp_path / "receiver") as (receiver, _):
        config = write_alertmanager_config(tmp_path / "am", receiver)
        with start_alertmanager(tmp_path / "am", config) as url:
            online = {"job": "taxi_online_monitoring"}
            post_alerts(
                url,
                [
                    {"alertname": "TaxiOnlineRmseAboveBound", "severity": "warning", "window": "last_5000", **online},
                    {"alertname": "TaxiOnlineDatasetDrift", "severity": "info", "window": "last_5000", **online},
                    {"alertname": "TaxiOnlineDatasetDrift", "severity": "info", "window": "hour", **online},
                    {"alertname": "TaxiOnlinePredictionDrift", "severity": "warning", "window": "last_5000", **online},
                ],
            )
            marks = inhibited(url, expected=4)
    assert marks == {
        "TaxiOnlineRmseAboveBound last_5000": False,
        "TaxiOnlineDatasetDrift last_5000": True,
        "TaxiOnlineDatasetDrift hour": False,
        "TaxiOnlinePredictionDrift last_5000": False,  # a warning of its own: still sent
    }


def sample(name: str, value: float, **labels: str) -> Sample:
    assert name in HELP
    return Sample(name, labels, value)


def wait_for(what: str, condition: Callable[[], object], timeout: float = 45.0) -> object:
    return wait_until(condition, timeout, what, interval=0.5)


def notifications(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def listed(alertmanager: str) -> dict[str, dict]:
    """The alerts Alertmanager lists, by alertname and window or month."""
    alerts = requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
    return {f"{a['labels']['alertname']} {a['labels'].get('window') or a['labels'].get('month')}": a for a in alerts}


@functools.cache
def definitions() -> dg.Definitions:
    from taxi_assets.definitions import defs

    return defs()


def tick(
    instance: dg.DagsterInstance,
    alertmanager: Alertmanager,
    cursor: str | None,
    policy: AutomationPolicy | None = None,
) -> dg.SensorResult:
    """One tick of alerts_sensor, its observations stored as the daemon stores them."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=definitions(),
        resources={"alertmanager": alertmanager, "policy": policy or automation_policy()},
    )
    result = alerts_sensor(context)
    assert isinstance(result, dg.SensorResult), result
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


@pytest.mark.e2e
def test_a_pushed_figure_beyond_its_bound_fires_is_notified_grouped_recorded_on_its_asset_and_resolves(
    tmp_path: Path, instance: dg.DagsterInstance, pushgateway: str
) -> None:
    gateway = Pushgateway(url=pushgateway)
    instance.report_runless_asset_event(dg.AssetMaterialization("trips", partition="2023-04"))  # the newest month
    with start_alert_receiver(tmp_path / "receiver") as (receiver, notification_file):
        config = write_alertmanager_config(tmp_path / "am", receiver)
        with start_alertmanager(tmp_path / "am", config) as am_url:
            # A silence made as an on-call engineer makes it: the challenger alarm is known, do not notify it.
            silence = amtool(
                "silence", "add", "alertname=TaxiChallengerBeatsDeployedModel", "--duration=1h",
                "--comment=promotion under review", "--author=test", f"--alertmanager.url={am_url}",
            )  # fmt: skip
            assert silence.returncode == 0, silence.stdout + silence.stderr
            silence_id = silence.stdout.strip()

            gateway.push(BATCH_JOB, {"month": "2023-04"}, [
                sample("taxi_batch_mom_dataset_drift", 1.0),
                sample("taxi_batch_month_start_timestamp_seconds", 1.6804e9),
            ])  # fmt: skip
            gateway.push(ONLINE_JOB, {"window": "hour"}, [
                sample("taxi_online_feature_drifted", 1.0, feature="trip_distance"),
                sample("taxi_online_feature_drifted", 1.0, feature="PULocationID"),
                sample("taxi_online_alarm", 1.0, alarm="dataset"),
            ])  # fmt: skip
            gateway.push(ONLINE_JOB, {"window": "last_5000"}, [
                sample("taxi_online_rmse", 7.0),
                sample("taxi_online_rmse_bound", 6.6),
                sample("taxi_online_feedback_rows", 2000.0),
                sample("taxi_online_alarm", 1.0, alarm="rmse"),
            ])  # fmt: skip
            gateway.push(
                CHALLENGE_JOB,
                {},
                challenge_samples("2023-04", "taxi_duration:a", "taxi_duration:b", 6.0, 5.4, 0.1, 0.05),
            )

            with start_prometheus(
                tmp_path / "prometheus",
                pushgateway=pushgateway.removeprefix("http://"),
                alertmanager=am_url.removeprefix("http://"),
                rule_for="0s",
            ):
                groups = {
                    ("actionable", "TaxiBatchDatasetDrift", "2023-04"),
                    ("quiet", "TaxiOnlineFeatureDrift", "hour"),
                    ("actionable", "TaxiOnlineRmseAboveBound", "last_5000"),
                }

                def notified() -> dict:
                    seen = {
                        (
                            n["receiver"],
                            n["groupLabels"]["alertname"],
                            n["groupLabels"].get("window") or n["groupLabels"].get("month"),
                        ): n
                        for n in notifications(notification_file)
                        if n["status"] == "firing"
                    }
                    return seen if groups <= set(seen) else {}

                seen = wait_for("the three groups' notifications", notified)
                # Grouped by alert and window: both drifted features of the hour window in one notification.
                quiet = seen[("quiet", "TaxiOnlineFeatureDrift", "hour")]
                assert quiet["groupLabels"] == {"alertname": "TaxiOnlineFeatureDrift", "window": "hour"}
                assert sorted(a["labels"]["feature"] for a in quiet["alerts"]) == ["PULocationID", "trip_distance"]
                batch = seen[("actionable", "TaxiBatchDatasetDrift", "2023-04")]["alerts"][0]
                assert batch["annotations"]["runbook_url"] == "docs/runbooks.md#taxibatchdatasetdrift"
                assert "2023-04" in batch["annotations"]["description"]

                # The silenced alert fires in Alertmanager but reaches nobody.
                challenger = wait_for(
                    "the silenced challenger alert",
                    lambda: listed(am_url).get("TaxiChallengerBeatsDeployedModel 2023-04"),
                )
                assert challenger["status"]["silencedBy"] == [silence_id]
                time.sleep(3)  # group_wait and group_interval are 1 s: a notification would have been sent
                sent = [n["groupLabels"]["alertname"] for n in notifications(notification_file)]
                assert "TaxiChallengerBeatsDeployedModel" not in sent

                # The sensor records every alert on its asset and requests the RMSE alarm's run.
                alertmanager = Alertmanager(url=am_url, restart_grace_seconds=0)
                first = tick(instance, alertmanager, None)
                recorded = sorted(
                    (e.asset_key.to_user_string(), e.partition, e.metadata["alert"].value) for e in first.asset_events
                )
                assert recorded == [
                    ("deployed_model", None, "TaxiChallengerBeatsDeployedModel"),
                    ("drift_metrics", "2023-04", "TaxiBatchDatasetDrift"),
                    ("online_drift", None, "TaxiOnlineDatasetDrift"),
                    ("online_drift", None, "TaxiOnlineFeatureDrift"),
                    ("online_drift", None, "TaxiOnlineFeatureDrift"),
                    ("online_drift", None, "TaxiOnlineRmseAboveBound"),
                ]
                [request] = first.run_requests
                assert (request.job_name, request.partition_key) == ("model_challenge_job", "2023-04")
                assert request.tags["taxi/alert"] == "TaxiOnlineRmseAboveBound"
                assert tick(instance, alertmanager, first.cursor).asset_events == []  # nothing new, nothing twice

                # The figure returns within its bound: the alert resolves, is notified so, and recorded so.
                gateway.push(BATCH_JOB, {"month": "2023-04"}, [
                    sample("taxi_batch_mom_dataset_drift", 0.0),
                    sample("taxi_batch_month_start_timestamp_seconds", 1.6804e9),
                ])  # fmt: skip
                wait_for(
                    "the batch alert to leave Alertmanager",
                    lambda: "TaxiBatchDatasetDrift 2023-04" not in listed(am_url),
                )
                wait_for(
                    "the resolved notification",
                    lambda: [
                        n for n in notifications(notification_file)
                        if n["status"] == "resolved" and n["groupLabels"].get("month") == "2023-04"
                    ],
                )  # fmt: skip
                # Just after a restart Alertmanager lists nothing yet: absence is not resolution then.
                held = tick(instance, Alertmanager(url=am_url, restart_grace_seconds=3600), first.cursor)
                assert held.asset_events == [] and held.cursor == first.cursor
                second = tick(instance, alertmanager, first.cursor)
    [resolved] = second.asset_events
    assert (resolved.asset_key, resolved.partition) == (dg.AssetKey("drift_metrics"), "2023-04")
    assert resolved.metadata["status"].value == "resolved" and second.run_requests == []

    # On the asset's page: the alarm's start and its resolution, with labels, values and runbook.
    history = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("drift_metrics"), asset_partitions=["2023-04"]), limit=10
    ).records
    events = [record.asset_observation for record in reversed(history)]
    assert [event.metadata["status"].value for event in events] == ["firing", "resolved"]
    assert events[0].metadata["labels"].value["month"] == "2023-04"
    assert events[0].metadata["runbook_url"].value.endswith("docs/runbooks.md#taxibatchdatasetdrift")
    assert "drifted from the month before" in events[0].description
    challenger_event = instance.fetch_observations(dg.AssetKey("deployed_model"), limit=1).records[0]
    assert challenger_event.asset_observation.metadata["silenced_by"].value == silence_id


@pytest.mark.e2e
def test_an_unreachable_alertmanager_skips_the_tick_and_forgets_nothing(instance: dg.DagsterInstance) -> None:
    [alert] = core.parse_alerts([AM_ALERT])
    cursor = json.dumps({alert.episode: alert.to_json()})
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=definitions(),
        resources={
            "alertmanager": Alertmanager(url="http://127.0.0.1:9", timeout_seconds=1),
            "policy": automation_policy(),
        },
    )
    result = alerts_sensor(context)
    # A skipped tick keeps its cursor: the known alert is neither dropped nor recorded as resolved.
    assert isinstance(result, dg.SkipReason), result
    assert "Alertmanager at http://127.0.0.1:9 could not be read" in result.skip_message


@pytest.mark.e2e
def test_an_assets_page_shows_its_alarm_history(platform_env: Path) -> None:
    """The README's screenshot of an asset's alarm history in the Dagster UI (UPDATE_SCREENSHOTS=1 writes
    docs/screenshots/alarm_history.png): alerts posted to a real Alertmanager, recorded by alerts_sensor on
    drift_metrics and its months, one of them resolved, as the webserver shows them."""
    from tests.support.chromium import dom, readme_screenshot
    from tests.support.dagster_processes import prepare_dagster_home, running_webserver

    dagster_home = platform_env / "dagster_home"
    prepare_dagster_home(dagster_home)
    rule = {rule["alert"]: rule for rule in alert_rules()}["TaxiBatchDatasetDrift"]

    def batch_alert(month: str, ends: str | None = None) -> dict:
        annotations = {name: value.replace("{{ $labels.month }}", month) for name, value in rule["annotations"].items()}
        labels = {"alertname": "TaxiBatchDatasetDrift", "severity": "warning", "job": BATCH_JOB, "month": month}
        return {"labels": labels, "annotations": annotations, **({"endsAt": ends} if ends else {})}

    with (
        start_alert_receiver(platform_env / "receiver") as (receiver, _),
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
    ):
        config = write_alertmanager_config(platform_env / "am", receiver)
        with start_alertmanager(platform_env / "am", config) as url:
            alertmanager = Alertmanager(url=url, restart_grace_seconds=0)
            post = [batch_alert("2023-03"), batch_alert("2023-04")]
            requests.post(f"{url}/api/v2/alerts", json=post, timeout=5).raise_for_status()
            wait_for("two alerts", lambda: len(listed(url)) == 2)
            first = tick(instance, alertmanager, None)
            ended = [batch_alert("2023-03", ends="2000-01-01T00:00:00Z")]  # resolved (the figure came back)
            requests.post(f"{url}/api/v2/alerts", json=ended, timeout=5).raise_for_status()
            wait_for("the resolution", lambda: len(listed(url)) == 1)
            second = tick(instance, alertmanager, first.cursor)
        assert len(first.asset_events) == 2 and len(second.asset_events) == 1

        with running_webserver(dagster_home, platform_env / "webserver.log") as webserver:
            page = f"{webserver}/assets/drift_metrics?view=events"
            assert "TaxiBatchDatasetDrift resolved" in dom(page, platform_env / "chromium-dom", budget_ms=60000)
            readme_screenshot("alarm_history", page, platform_env, size="1440,900", budget_ms=60000)


@pytest.mark.e2e
def test_an_alerts_run_follows_the_switch_and_a_silenced_alert_requests_none(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization("trips", partition="2023-03"))
    rmse = {"alertname": "TaxiOnlineRmseAboveBound", "severity": "warning", "job": ONLINE_JOB}
    annotations = {"asset": "online_drift", "summary": "Online RMSE above its bound"}
    with start_alert_receiver(tmp_path / "receiver") as (receiver, _):
        config = write_alertmanager_config(tmp_path / "am", receiver)
        with start_alertmanager(tmp_path / "am", config) as url:
            body = [
                {"labels": {**rmse, "window": window}, "annotations": annotations} for window in ("last_5000", "hour")
            ]
            requests.post(f"{url}/api/v2/alerts", json=body, timeout=5).raise_for_status()
            silence = amtool(
                "silence", "add", "alertname=TaxiOnlineRmseAboveBound", "window=hour", "--duration=1h",
                "--comment=known", "--author=test", f"--alertmanager.url={url}",
            )  # fmt: skip
            assert silence.returncode == 0, silence.stderr
            wait_for(
                "the hour window's alert silenced",
                lambda: listed(url).get("TaxiOnlineRmseAboveBound hour", {}).get("status", {}).get("silencedBy"),
            )
            alertmanager = Alertmanager(url=url, restart_grace_seconds=0)

            off = tick(instance, alertmanager, None, automation_policy(alert_runs="off"))
            assert len(off.asset_events) == 2 and off.run_requests == []  # recorded, nothing requested

            on = tick(instance, alertmanager, None)
    [request] = on.run_requests  # the silenced hour window requests nothing
    assert (request.job_name, request.partition_key) == ("model_challenge_job", "2023-03")
    [last_5000] = [e for e in on.asset_events if e.metadata["labels"].value["window"] == "last_5000"]
    assert request.run_key.startswith(f"alert {last_5000.metadata['fingerprint'].value}@")
