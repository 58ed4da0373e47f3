"""Alertmanager's alerts as events of the assets they are about: the pure logic of `alerts_sensor`
(taxi_assets/defs/alerts/).

Each alert rule names its asset and runbook section in its annotations (`asset`, `runbook_url`,
monitoring/prometheus/alerts.yml). Alertmanager's API v2 (`GET /api/v2/alerts`) lists the alerts that are firing,
silenced and inhibited ones included, and drops an alert once it has resolved; so an alert *starts* when an episode
(fingerprint and start time) appears in the list and *resolves* when a known episode is no longer in it. A freshly
restarted Alertmanager has not yet heard again from Prometheus (it resends firing alerts every minute) and lists
nothing: absence is not read as resolution until it has been up for a grace period.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping, Sequence

FIRING = "firing"
RESOLVED = "resolved"

# The run an alert's runbook names, requested when the alert starts (TAXI_ALERT_RUNS=on): the name of the job and
# what its partition is. The online RMSE alarm asks whether a model trained on newer data does better on the newest
# month: model_challenge of the newest loaded month (docs/runbooks.md#taxionlinermseabovebound).
ALERT_RUNS: dict[str, str] = {"TaxiOnlineRmseAboveBound": "model_challenge_job"}


@dataclasses.dataclass(frozen=True)
class Alert:
    """One alert of Alertmanager's API v2, as much as the asset history needs."""

    fingerprint: str
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    state: str  # active, suppressed (silenced or inhibited) or unprocessed
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()
    generator_url: str = ""

    @property
    def episode(self) -> str:
        """The same alert firing again after it resolved is a new episode."""
        return f"{self.fingerprint}@{self.starts_at}"

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def asset(self) -> str:
        return self.annotations.get("asset", "")

    @property
    def runbook_url(self) -> str:
        return self.annotations.get("runbook_url", "")

    @property
    def actionable(self) -> bool:
        """Calls for action now: a warning or critical alert that nobody silenced and no other alert explains."""
        return self.severity in ("warning", "critical") and self.state == "active"

    def to_json(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "silenced_by": list(self.silenced_by),
            "inhibited_by": list(self.inhibited_by),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Alert:
        return cls(**{**data, "silenced_by": tuple(data["silenced_by"]), "inhibited_by": tuple(data["inhibited_by"])})


@dataclasses.dataclass(frozen=True)
class AlertEvent:
    alert: Alert
    status: str  # FIRING or RESOLVED
    at: float  # unix time: the alert's start, or when its absence was first seen


def parse_time(text: str) -> float:
    """Unix time of an RFC 3339 timestamp as Alertmanager writes it (nanoseconds, `Z`)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if not match:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    seconds, fraction, zone = match.groups()
    parsed = dt.datetime.fromisoformat(seconds + ("+00:00" if zone == "Z" else zone))
    return parsed.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def parse_alerts(payload: object) -> list[Alert]:
    """The alerts of a `GET /api/v2/alerts` answer; ValueError when it is not one."""
    if not isinstance(payload, list):
        raise ValueError(f"Alertmanager's alert list must be a JSON list, got {type(payload).__name__}")
    alerts = []
    for item in payload:
        try:
            status = item.get("status") or {}
            alerts.append(
                Alert(
                    fingerprint=str(item["fingerprint"]),
                    name=str(item["labels"]["alertname"]),
                    labels={str(k): str(v) for k, v in item["labels"].items()},
                    annotations={str(k): str(v) for k, v in (item.get("annotations") or {}).items()},
                    starts_at=str(item["startsAt"]),
                    state=str(status.get("state", "active")),
                    silenced_by=tuple(status.get("silencedBy") or ()),
                    inhibited_by=tuple(status.get("inhibitedBy") or ()),
                    generator_url=str(item.get("generatorURL") or ""),
                )
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not an Alertmanager v2 alert ({error!r}): {str(item)[:200]}") from None
    return alerts


def diff(
    known: Mapping[str, Mapping], current: Sequence[Alert], now: float, can_resolve: bool
) -> tuple[list[AlertEvent], dict[str, dict]]:
    """The events since the last look, and what is known now.

    `known` is the previous result (episode -> alert as JSON: the sensor's cursor). Every episode in `current` and
    not in `known` has started (at its own start time); every known episode missing from `current` has resolved
    (first seen missing `now`) unless `can_resolve` is False (Alertmanager restarted: it is kept, unresolved).
    """
    now_known = {alert.episode: alert.to_json() for alert in current}
    events = [AlertEvent(alert, FIRING, parse_time(alert.starts_at)) for alert in current if alert.episode not in known]
    for episode, data in known.items():
        if episode in now_known:
            continue
        if can_resolve:
            events.append(AlertEvent(Alert.from_json(data), RESOLVED, now))
        else:
            now_known[episode] = dict(data)
    return events, now_known


def partition_of(alert: Alert, partitioning: str | None) -> str | None:
    """The partition of the asset an alert is about: the `month` label for a monthly asset, the UTC day it started
    for a daily one (the prediction-log days whose ingest is late), none otherwise."""
    if partitioning == "month":
        return alert.labels.get("month")
    if partitioning == "day":
        return dt.datetime.fromtimestamp(parse_time(alert.starts_at), dt.timezone.utc).strftime("%Y-%m-%d")
    return None


def event_metadata(event: AlertEvent) -> dict[str, object]:
    """What the asset's history shows of an event: plain values, typed by the caller."""
    alert = event.alert
    metadata: dict[str, object] = {
        "alert": alert.name,
        "status": event.status,
        "severity": alert.severity,
        "summary": alert.annotations.get("summary", ""),
        "description": alert.annotations.get("description", ""),
        "labels": dict(alert.labels),
        "runbook_url": alert.runbook_url,
        "started_at": parse_time(alert.starts_at),
        "fingerprint": alert.fingerprint,
        "alertmanager_state": alert.state,
    }
    if event.status == RESOLVED:
        metadata["resolved_at"] = event.at
        metadata["firing_seconds"] = round(event.at - parse_time(alert.starts_at), 3)
    if alert.silenced_by:
        metadata["silenced_by"] = ", ".join(alert.silenced_by)
    if alert.inhibited_by:
        metadata["inhibited_by"] = ", ".join(alert.inhibited_by)
    if alert.generator_url:
        metadata["prometheus_url"] = alert.generator_url
    return metadata


def describe(event: AlertEvent) -> str:
    """One line for the asset's event list."""
    alert = event.alert
    summary = alert.annotations.get("summary") or alert.name
    return f"{alert.name} {event.status} ({alert.severity}): {summary}"
