"""Alertmanager's HTTP API (v2), read by alerts_sensor."""

import dagster as dg
import requests

from taxi_assets import settings
from taxi_assets.core.alerts import parse_time
from taxi_assets.defs.resources import configured


class Alertmanager(dg.ConfigurableResource):
    """The Alertmanager Prometheus sends its alerts to; an empty `url` turns the alert history off.

    `restart_grace_seconds`: how long after Alertmanager starts an alert missing from its list is not yet taken
    as resolved (Prometheus resends firing alerts every minute; a restarted Alertmanager lists nothing until then).
    """

    url: str = ""
    timeout_seconds: float = 10.0
    restart_grace_seconds: float = 90.0

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def address(self) -> str:
        """The URL without credentials, for logs and messages."""
        return settings.redact(self.url)

    def _get(self, path: str) -> object:
        answer = requests.get(f"{self.url.rstrip('/')}/api/v2/{path}", timeout=self.timeout_seconds)
        answer.raise_for_status()
        return answer.json()

    def alerts(self) -> object:
        """`GET /api/v2/alerts`: every alert not resolved, silenced and inhibited ones included."""
        return self._get("alerts")

    def uptime_seconds(self, now: float) -> float:
        """How long Alertmanager has been running (`/api/v2/status`'s start time)."""
        return now - parse_time(self._get("status")["uptime"])


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"alertmanager": Alertmanager(url=configured("alertmanager_url"))})
