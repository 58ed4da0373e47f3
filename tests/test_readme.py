"""README.md's commands are tests: every fenced `bash` command is extracted and either run here, as a user would
type it, against a real platform the suite starts with `scripts/up.sh` (the settings printout, the backfill, the
rollback, the curl examples, the `taxi-replay` lines with a small `--limit`), run in a scratch clone (the clean-start
advice), or named as the suite's own (`make up`/`make down`: tests/test_make_up_down.py; `make test`: CI). A README
command no test knows fails the unit test below; one that stops working fails the e2e test."""

import argparse
import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from taxi_assets import settings
from taxi_assets.cli.dagster_client import DagsterClient
from taxi_assets.cli.demo import Demo
from tests.support.platform import REPO_ROOT, make_up_environment, wait_http

README = REPO_ROOT / "README.md"
REPLAY_LIMIT = 100
# How each README command is exercised; the first pattern that matches a command names its kind.
KINDS = (
    (r"^make (up|down|test)\b", "suite"),  # tests/test_make_up_down.py, and CI itself
    (r"^git clean ", "clean-start"),
    (r"^\.venv/bin/taxi-settings$", "settings"),
    (r"^\.venv/bin/taxi-backfill ", "backfill"),
    (r"^\.venv/bin/taxi-rollback$", "rollback"),
    (r"^curl .* http://127\.0\.0\.1:3001/", "curl"),
    (r"^\.venv/bin/taxi-replay ", "replay"),
)


def readme_commands() -> list[str]:
    """Every command of every fenced bash block: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command and not command.startswith("#"):
                commands.append(re.sub(r"\s+", " ", command))
    return commands


def kind(command: str) -> str | None:
    return next((name for pattern, name in KINDS if re.search(pattern, command)), None)


def by_kind(name: str) -> list[str]:
    return [command for command in readme_commands() if kind(command) == name]


@pytest.mark.unit
def test_every_readme_command_is_exercised_by_a_test() -> None:
    unknown = [command for command in readme_commands() if kind(command) is None]
    assert not unknown, f"README commands no test runs (add them to tests/test_readme.py): {unknown}"
    counts = {name: len(by_kind(name)) for _, name in KINDS}
    assert counts == {"suite": 3, "clean-start": 1, "settings": 1, "backfill": 1, "rollback": 1} | {
        "curl": 3,
        "replay": 3,
    }, counts


def run(command: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def side_by_side(commands: list[str], env: dict[str, str], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """`run` of every command at once; each one's outcome, in order. Their output goes to files, not pipes: a
    process whose pipe is full would stall while another one is waited for."""
    with contextlib.ExitStack() as stack:
        outputs = [
            (stack.enter_context(tempfile.TemporaryFile("w+")), stack.enter_context(tempfile.TemporaryFile("w+")))
            for _ in commands
        ]
        processes = [
            subprocess.Popen(["bash", "-c", command], cwd=REPO_ROOT, env=env, stdout=out, stderr=err, text=True)
            for command, (out, err) in zip(commands, outputs, strict=True)
        ]
        try:
            deadline = time.monotonic() + timeout
            for process in processes:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        finally:
            for process in processes:
                process.kill()
                process.wait()
        outcomes = []
        for process, (out, err) in zip(processes, outputs, strict=True):
            out.seek(0)
            err.seek(0)
            outcomes.append(subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read()))
        return outcomes


def one_clear_line(done: subprocess.CompletedProcess) -> str:
    """An error answer: one line on stderr, no traceback, no warning."""
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr
    return done.stderr.strip()


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_readme_commands_work_against_a_running_platform(tmp_path: Path, tlc_dir: Path) -> None:
    env, ports = make_up_environment(tmp_path, tlc_dir)
    embedded_mirror = Path(settings.resolve(settings.default_trip_data_url())).resolve() == tlc_dir.resolve()
    if embedded_mirror:  # what a user gets with nothing configured: the embedded default, the local mirror
        del env["TAXI_TRIP_DATA_URL"]
    service, dagster = ports["TAXI_SERVICE_PORT"], ports["DAGSTER_PORT"]
    up = subprocess.run(["./scripts/up.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        first = up.stdout.splitlines()[0]
        if embedded_mirror:
            assert first == f"up: trip data from the local mirror {tlc_dir.resolve()} (the embedded default)", first
        else:
            assert first == f"up: trip data from {tlc_dir} (TAXI_TRIP_DATA_URL)", first

        (command,) = by_kind("settings")
        printed = run(command, env)
        assert printed.returncode == 0, printed.stderr
        lines = {line.split()[0]: line for line in printed.stdout.splitlines()}
        assert list(lines) == [setting.env for setting in settings.SETTINGS.values()]
        assert lines["DAGSTER_PORT"].split()[1:] == [str(dagster)]  # from the environment: no "(default)"
        assert lines["TAXI_START_MONTH"].split()[1:] == ["2021-01", "(default)"]

        (command,) = by_kind("backfill")
        backfill = run(command, env)
        assert backfill.returncode == 0, backfill.stdout + backfill.stderr
        assert backfill.stdout.startswith("backfill: trip data from ")
        assert re.search(r" after \d+ s: 4 succeeded, 0 failed, 0 canceled", backfill.stdout), backfill.stdout

        # A month that fails: make demo's loader names the reason on the terminal, not only in a log file.
        demo = run(".venv/bin/taxi-demo --months 2021-04 --drift-month 2021-03", env)
        assert demo.returncode == 1, demo.stdout + demo.stderr
        assert "trip_data_job[2021-02, 2021-03, 2021-04]: failed for 2021-04" in demo.stderr, demo.stdout + demo.stderr
        assert re.search(r"^  2021-04: .*no file at .*green_tripdata_2021-04\.parquet", demo.stderr, re.M), demo.stderr

        # README step 2 is clicks in the UI: the same runs through the webserver's API, with the quick recipe.
        webserver = DagsterClient(f"http://127.0.0.1:{dagster}")
        deploy_seed_model_through(webserver, "2021-01")

        # The rollback, a deploy_job run through the webserver: refused while one model was ever deployed, then,
        # after a second deployment, the first one deployed again; one line either way.
        (command,) = by_kind("rollback")
        refused = run(command, env)
        assert refused.returncode == 1
        first = re.fullmatch(
            r"rollback: no deployment before (taxi_duration:\w+) to roll back to", one_clear_line(refused)
        ).group(1)
        deploy_seed_model_through(webserver, "2021-02")
        rolled_back = run(command, env)
        assert rolled_back.returncode == 0 and rolled_back.stderr == "", rolled_back.stdout + rolled_back.stderr
        assert re.fullmatch(rf"deployed {first} again as taxi_duration_deployed:\w+\n", rolled_back.stdout)

        wait_http(f"http://127.0.0.1:{service}/readyz", timeout=120)
        predict, batch, feedback = (json.loads(run(port(c, service), env).stdout) for c in by_kind("curl"))
        assert set(predict) == {"id", "duration_minutes", "duration", "model_tag"}, predict
        assert predict["duration"] == predict["duration_minutes"] > 0
        assert [p["id"] for p in batch["predictions"]] == ["r1"]
        assert feedback == {"id": "r1", "recorded": True}

        # Each replay waits for its rides' clock and feedback (about a minute for 100 rides): the three run side by
        # side, as from three terminals (their ride ids are their own).
        replays = by_kind("replay")
        outcomes = side_by_side([limited(port(command, service)) for command in replays], env)
        for command, replayed in zip(replays, outcomes, strict=True):
            assert replayed.returncode == 0, command + "\n" + replayed.stderr[-3000:]
            assert replayed.stderr.startswith("replay: trip data from "), replayed.stderr[:500]
            sent = f"sent {REPLAY_LIMIT}, 2xx {REPLAY_LIMIT}, 4xx 0, 5xx 0, no answer 0"
            assert f"/predict: {sent}" in replayed.stdout and f"/feedback: {sent}" in replayed.stdout, replayed.stdout
            if "--distance-scale" in command:
                assert "(distances x1.3, pickups shifted by +3 h)" in replayed.stderr
    finally:
        down = subprocess.run(["./scripts/down.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stdout + down.stderr


def deploy_seed_model_through(webserver: DagsterClient, month: str) -> None:
    """Train the quick recipe on `month` (validated on the next loaded month) and deploy it, as runs from the UI."""
    runner = Demo(argparse.Namespace())
    runner.dagster = webserver
    runner.run_job("duration_model_job", [month], {"ops": {"duration_model": {"config": {"recipe": "seed"}}}})
    config = {"training_month": month, "recipe": "seed"}
    runner.run_job("deploy_job", run_config={"ops": {"deployed_model": {"config": config}}})


def port(command: str, service_port: int) -> str:
    return command.replace("127.0.0.1:3001", f"127.0.0.1:{service_port}")


def limited(command: str) -> str:
    """A taxi-replay line with a small --limit: the README's own limit lowered, or one added."""
    if "--limit" in command:
        return re.sub(r"--limit \d+", f"--limit {REPLAY_LIMIT}", command)
    return f"{command} --limit {REPLAY_LIMIT}"


@pytest.mark.integration
def test_the_clean_start_advice_keeps_what_set_up_needs(tmp_path: Path) -> None:
    """In a clone of the repository with a platform's leftovers: the README's clean-start command deletes them, keeps
    the tracked dagster_home/dagster.yaml, and set-up's instance initialisation then succeeds."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    (clone / ".venv").symlink_to(REPO_ROOT / ".venv")
    for leftover in ("data/warehouse.duckdb", "data/logs/dagster-daemon.log", "dagster_home/history/runs.db"):
        (clone / leftover).parent.mkdir(parents=True, exist_ok=True)
        (clone / leftover).write_text("left over")
    (clone / "dagster_home" / ".migrated-dagster-0.0").touch()
    (command,) = by_kind("clean-start")
    cleaned = subprocess.run(["bash", "-c", command], cwd=clone, capture_output=True, text=True, timeout=60)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (clone / "data").exists()
    assert sorted(path.name for path in (clone / "dagster_home").iterdir()) == ["dagster.yaml"]
    env = {name: value for name, value in os.environ.items() if name != "DAGSTER_HOME"}
    init = subprocess.run(["./scripts/init_dagster_home.sh"], cwd=clone, env=env, capture_output=True, text=True)
    assert init.returncode == 0, init.stdout + init.stderr
    assert (clone / "dagster_home" / "history" / "runs.db").is_file()
