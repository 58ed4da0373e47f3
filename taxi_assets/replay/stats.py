"""What a replay counts: each endpoint's answers by class, refusal reasons and latencies, and the summary."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections import Counter
from typing import Any

import numpy as np

_INPUT_VALUE = re.compile(r",?\s*input_value=.*?(?=, input_type=|\])")
_SPACES = re.compile(r"\s+")


def reason(status: int, body: str) -> str:
    """A short reason for a 4xx/5xx answer: the service's message and the fields it names, without the offending
    values, so that equal causes count together."""
    text = body
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        answer = json.loads(body)
        text = str(answer.get("error", body))
        if details := answer.get("detail"):
            text = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}" for d in details)
    text = _SPACES.sub(" ", _INPUT_VALUE.sub("", text)).strip()
    return f"{status}: {text[:200]}"


@dataclasses.dataclass
class EndpointStats:
    sent: int = 0
    ok: int = 0
    client_errors: int = 0
    server_errors: int = 0
    failed: int = 0  # no HTTP answer: connection refused or reset, timeout
    reasons: Counter = dataclasses.field(default_factory=Counter)
    latencies_ms: list[float] = dataclasses.field(default_factory=list)

    def record(self, status: int | None, latency_ms: float, body: str = "", error: str = "") -> None:
        if status is None:
            self.failed += 1
            self.reasons[f"no answer: {error[:200]}"] += 1
            return
        self.latencies_ms.append(latency_ms)
        if 200 <= status < 300:
            self.ok += 1
        elif status < 500:
            self.client_errors += 1
            self.reasons[reason(status, body)] += 1
        else:
            self.server_errors += 1
            self.reasons[reason(status, body)] += 1

    def summary(self, seconds: float) -> dict[str, Any]:
        latencies = np.array(self.latencies_ms) if self.latencies_ms else None
        percentiles = {}
        if latencies is not None:
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
                percentiles[name] = round(float(np.percentile(latencies, q)), 2)
            percentiles["max"] = round(float(latencies.max()), 2)
        return {
            "sent": self.sent,
            "2xx": self.ok,
            "4xx": self.client_errors,
            "5xx": self.server_errors,
            "no_answer": self.failed,
            "per_second": round(self.ok / seconds, 1) if seconds > 0 else 0.0,
            "latency_ms": percentiles,
            "reasons": dict(self.reasons.most_common()),
        }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"replay {summary['run_id']} against {summary['url']}: {summary['rides']} rides, "
        f"{summary['seconds']:.1f} s{' (interrupted)' if summary['interrupted'] else ''}"
    ]
    for endpoint in ("predict", "feedback"):
        stats = summary[endpoint]
        latency = stats["latency_ms"]
        line = (
            f"  /{endpoint}: sent {stats['sent']}, 2xx {stats['2xx']}, 4xx {stats['4xx']}, 5xx {stats['5xx']}, "
            f"no answer {stats['no_answer']}; {stats['per_second']}/s"
        )
        if latency:
            line += f"; latency ms p50 {latency['p50']} p90 {latency['p90']} p99 {latency['p99']} max {latency['max']}"
        if endpoint == "feedback" and stats["not_sent"]:
            line += f"; {stats['not_sent']} not sent (stopped before they were due)"
        lines.append(line)
        for text, count in list(stats["reasons"].items())[:10]:
            lines.append(f"      {count} × {text}")
    return "\n".join(lines)
