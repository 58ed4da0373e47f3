"""The supervisor of `make up` (taxi_assets/supervise.py) with real processes: the Evidently UI killed with
kill -9 and a wedged Pushgateway (SIGSTOP: alive, not answering) are started again, and its status file, `--status`
and the Pushgateway say so; an Evidently UI whose file watcher no longer sees the workspace counts as unhealthy."""

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest
import requests

from taxi_assets import settings, supervise
from tests.support.platform import REPO_ROOT, free_port, wait_until
from tests.support.prometheus_harness import pushgateway_command

EVIDENTLY = REPO_ROOT / ".venv" / "bin" / "evidently"


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def start_as_up_does(run: Path, logs: Path, name: str, args: list[str]) -> int:
    """What scripts/up.sh's `start` leaves: a process in a session of its own, its pid file and its command."""
    with open(logs / f"{name}.log", "wb") as log:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    (run / f"{name}.pid").write_text(f"{process.pid}\n")
    (run / f"{name}.cmd").write_bytes(b"".join(arg.encode() + b"\0" for arg in args))
    return process.pid


def pid_of(run: Path, name: str) -> int:
    return int((run / f"{name}.pid").read_text())


def stop_sessions(run: Path) -> None:
    for pid_file in run.glob("*.pid"):
        with suppress(ProcessLookupError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


@contextmanager
def platform_processes(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    run, logs, workspace = tmp_path / "run", tmp_path / "logs", tmp_path / "evidently"
    for folder in (run, logs, workspace):
        folder.mkdir()
    pushgateway_port, evidently_port = free_port(), free_port()
    env = {
        **os.environ,
        "TAXI_RUN_DIR": str(run),
        "TAXI_LOGS_DIR": str(logs),
        "TAXI_EVIDENTLY_WORKSPACE": str(workspace),
        "TAXI_EVIDENTLY_PORT": str(evidently_port),
        "TAXI_PUSHGATEWAY_PORT": str(pushgateway_port),
        "TAXI_PUSHGATEWAY_URL": f"http://127.0.0.1:{pushgateway_port}",
    }
    start_as_up_does(run, logs, "pushgateway", pushgateway_command(pushgateway_port))
    start_as_up_does(
        run,
        logs,
        "evidently-ui",
        [str(EVIDENTLY), "ui", "--workspace", str(workspace), "--host", "127.0.0.1", "--port", str(evidently_port)],
    )
    try:
        yield run, env
    finally:
        stop_sessions(run)


@pytest.mark.e2e
def test_a_killed_evidently_ui_and_a_wedged_pushgateway_are_restarted_and_reported(tmp_path: Path) -> None:
    with platform_processes(tmp_path) as (run, env):
        evidently = f"http://127.0.0.1:{env['TAXI_EVIDENTLY_PORT']}/api/projects"
        pushgateway = env["TAXI_PUSHGATEWAY_URL"]
        wait_until(lambda: answers(evidently) and answers(f"{pushgateway}/-/healthy"), 60, "both processes answer")
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "taxi_assets.supervise", "--check-seconds", "1", "--grace-seconds", "15"],
            cwd=REPO_ROOT,
            env=env,
            stdout=open(tmp_path / "logs" / "supervisor.log", "wb"),  # noqa: SIM115 (the process owns it)
            stderr=subprocess.STDOUT,
        )
        try:
            # kill -9 of the Evidently UI: started again, with the same command, and answering.
            killed = pid_of(run, "evidently-ui")
            psutil.Process(killed).kill()
            killed_at = time.monotonic()
            wait_until(lambda: pid_of(run, "evidently-ui") != killed, 30, "the Evidently UI restarted")
            wait_until(lambda: answers(evidently), 60, "the restarted Evidently UI answers")
            print(f"\nkill -9 of the Evidently UI -> answering again {time.monotonic() - killed_at:.1f} s later")

            # A wedged Pushgateway (alive, not answering): stopped and started again once it failed 3 checks.
            wedged = pid_of(run, "pushgateway")
            os.kill(wedged, signal.SIGSTOP)
            wedged_at = time.monotonic()
            wait_until(lambda: pid_of(run, "pushgateway") != wedged, 60, "the wedged Pushgateway restarted")
            wait_until(lambda: answers(f"{pushgateway}/-/healthy"), 30, "the restarted Pushgateway answers")
            print(f"wedged Pushgateway -> answering again {time.monotonic() - wedged_at:.1f} s later")
            assert not psutil.pid_exists(wedged) or psutil.Process(wedged).status() == psutil.STATUS_ZOMBIE

            status = json.loads((run / "supervisor.json").read_text())
            assert status["evidently-ui"]["restarts"] == 1
            assert status["evidently-ui"]["restarted_because"] == f"process {killed} exited"
            assert status["pushgateway"]["restarts"] == 1
            assert status["pushgateway"]["restarted_because"].startswith("wedged: ")

            # The health metric, pushed to the (restarted) Pushgateway.
            def pushed() -> dict[str, float] | None:
                text = requests.get(f"{pushgateway}/metrics", timeout=5).text
                restarts = {
                    line.split('process="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("taxi_platform_process_restarts{")
                }
                return restarts if len(restarts) == 2 else None

            assert wait_until(pushed, 30, "restarts pushed") == {"evidently-ui": 1.0, "pushgateway": 1.0}
            shown = subprocess.run(
                [sys.executable, "-m", "taxi_assets.supervise", "--status"],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert "evidently-ui" in shown.stdout and "restarted 1x" in shown.stdout, shown
        finally:
            supervisor.terminate()
            supervisor.wait(30)
        restarted = [
            line for line in (tmp_path / "logs" / "evidently-ui.log").read_text().splitlines() if "---" in line
        ]
        assert restarted == [f"--- supervisor: restarted (process {killed} exited) ---"]


@pytest.mark.unit
def test_an_evidently_ui_that_does_not_list_a_workspace_project_is_unhealthy(tmp_path: Path) -> None:
    """What the UI shows when its file watcher died: the projects it had, not the one written since."""
    workspace = tmp_path / "evidently"
    known, written_since = "0197a1b2-0000-7000-8000-000000000001", "0197a1b2-0000-7000-8000-000000000002"
    for project in (known, written_since):
        (workspace / project).mkdir(parents=True)
        (workspace / project / "metadata.json").write_text("{}")
    served = [{"id": known}]

    class Projects(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(served).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Projects)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        current = settings.load({"TAXI_EVIDENTLY_WORKSPACE": str(workspace)})
        url = f"http://127.0.0.1:{server.server_address[1]}/api/projects"
        problem = supervise.healthy("evidently-ui", url, current)
        assert problem is not None and written_since in problem and "file watcher" in problem
        served.append({"id": written_since})
        assert supervise.healthy("evidently-ui", url, current) is None
    finally:
        server.shutdown()
