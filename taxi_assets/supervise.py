"""The watch over the processes `make up` starts (`python -m taxi_assets.supervise`, started last by scripts/up.sh).

scripts/up.sh starts each process in a session of its own, with its pid in `$TAXI_RUN_DIR/<name>.pid` and its
command line in `<name>.cmd` (NUL-separated). Every `--check-seconds` this looks at each of them:

* a process that has exited (crash, OOM kill, kill -9) is started again, with the same command, environment and
  log (appended);
* a process that lives but does not answer its health check `WEDGED_AFTER_CHECKS` times in a row, after its
  start-up grace, is wedged: its session is stopped (SIGTERM, SIGKILL 10 s later) and started again. The checks:
  Prometheus and the Pushgateway `/-/healthy`, the Dagster webserver `/server_info`, the Evidently UI `/api/projects`,
  which must list every project of the workspace folder (its file watcher can die while the server still answers:
  the months project then answered 404 until a restart). The Bento service and the Dagster daemon are checked for
  being alive only (the service waits for a deployed model before it listens);
* what it found goes to `$TAXI_RUN_DIR/supervisor.json` (`--status` prints it: `make up` shows it when the platform
  is already running), to `data/logs/supervisor.log`, and to the Pushgateway (job `taxi_platform`:
  `taxi_platform_process_up`, `taxi_platform_process_restarts` per `process`; alerts TaxiPlatformProcessDown and
  TaxiPlatformProcessRestarted).

`make down` stops the supervisor first, so that nothing it stops is started again.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from taxi_assets import settings
from taxi_assets.core.metrics import HELP

NAME = "supervisor"
PLATFORM_JOB = "taxi_platform"
CHECK_SECONDS = 5.0
WEDGED_AFTER_CHECKS = 3
# A (re)started process is not expected to answer before this: Prometheus replays its WAL, the UIs load.
START_GRACE_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
PROBE_TIMEOUT_SECONDS = 5.0
REPO_ROOT = Path(__file__).resolve().parents[1]


def probes(current: settings.Settings) -> dict[str, str]:
    """The health-check URL of each process that has one, by its name in up.sh."""
    return {
        "pushgateway": f"http://127.0.0.1:{current.pushgateway_port}/-/healthy",
        "prometheus": f"http://127.0.0.1:{current.prometheus_port}/-/healthy",
        "dagster-webserver": f"http://127.0.0.1:{current.dagster_port}/server_info",
        "evidently-ui": f"{current.evidently_url}/api/projects",
    }


def workspace_projects(workspace: Path) -> set[str]:
    """The project ids the Evidently workspace folder holds (a folder with its metadata.json)."""
    return {path.parent.name for path in workspace.glob("*/metadata.json")}


def healthy(name: str, url: str, current: settings.Settings) -> str | None:
    """None when the process answers as it should; else why not."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS) as response:
            body = response.read()
    except (urllib.error.URLError, OSError) as error:
        return f"{url} does not answer ({getattr(error, 'reason', error)})"
    if name == "evidently-ui":
        served = {str(project.get("id")) for project in json.loads(body)}
        missing = workspace_projects(Path(current.evidently_workspace)) - served
        if missing:
            return f"{url} does not list projects {sorted(missing)} of the workspace (its file watcher died?)"
    return None


@dataclasses.dataclass
class Watched:
    name: str
    pid: int | None = None
    started: float = 0.0
    restarts: int = 0
    failed_checks: int = 0
    state: str = "up"
    problem: str = ""  # why it is not up, now
    restarted_because: str = ""  # why it was last restarted


def alive(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_session(pid: int) -> None:
    """Stop a process started in a session of its own and everything in it; SIGCONT wakes a stopped one, so that
    it can take the SIGTERM."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        os.killpg(pid, signal.SIGCONT)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class Supervisor:
    def __init__(
        self, current: settings.Settings, check_seconds: float, grace_seconds: float = START_GRACE_SECONDS
    ) -> None:
        self.current = current
        self.grace_seconds = grace_seconds
        self.run_dir = Path(current.run_dir)
        self.logs_dir = Path(current.logs_dir)
        self.check_seconds = check_seconds
        self.probes = probes(current)
        self.watched: dict[str, Watched] = {}

    def say(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} supervisor: {text}", flush=True)

    def command(self, name: str) -> list[str]:
        return (self.run_dir / f"{name}.cmd").read_bytes().decode().split("\0")[:-1]

    def start(self, watched: Watched, why: str) -> None:
        with open(self.logs_dir / f"{watched.name}.log", "ab") as log:
            log.write(f"\n--- supervisor: restarted ({why}) ---\n".encode())
            log.flush()
            process = subprocess.Popen(
                self.command(watched.name),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Written aside and renamed over the old file: `write_text` truncates first, and a reader in between (the
        # supervisor's next check, scripts/down.sh, a test) saw an empty pid file (a fresh-clone CI run failed on it).
        pid_file = self.run_dir / f"{watched.name}.pid"
        pid_file.with_suffix(".pid.tmp").write_text(f"{process.pid}\n")
        os.replace(pid_file.with_suffix(".pid.tmp"), pid_file)
        watched.pid, watched.started, watched.failed_checks = process.pid, time.time(), 0
        watched.restarts += 1
        watched.state, watched.problem, watched.restarted_because = "restarted", "", why
        self.say(f"{watched.name}: {why}: started again as pid {process.pid} (restart {watched.restarts})")

    def check(self, watched: Watched) -> None:
        pid_file = self.run_dir / f"{watched.name}.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        if pid != watched.pid:  # first look, or restarted by someone else
            watched.pid, watched.started, watched.failed_checks = pid, time.time(), 0
        if not alive(pid):
            self.start(watched, f"process {pid} exited")
            return
        url = self.probes.get(watched.name)
        if url is None or time.time() < watched.started + self.grace_seconds:
            return
        problem = healthy(watched.name, url, self.current)
        if problem is None:
            watched.failed_checks, watched.state, watched.problem = 0, "up", ""
            return
        watched.failed_checks += 1
        watched.state, watched.problem = "not answering", problem
        self.say(f"{watched.name}: {problem} (check {watched.failed_checks} of {WEDGED_AFTER_CHECKS})")
        if watched.failed_checks >= WEDGED_AFTER_CHECKS:
            stop_session(pid)
            self.start(watched, f"wedged: {problem}")

    def tick(self) -> None:
        for cmd in sorted(self.run_dir.glob("*.cmd")):
            name = cmd.stem
            if name != NAME:
                self.check(self.watched.setdefault(name, Watched(name)))
        self.report()

    def report(self) -> None:
        status = {name: dataclasses.asdict(watched) for name, watched in self.watched.items()}
        temporary = self.run_dir / f".{NAME}.json.tmp"
        temporary.write_text(json.dumps(status, indent=2))
        temporary.replace(self.run_dir / f"{NAME}.json")
        self.push()

    def push(self) -> None:
        """The processes' state to the Pushgateway (itself one of them: a push while it restarts is skipped)."""
        from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

        if not self.current.pushgateway_url:
            return
        registry = CollectorRegistry()
        up = Gauge("taxi_platform_process_up", HELP["taxi_platform_process_up"], ["process"], registry=registry)
        restarts = Gauge(
            "taxi_platform_process_restarts", HELP["taxi_platform_process_restarts"], ["process"], registry=registry
        )
        for name, watched in self.watched.items():
            up.labels(process=name).set(1.0 if watched.state != "not answering" and alive(watched.pid) else 0.0)
            restarts.labels(process=name).set(float(watched.restarts))
        with contextlib.suppress(OSError):
            push_to_gateway(self.current.pushgateway_url, job=PLATFORM_JOB, registry=registry, timeout=5)

    def run(self) -> None:
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        self.say(f"watching the processes of {self.run_dir} every {self.check_seconds:g} s")
        while not stopping:
            self.tick()
            deadline = time.monotonic() + self.check_seconds
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)
        self.say("stopped")


def print_status(run_dir: Path) -> int:
    path = run_dir / f"{NAME}.json"
    if not path.exists():
        print(f"supervisor: no status yet ({path})")
        return 1
    for name, watched in sorted(json.loads(path.read_text()).items()):
        problem = f": {watched['problem']}" if watched["problem"] else ""
        restarts = (
            f", restarted {watched['restarts']}x, last: {watched['restarted_because']}" if watched["restarts"] else ""
        )
        print(f"  {name:<18} {watched['state']}{problem} (pid {watched['pid']}{restarts})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taxi_assets.supervise", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check-seconds", type=float, default=CHECK_SECONDS, help="how often each process is checked")
    parser.add_argument(
        "--grace-seconds", type=float, default=START_GRACE_SECONDS, help="start-up time before health checks count"
    )
    parser.add_argument("--status", action="store_true", help="print the last status and exit")
    options = parser.parse_args(argv)
    current = settings.current()
    if options.status:
        return print_status(Path(current.run_dir))
    Supervisor(current, options.check_seconds, options.grace_seconds).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
