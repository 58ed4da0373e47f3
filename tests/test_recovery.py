"""Nothing gets stuck: a run killed while it holds the DuckDB slot (kill -9, OOM kill, power cut) frees it without
anyone's help, a run waiting for the slot stops on SIGTERM, an ingest that failed is requested again until it
lands, and an ingest never waits for a run slot behind runs without a priority. Real daemon, real run workers."""

import contextlib
import datetime as dt
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import duckdb
import psutil
import pytest
import requests

from taxi_assets import settings
from taxi_assets.core import predlog
from taxi_assets.execution import (
    SHARED_SLOTS_TAG,
    WAIT_REPORT_SECONDS,
    WORKER_HOST_TAG,
    WORKER_PID_TAG,
    WORKER_STARTED_TAG,
    worker_process,
)
from taxi_assets.trip_files import DOWNLOAD_TIMEOUT_SECONDS
from tests.support.dagster_processes import (
    DAGSTER,
    backfill_from_cli,
    launch_run,
    prepare_dagster_home,
    running_daemon,
)
from tests.support.platform import MANIFEST_ROWS, REPO_ROOT, wait_until

pytestmark = pytest.mark.e2e

RECOVERY_LIMIT_SECONDS = 120
# A stalled download's trickle (StallingSource): a dozen bytes within the download's read timeout.
TRICKLE_SECONDS = DOWNLOAD_TIMEOUT_SECONDS / 12
STALL_LIMIT_SECONDS = 600.0


class StallingSource:
    """TLC files over HTTP; while `stalling`, a download stops after its first kilobyte until released, so the run
    fetching it sits inside raw_trips, holding the DuckDB slot, for as long as the test wants.

    A stalled download still gets a byte every `TRICKLE_SECONDS`: silent, it failed on its own once the download's
    read timeout passed, freeing the slot. On the project's CI a test reached that point: a holder that was meant to
    be alive had already given its slot to the run waiting for it."""

    def __init__(self, tlc_dir: Path) -> None:
        self.stalling = threading.Event()
        self.stalled = threading.Event()
        self.release = threading.Event()
        source = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = (tlc_dir / Path(self.path).name).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if source.stalling.is_set():
                    self.wfile.write(data[:1024])
                    self.wfile.flush()
                    source.stalled.set()
                    sent, give_up_at = 1024, time.monotonic() + STALL_LIMIT_SECONDS
                    while time.monotonic() < give_up_at and not source.release.wait(TRICKLE_SECONDS):
                        try:
                            self.wfile.write(data[sent : sent + 1])
                            self.wfile.flush()
                        except OSError:  # the run was killed
                            return
                        sent += 1
                    return
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/green_tripdata_{{month}}.parquet"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def source(platform_env: Path, tlc_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StallingSource]:
    stalling = StallingSource(tlc_dir)
    monkeypatch.setenv("TAXI_TRIP_DATA_URL", stalling.url)
    yield stalling
    stalling.close()


def run_of(instance: dg.DagsterInstance, month: str) -> dg.DagsterRun | None:
    runs = [run for run in instance.get_runs() if run.tags.get("dagster/partition") == month]
    return runs[0] if runs else None


def slot_holder(instance: dg.DagsterInstance) -> str | None:
    claimed = instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots
    return claimed[0].run_id if claimed else None


def waiting_runs(instance: dg.DagsterInstance) -> set[str]:
    """Runs with a step waiting for the DuckDB slot (the holder's own claimed step is not pending)."""
    info = instance.event_log_storage.get_concurrency_info("duckdb")
    return {step.run_id for step in info.pending_steps if step.assigned_timestamp is None}


def worker(instance: dg.DagsterInstance, run_id: str) -> psutil.Process:
    pid, _ = wait_until(lambda: worker_process(instance, run_id), 60, f"worker of {run_id}")
    return psutil.Process(pid)


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_forked_from_the_warm_process(run_worker: psutil.Process) -> None:
    """The run's process was forked from the warm process of the daemon's code server, not started as a new
    interpreter (taxi_assets.execution.fork_run_workers_from_a_warm_process)."""
    warm = run_worker.parent()
    assert "from multiprocessing.forkserver import main" in " ".join(warm.cmdline())
    assert warm.parent().cmdline()[1:5] == ["-m", "dagster", "api", "grpc"]


def loaded_months(platform_env: Path) -> dict[str, int]:
    with duckdb.connect(str(platform_env / "warehouse.duckdb"), read_only=True) as conn:
        return dict(conn.execute("SELECT month, count(*) FROM raw_trips GROUP BY month").fetchall())


def test_a_killed_run_frees_the_slot_and_a_run_waiting_for_it_stops_on_sigterm(
    platform_env: Path, source: StallingSource
) -> None:
    dagster_home = platform_env / "dagster_home"
    source.stalling.set()
    with running_daemon(dagster_home, platform_env / "daemon.log"):
        backfill_from_cli(dagster_home, "trip_data_job", ["2021-01", "2021-02", "2021-03"])
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            # One run downloads inside raw_trips, holding the slot; the next waits for it, and the third is queued
            # (runs without a priority take two of the three run slots).
            assert source.stalled.wait(120)
            holder = wait_until(lambda: slot_holder(instance), 30, "slot claimed")
            (stopped,) = wait_until(lambda: waiting_runs(instance), 60, "a run waiting")

            # A waiting run sleeps (Dagster's own loop spins a core) and stops within seconds of a SIGTERM.
            waiter = worker(instance, stopped)
            assert_forked_from_the_warm_process(waiter)
            cpu_before = sum(waiter.cpu_times()[:2])
            time.sleep(3)
            # Spinning, it took 0.36 s of CPU in 2 s on a loaded machine; sleeping, about 0.01 s.
            assert sum(waiter.cpu_times()[:2]) - cpu_before < 0.15, "a run waiting for the slot burns CPU"
            waiter.send_signal(signal.SIGTERM)
            signalled_at = time.monotonic()
            wait_until(lambda: gone(waiter), 15, "waiting run's worker exits after SIGTERM")
            stopped_after = time.monotonic() - signalled_at
            print(f"\nSIGTERM of a run waiting for the slot -> its worker exits {stopped_after:.1f} s later")
            assert instance.get_run_by_id(stopped).status == dg.DagsterRunStatus.FAILURE
            assert slot_holder(instance) == holder
            # Its run slot freed, the queued run starts and waits in turn.
            (survivor,) = wait_until(lambda: waiting_runs(instance) - {stopped}, 60, "the queued run waiting")
            # SIGTERM above and kill -9 below work on processes forked from the warm process.
            for run_id in (holder, survivor):
                assert_forked_from_the_warm_process(worker(instance, run_id))

            # kill -9 of the holder: the remaining run gets the slot and loads its month, nobody intervening.
            source.stalling.clear()
            killed_at = time.monotonic()
            worker(instance, holder).kill()
            source.release.set()
            wait_until(
                lambda: instance.get_run_by_id(survivor).status == dg.DagsterRunStatus.SUCCESS,
                RECOVERY_LIMIT_SECONDS,
                "the next run succeeds after the slot holder was killed",
            )
            recovery = time.monotonic() - killed_at
            print(f"\nkill -9 of the run holding the DuckDB slot -> next run succeeded after {recovery:.1f} s")
            assert instance.get_run_by_id(holder).status == dg.DagsterRunStatus.FAILURE
            assert slot_holder(instance) is None
            survivor_month = instance.get_run_by_id(survivor).tags["dagster/partition"]
    assert loaded_months(platform_env) == {survivor_month: MANIFEST_ROWS[survivor_month]}


def test_after_a_power_cut_the_restarted_daemon_fails_the_dead_run_and_frees_its_slot(
    platform_env: Path, source: StallingSource
) -> None:
    dagster_home = platform_env / "dagster_home"
    prepare_dagster_home(dagster_home)
    source.stalling.set()
    with running_daemon(dagster_home, platform_env / "daemon.log") as daemon:
        launch_run(dagster_home, "trip_data_job", "2021-01")
        assert source.stalled.wait(120)
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            dead = wait_until(lambda: slot_holder(instance), 30, "slot claimed")
            worker(instance, dead)
        # Every process at once, as a power cut would: daemon, code server, run worker.
        processes = [psutil.Process(daemon.pid), *psutil.Process(daemon.pid).children(recursive=True)]
        for process in processes:
            process.kill()
        psutil.wait_procs(processes, timeout=10)
    source.stalling.clear()
    source.release.set()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        # What the restarted daemon finds: the run still STARTED, its slot claimed.
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.STARTED and slot_holder(instance) == dead

    with running_daemon(dagster_home, platform_env / "daemon-restarted.log"):
        restarted_at = time.monotonic()
        launch_run(dagster_home, "trip_data_job", "2021-02")
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            wait_until(
                lambda: (run := run_of(instance, "2021-02")) and run.status == dg.DagsterRunStatus.SUCCESS,
                RECOVERY_LIMIT_SECONDS,
                "a run after the restart succeeds",
            )
            recovery = time.monotonic() - restarted_at
            print(f"\npower cut while a run held the DuckDB slot -> next run succeeded {recovery:.1f} s after restart")
            failure = instance.get_run_by_id(dead)
            assert failure.status == dg.DagsterRunStatus.FAILURE
            messages = [record.message for record in instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)]
            assert any("is gone" in message for message in messages), messages
    assert loaded_months(platform_env) == {"2021-02": MANIFEST_ROWS["2021-02"]}


# Another process holding the warehouse open for writing, as a notebook or a second tool would.
HOLD_WAREHOUSE = """
import duckdb, sys
conn = duckdb.connect(sys.argv[1])
conn.execute("CREATE TABLE IF NOT EXISTS held (x INTEGER)")
print("held", flush=True)
sys.stdin.read()
"""


def pushed_waiting(pushgateway: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{pushgateway}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "taxi_ingest_records_waiting" and sample.labels.get("job") == "taxi_ingest":
                return sample.value
    return None


def sensor_ticks(instance: dg.DagsterInstance) -> list:
    from dagster._core.definitions.run_request import InstigatorType

    return [
        tick
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id)
    ]


def finished_runs(instance: dg.DagsterInstance, count: int) -> list[dg.DagsterRun] | None:
    runs = instance.get_runs()
    return runs if len(runs) == count and all(run.is_finished for run in runs) else None


def ingested(instance: dg.DagsterInstance, day: str) -> bool:
    return bool(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("prediction_logs"), asset_partitions=[day]), limit=1
        ).records
    )


def test_ingests_that_failed_on_a_locked_warehouse_are_requested_again_until_they_land(
    platform_env: Path, pushgateway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAXI_PUSHGATEWAY_URL", pushgateway)
    now = dt.datetime.now(dt.timezone.utc)
    # A day old enough to be sealed in the store cursor at once, and today.
    days = {(now - dt.timedelta(days=3)).date().isoformat(): 3, now.date().isoformat(): 2}
    ride = {"PULocationID": 74, "DOLocationID": 42, "trip_distance": 1.7, "pickup_datetime": "2022-02-03T08:15:00"}
    writer = predlog.open_writer(str(platform_env / "prediction_logs"), str(platform_env / "spool"))
    for day, count in days.items():
        records = [predlog.prediction_record(ride, 12.0, "m:v1", ts=f"{day}T12:00:0{i}+00:00") for i in range(count)]
        assert writer.append(records)
    writer.close()
    assert settings.load().predlog_uri == str(platform_env / "prediction_logs")

    dagster_home = platform_env / "dagster_home"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WAREHOUSE, str(platform_env / "warehouse.duckdb")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    try:
        with (
            running_daemon(dagster_home, platform_env / "daemon.log"),
            dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        ):
            # The first tick's runs fail on the lock; the backlog still counts every record.
            failed = wait_until(lambda: finished_runs(instance, 2), 120, "the first two ingests end")
            assert {run.tags["dagster/partition"] for run in failed} == set(days)
            assert all(run.status == dg.DagsterRunStatus.FAILURE for run in failed)
            assert not any(ingested(instance, day) for day in days)
            assert wait_until(lambda: pushed_waiting(pushgateway) == 5, 60, "5 records waiting pushed")

            holder.stdin.close()
            holder.wait(10)
            released_at = time.monotonic()
            wait_until(lambda: all(ingested(instance, day) for day in days), 150, "both days ingested")
            print(f"\nwarehouse released -> both days ingested {time.monotonic() - released_at:.1f} s later")
            retries = [run for run in instance.get_runs() if "/retry-" in run.tags.get("dagster/run_key", "")]
            assert {run.tags["dagster/partition"] for run in retries} == set(days)
            # The sensor never opens DuckDB: no tick failed while another process held it.
            assert not [tick.error for tick in sensor_ticks(instance) if tick.status.value == "FAILURE"]
    finally:
        if holder.poll() is None:
            holder.kill()
    with duckdb.connect(str(platform_env / "warehouse.duckdb"), read_only=True) as conn:
        per_day = dict(conn.execute("SELECT day, count(*) FROM prediction_log GROUP BY day").fetchall())
    assert per_day == days


# What a user types in a terminal to load a month, no daemon needed.
CLI_COMMANDS = {
    "dagster asset materialize": ["asset", "materialize", "-m", "taxi_assets.definitions", "--select", "raw_trips"],
    "dagster job execute": ["job", "execute", "-m", "taxi_assets.definitions", "-j", "trip_data_job"],
}
CLI_RETRY = "dagster asset materialize"
# The same from Python (a script, a notebook, a test): Dagster executes these runs with its own in-process
# executor, whatever executor the definitions name.
IN_PROCESS = """
import sys
import dagster as dg
from taxi_assets.definitions import defs
from taxi_assets.defs.trip_data.assets import trip_months
api, month = sys.argv[1:]
definitions = defs()
with dg.DagsterInstance.get() as instance:
    if api == "dg.materialize":
        result = dg.materialize(
            [trip_months], selection=["raw_trips"], partition_key=month, instance=instance,
            resources=definitions.resources,
        )
    else:
        job = definitions.resolve_job_def("trip_data_job")
        result = job.execute_in_process(instance=instance, partition_key=month)
sys.exit(0 if result.success else 1)
"""


def start_run(
    dagster_home: Path, month: str, log: Path, command: str = "dagster asset materialize"
) -> subprocess.Popen:
    """A process loading `month` as `command` does: a CLI command, or `dg.materialize` / `execute_in_process`."""
    if command in CLI_COMMANDS:
        partition = (
            ["--partition", month] if "asset" in command else ["--tags", json.dumps({"dagster/partition": month})]
        )
        args = [str(DAGSTER), *CLI_COMMANDS[command], *partition]
    else:
        args = [sys.executable, "-c", IN_PROCESS, command, month]
    with open(log, "ab") as output:
        return subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def run_of_process(instance: dg.DagsterInstance, process: subprocess.Popen) -> dg.DagsterRun | None:
    """The run `process` executes, once it has recorded itself as the run's worker."""
    for run in instance.get_runs():
        if run.tags.get(WORKER_PID_TAG) == str(process.pid):
            return run
    return None


def holding_run(instance: dg.DagsterInstance, process: subprocess.Popen, source: StallingSource) -> dg.DagsterRun:
    """The run of `process` stalled inside raw_trips, holding the DuckDB slot; its tags say where it lives."""
    assert source.stalled.wait(120)
    run = wait_until(lambda: run_of_process(instance, process), 30, "the run tagged with its process")
    wait_until(lambda: slot_holder(instance) == run.run_id, 30, "the run holds the slot")
    assert run.tags[WORKER_HOST_TAG] == socket.gethostname()
    assert abs(float(run.tags[WORKER_STARTED_TAG]) - psutil.Process(process.pid).create_time()) < 0.01
    return run


def failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [record.message for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]


@pytest.mark.parametrize(
    ("command", "daemon"),
    [
        ("dagster asset materialize", "without a daemon"),
        ("dagster asset materialize", "with the daemon running"),
        ("dagster job execute", "without a daemon"),
        # Dagster's own in-process executor, which claims the slot as the project's does.
        ("dg.materialize", "without a daemon"),
        ("execute_in_process", "with the daemon running"),
    ],
)
def test_a_killed_run_holding_the_slot_does_not_block_the_cli_retry(
    platform_env: Path, source: StallingSource, command: str, daemon: str
) -> None:
    dagster_home = platform_env / "dagster_home"
    prepare_dagster_home(dagster_home)
    log = platform_env / "cli.log"
    with contextlib.ExitStack() as stack:
        if daemon == "with the daemon running":
            stack.enter_context(running_daemon(dagster_home, platform_env / "daemon.log"))
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(dagster_home)))
        source.stalling.set()
        first = start_run(dagster_home, "2021-01", log, command)
        dead = holding_run(instance, first, source)
        first.kill()  # kill -9 while it holds the warehouse: a cron job's timeout, an OOM kill, a closed terminal
        first.wait()
        killed_at = time.monotonic()
        source.stalling.clear()
        source.release.set()
        if daemon == "with the daemon running":
            # Run monitoring fails it and frees its slot, no retry needed.
            wait_until(lambda: slot_holder(instance) is None, RECOVERY_LIMIT_SECONDS, "the daemon frees the slot")
            freed = time.monotonic() - killed_at
            print(f"\nkill -9 of `{command}` holding the slot -> the daemon freed it {freed:.1f} s later")
            assert any("is gone" in message for message in failure_messages(instance, dead.run_id))
        # Retried the way a user at a terminal would, whatever the killed run was.
        retry = start_run(dagster_home, "2021-01", log, command if command in CLI_COMMANDS else CLI_RETRY)
        assert retry.wait(RECOVERY_LIMIT_SECONDS) == 0, log.read_text()[-3000:]
        recovery = time.monotonic() - killed_at
        print(f"\nkill -9 of `{command}` holding the slot ({daemon}) -> the CLI retry succeeded {recovery:.1f} s later")
        assert recovery < RECOVERY_LIMIT_SECONDS
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        (why,) = failure_messages(instance, dead.run_id)
        assert f"worker process {first.pid}" in why and "is gone" in why, why
        assert slot_holder(instance) is None
    assert loaded_months(platform_env) == {"2021-01": MANIFEST_ROWS["2021-01"]}


@pytest.mark.parametrize("command", ["dagster asset materialize", "dg.materialize"])
def test_a_live_holder_keeps_its_slot_and_the_waiting_run_says_who_holds_it(
    platform_env: Path, source: StallingSource, command: str
) -> None:
    dagster_home = platform_env / "dagster_home"
    prepare_dagster_home(dagster_home)
    log = platform_env / "cli.log"
    with (
        running_daemon(dagster_home, platform_env / "daemon.log"),
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
    ):
        source.stalling.set()
        holder_process = start_run(dagster_home, "2021-01", log, command)
        holder = holding_run(instance, holder_process, source)
        waiter_process = start_run(dagster_home, "2021-02", log)
        waiter = wait_until(lambda: run_of_process(instance, waiter_process), 60, "the waiting run tagged")
        wait_until(lambda: waiter.run_id in waiting_runs(instance), 30, "the second run waits for the slot")
        blocked_at = time.monotonic()

        def says_who_holds_it() -> list[str]:
            return [
                record.message
                for record in instance.all_logs(waiter.run_id)
                if record.message and f"held by run {holder.run_id}" in record.message
            ]

        (first_word,) = wait_until(says_who_holds_it, 10, "the waiting run names the holder")
        print(
            f"\nthe waiting run named the holder {time.monotonic() - blocked_at:.1f} s after it blocked: {first_word}"
        )
        assert "step trip_months" in first_word, first_word
        assert "[2021-01]" in first_word and " since " in first_word and "alive" in first_word, first_word
        assert f"python -m taxi_assets.execution release {holder.run_id}" in first_word, first_word
        # A long but healthy run: two run-monitoring polls and a dozen holder checks later it still holds the slot.
        time.sleep(WAIT_REPORT_SECONDS + 5)
        assert instance.get_run_by_id(holder.run_id).status == dg.DagsterRunStatus.STARTED
        assert slot_holder(instance) == holder.run_id and holder_process.poll() is None
        assert len(says_who_holds_it()) >= 2, "the waiting run says it again periodically"

        # On another machine (by its tag), even a pid that is gone here is that machine's to check.
        instance.add_run_tags(holder.run_id, {WORKER_HOST_TAG: "another-host"})
        # A check that read the run before the new tag would find its pid gone after the kill (seen once on three
        # test workers: run monitoring failed it). Run monitoring's polls follow one another: once two more have
        # begun, every check that could have read the old tag is over, the waiting run's (every 2 s) too.
        daemon_log = platform_env / "daemon.log"
        polls = daemon_log.read_text().count(f"Checking run {holder.run_id}")
        wait_until(
            lambda: daemon_log.read_text().count(f"Checking run {holder.run_id}") >= polls + 2,
            60,
            "two run-monitoring polls since the new tag",
        )
        holder_process.kill()
        holder_process.wait()
        time.sleep(15)  # more than a run-monitoring poll and several holder checks
        assert instance.get_run_by_id(holder.run_id).status == dg.DagsterRunStatus.STARTED
        assert slot_holder(instance) == holder.run_id

        # The release command will not touch another machine's run either.
        release = [sys.executable, "-m", "taxi_assets.execution", "release", holder.run_id]
        env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
        refused = subprocess.run(release, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "only that host can check it" in refused.stderr, refused

        # This machine's again: the waiting run sees its holder is gone, fails it and takes the slot.
        source.stalling.clear()
        source.release.set()
        instance.add_run_tags(holder.run_id, {WORKER_HOST_TAG: socket.gethostname()})
        assert waiter_process.wait(RECOVERY_LIMIT_SECONDS) == 0, log.read_text()[-3000:]
        assert instance.get_run_by_id(holder.run_id).status == dg.DagsterRunStatus.FAILURE
    assert loaded_months(platform_env) == {"2021-02": MANIFEST_ROWS["2021-02"]}


MONTHS = ("2021-01", "2021-02", "2021-03")


def step_started(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """When the run's first step started: with op granularity, once it had its pool slot."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START, limit=1).records
    return records[0].event_log_entry.timestamp if records else None


def test_runs_without_a_priority_leave_a_run_slot_to_an_ingest_which_then_takes_the_warehouse_first(
    platform_env: Path, source: StallingSource
) -> None:
    """Three runs queue for the warehouse, then an ingest: runs without a priority take two of the three run slots
    (the run queue tags them, the instance limits the tag), so the ingest starts beside them at once instead of
    waiting for one of them to end, and its priority gives it the warehouse before the run that was waiting already.
    """
    from taxi_assets.defs.partitions import prediction_days

    dagster_home = platform_env / "dagster_home"
    source.stalling.set()
    with (
        running_daemon(dagster_home, platform_env / "daemon.log"),
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
    ):

        def runs(status: dg.DagsterRunStatus, job: str = "trip_data_job") -> list[dg.DagsterRun]:
            return [run for run in instance.get_runs(dg.RunsFilter(statuses=[status])) if run.job_name == job]

        # Launched side by side: the stalled download must not time out while the commands start one by one.
        with ThreadPoolExecutor(max_workers=3) as launches:
            list(launches.map(lambda month: launch_run(dagster_home, "trip_data_job", month), MONTHS))
        assert source.stalled.wait(120)
        holder = wait_until(lambda: slot_holder(instance), 30, "slot claimed")

        def two_started_one_queued() -> bool:
            started, queued = runs(dg.DagsterRunStatus.STARTED), runs(dg.DagsterRunStatus.QUEUED)
            return len(started) == 2 and len(queued) == 1

        wait_until(two_started_one_queued, 60, "two runs started, one queued")
        time.sleep(3)  # three of the queue's intervals: the third stays queued
        assert two_started_one_queued()
        (waiting,) = {run.run_id for run in runs(dg.DagsterRunStatus.STARTED)} - {holder}
        (queued,) = runs(dg.DagsterRunStatus.QUEUED)

        launch_run(dagster_home, "online_monitoring_job", prediction_days.get_last_partition_key())
        (ingest,) = wait_until(
            lambda: runs(dg.DagsterRunStatus.STARTED, "online_monitoring_job"), 60, "the ingest started"
        )
        assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.QUEUED

        assert SHARED_SLOTS_TAG not in instance.get_run_by_id(ingest.run_id).tags
        assert all(SHARED_SLOTS_TAG in run.tags for run in runs(dg.DagsterRunStatus.STARTED))
        # The holder ends (its download cut short); the ingest, waiting for the warehouse after the other run,
        # takes it first.
        source.stalling.clear()
        source.release.set()
        wait_until(lambda: step_started(instance, ingest.run_id), 60, "the ingest has the warehouse")
        wait_until(lambda: step_started(instance, waiting), 60, "the waiting run has it")
        assert step_started(instance, ingest.run_id) < step_started(instance, waiting)
        wait_until(
            lambda: all(run.is_finished for run in instance.get_runs()), RECOVERY_LIMIT_SECONDS, "every run ended"
        )
