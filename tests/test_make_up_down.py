"""`make up` starts every process of the platform in the background and returns; `make down` stops all of them and
everything they started, leaving no process and no listening port; Ctrl-C while `make up` starts stops what it
started."""

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.support import service_harness
from tests.support.platform import REPO_ROOT, make_up_environment

pytestmark = pytest.mark.e2e

NAMES = {
    "pushgateway",
    "prometheus",
    "alertmanager",
    "alert-receiver",
    "bento",
    "evidently-ui",
    "dagster-daemon",
    "dagster-webserver",
    "supervisor",
}


def listeners(ports: dict[str, int]) -> list[str]:
    """The given ports still listening, each with the process holding it (so that a failure says whose it is)."""
    held, names = [], {port: name for name, port in ports.items()}
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in names:
            try:
                holder = f"{conn.pid} {' '.join(psutil.Process(conn.pid).cmdline())[:160]}" if conn.pid else "?"
            except psutil.NoSuchProcess:
                holder = f"{conn.pid} (gone)"
            held.append(f"{names[conn.laddr.port]} ({conn.laddr.port}) held by {holder}")
    return held


def still_listening(ports: dict[str, int], seconds: float = 10.0) -> list[str]:
    """`listeners` once they are gone, or after `seconds`: a process that down.sh saw exit (a zombie) can still be
    releasing its sockets for a moment on a loaded machine, when the socket is listed with no process holding it
    (seen once in CI: "held by ?")."""
    deadline = time.monotonic() + seconds
    while (held := listeners(ports)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return held


def tree(pid_files: list[Path]) -> list[psutil.Process]:
    processes = []
    for pid_file in pid_files:
        parent = psutil.Process(int(pid_file.read_text()))
        processes += [parent, *parent.children(recursive=True)]
    return processes


def gone(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return alive


def test_make_down_stops_everything_make_up_started(tmp_path: Path, tlc_dir: Path) -> None:
    env, ports = make_up_environment(tmp_path, tlc_dir)
    service_harness.save_deployed_model(tmp_path / "bentoml")  # so that the service starts too
    up = subprocess.run(["make", "-s", "up"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    processes = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"Dagster UI      http://127.0.0.1:{ports['DAGSTER_PORT']}" in up.stdout
        pid_files = sorted((tmp_path / "run").glob("*.pid"))
        assert {path.stem for path in pid_files} == NAMES
        processes = tree(pid_files)
        assert requests.get(f"http://127.0.0.1:{ports['DAGSTER_PORT']}/server_info", timeout=10).ok
        prometheus = f"http://127.0.0.1:{ports['TAXI_PROMETHEUS_PORT']}"
        service_harness_url = f"http://127.0.0.1:{ports['TAXI_SERVICE_PORT']}/readyz"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(service_harness_url, timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(1)
        else:
            pytest.fail(f"the service did not start: {(tmp_path / 'logs' / 'bento.log').read_text()[-2000:]}")
        assert requests.get(f"{prometheus}/-/ready", timeout=10).ok
        # Alertmanager: in the summary, ready, and where Prometheus sends its alerts.
        alertmanager = f"http://127.0.0.1:{ports['TAXI_ALERTMANAGER_PORT']}"
        assert f"Alertmanager    {alertmanager}" in up.stdout
        assert requests.get(f"{alertmanager}/-/ready", timeout=10).ok
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            managers = requests.get(f"{prometheus}/api/v1/alertmanagers", timeout=10).json()["data"]
            if managers["activeAlertmanagers"]:
                break
            time.sleep(1)
        assert [m["url"] for m in managers["activeAlertmanagers"]] == [f"{alertmanager}/api/v2/alerts"]
        # Its receivers post to the alert receiver of this platform, which answers.
        receiver = f"http://127.0.0.1:{ports['TAXI_ALERT_RECEIVER_PORT']}"
        assert requests.get(receiver, timeout=10).json()["file"] == str(tmp_path / "alerts" / "notifications.jsonl")
        status = requests.get(f"{alertmanager}/api/v2/status", timeout=10).json()
        assert f"{receiver}/actionable" in status["config"]["original"]
        assert requests.get(f"http://127.0.0.1:{ports['TAXI_EVIDENTLY_PORT']}/api/projects", timeout=10).ok
        targets = requests.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        assert {target["labels"]["instance"] for target in targets} == {
            f"127.0.0.1:{ports['TAXI_SERVICE_PORT']}",
            f"127.0.0.1:{ports['TAXI_PUSHGATEWAY_PORT']}",
        }
        # The supervisor starts a crashed Evidently UI again, and `make up` says so.
        evidently = tmp_path / "run" / "evidently-ui.pid"
        crashed = int(evidently.read_text())
        psutil.Process(crashed).kill()
        deadline = time.monotonic() + 60
        while int(evidently.read_text()) == crashed:
            assert time.monotonic() < deadline, "the Evidently UI was not restarted"
            time.sleep(0.5)
        processes = tree(pid_files)  # now with the service's workers and the restarted UI
        assert len(processes) > len(NAMES)

        again = subprocess.run(["make", "-s", "up"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert again.returncode != 0 and "already running" in again.stderr
        assert f"restarted 1x, last: process {crashed} exited" in again.stderr, again.stderr
    finally:
        down = subprocess.run(["make", "-s", "down"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not gone(processes), "still running after make down"
    assert not still_listening(ports)
    assert not list((tmp_path / "run").glob("*.pid"))
    assert (
        "nothing is running"
        in subprocess.run(["make", "-s", "down"], cwd=REPO_ROOT, env=env, capture_output=True, text=True).stdout
    )


def test_ctrl_c_while_make_up_starts_stops_what_it_started(tmp_path: Path, tlc_dir: Path) -> None:
    env, ports = make_up_environment(tmp_path, tlc_dir)
    # Started as from a terminal: SIGINT at its default (a suite started in the background, as `nohup make test &`,
    # ignores it, and bash can trap no signal ignored when it started) and a process group of its own, signalled
    # as a whole as Ctrl-C does (`make up`'s services run in sessions of their own).
    up = subprocess.Popen(
        ["./scripts/up.sh"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    run = tmp_path / "run"
    try:
        # Interrupted while it waits for the Dagster UI (the last process it starts, seconds before the UI
        # answers). On a loaded machine starting the others takes minutes.
        deadline = time.monotonic() + 300
        while not (run / "dagster-webserver.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert up.poll() is None and (run / "dagster-webserver.pid").exists(), "make up did not reach the Dagster UI"
        processes = tree(sorted(run.glob("*.pid")))
        os.killpg(up.pid, signal.SIGINT)
        output, _ = up.communicate(timeout=60)
        assert up.returncode == 130, output
        assert "interrupted: stopping what was started" in output
        assert not gone(processes)
        assert not still_listening(ports)
    finally:
        # A platform the interrupt did not stop must not outlive the test (checked above, before this).
        if up.poll() is None:
            up.kill()
        subprocess.run(["./scripts/down.sh"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=120)
