"""The receiver Alertmanager notifies under `make up`: every webhook notification it posts is appended, as one JSON
line, to TAXI_ALERT_NOTIFICATIONS (data/alerts/notifications.jsonl), so an alert reaches a file a user can read
(`tail -f`, `jq`) without any outside service. Alertmanager's own receivers (Slack, e-mail, PagerDuty) replace it
in monitoring/alertmanager/alertmanager.yml (README, "Alerts").

    python -m taxi_assets.alert_receiver [--host 127.0.0.1] [--port 9095] [--file data/alerts/notifications.jsonl]

POST /<receiver> takes Alertmanager's webhook payload (version 4: `receiver`, `status`, `groupLabels`, `alerts`, …)
and answers 200 once the line is on disk; a body that is not such a payload gets a 400 naming the problem (and
Alertmanager's retry). GET / answers the last notifications, newest last.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from taxi_assets import settings

MAX_BODY_BYTES = 1 << 20
LAST_SHOWN = 50


class NotificationLog:
    """The JSON-lines file; appends are serialized and synced, so a line is whole and durable once answered."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, route: str, payload: dict) -> None:
        line = json.dumps({"received_at": time.time(), "route": route, **payload}, separators=(",", ":"))
        with self._lock, open(self.path, "a", encoding="utf-8") as log:
            log.write(line + "\n")
            log.flush()
            os.fsync(log.fileno())

    def last(self, count: int = LAST_SHOWN) -> list[dict]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()[-count:]
        return [json.loads(line) for line in lines if line.strip()]


def problem(payload: object) -> str | None:
    """Why `payload` is not an Alertmanager webhook notification, or None."""
    if not isinstance(payload, dict):
        return "the body must be a JSON object"
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not all(isinstance(alert, dict) for alert in alerts):
        return "`alerts` must be a list of objects"
    if not isinstance(payload.get("status"), str):
        return "`status` must be a string"
    return None


def make_handler(log: NotificationLog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._answer(200, {"file": str(log.path), "notifications": log.last()})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
                return
            try:
                payload = json.loads(self.rfile.read(length) or b"null")
            except ValueError as error:
                self._answer(400, {"error": f"the body is not JSON: {error}"})
                return
            if reason := problem(payload):
                self._answer(400, {"error": reason})
                return
            log.append(self.path.strip("/") or "default", payload)
            self._answer(200, {"appended": len(payload["alerts"])})

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
            pass  # the file is the record; a line per request would only repeat it

    return Handler


def main(argv: list[str] | None = None) -> None:
    current = settings.current()
    parser = argparse.ArgumentParser(prog="python -m taxi_assets.alert_receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=current.alert_receiver_port)
    parser.add_argument("--file", type=Path, default=Path(current.alert_notifications))
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(NotificationLog(args.file)))
    print(f"alert receiver on http://{args.host}:{args.port}, appending to {args.file}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
