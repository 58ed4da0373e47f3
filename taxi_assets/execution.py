"""How the platform's runs execute and how the daemon watches them, so that no run can wedge the warehouse.

This is the project's Dagster compatibility module: the only code that uses Dagster's private API, written for
Dagster 1.13.27 exactly (pinned in pyproject.toml); tests/test_compat.py fails when the upstream code it copies or
works around changes, or when another Dagster is installed.

* `executor`: Dagster's in-process executor (one process per run, steps one after the other), except while a step
  waits for a slot of a pool (`duckdb`). Dagster 1.13 then polls without ever sleeping (its
  `interval_to_next_pending_claim_check` is `min(0, …)`; dagster-io/dagster#20367 proposed the fix and was closed
  unmerged), so a blocked run burns a core, and it only looks at a SIGTERM/SIGINT once the step has its slot: a run
  waiting behind a wedged slot could not even be stopped. Here a blocked step sleeps until its next claim attempt,
  in slices of at most `INTERRUPT_CHECK_SECONDS`, and a termination received meanwhile ends the run at once. Its
  attempts come every `CLAIM_RETRY_SECONDS`, not after Dagster's growing back-off, so the next run takes the
  warehouse within a fraction of a second. And a blocked step whose pool has a free slot that nobody was given is
  given it: Dagster 1.13 registers a waiting step in two statements (`has_unassigned_slots`, then `add_pending_step`
  with `should_assign` from the first), and hands a freed slot to the waiting steps only when it is freed
  (`free_concurrency_slot_for_step` → `assign_pending_steps`). A slot freed between the two statements is given to
  no one, and the step waits forever beside a free slot: seen in a 10-month backfill whose third run waited 11
  minutes with the `duckdb` slot free and the other two runs finished. A step that has closed the warehouse gives
  its slot back before it ends (`release_pool_slot`; trip_months, duration_model, model_challenge and batch_drift
  do): a backfill's next run loads its months while this one records its events, an ingest while a model trains.
  A step that computes at length between reading the warehouse and writing to it lends its slot meanwhile and
  waits for it again in the queue (`without_pool_slot`; reference_profile, batch_predictions and batch_drift do):
  an ingest of the prediction log waited up to a minute behind a profile's calibration.
* The slot itself: Dagster 1.13 claims a pool slot by selecting a free slot row `FOR UPDATE SKIP LOCKED`, then
  updating that row by its id alone. SQLite, the local instance's storage, has no row locks: two steps of different
  runs claiming the one free `duckdb` slot in the same instant both select it, both update it and both run, and
  the second DuckDB writer fails on the file's lock (seen: a 10-month backfill whose three runs were launched
  together lost a partition). `_claim_free_slot` takes the row only while it is still free, in the same one
  statement, so the slot rows are the semaphore Dagster means them to be, on SQLite as on PostgreSQL.
* `LocalRunLauncher` (named in dagster.yaml): Dagster's default launcher, whose run workers are processes on the
  daemon's machine, plus the health check that run monitoring needs to fail a run whose worker died (kill -9, OOM
  kill, power cut). The default launcher has none: the code server that started a worker notices its death only
  while that code server lives, so after a restart such a run stayed STARTED, and its pool slot claimed, forever.
  Once the run has failed, run monitoring's `free_slots_after_run_end_seconds` gives its slot back.
* Every run the executor executes, whoever started it (the daemon, `dagster asset materialize` or `dagster job
  execute` in a terminal, a cron job), records where it lives in its tags: host, pid and the process's start time.
  So run monitoring, which asks the launcher about every started run, can tell for runs started from a terminal
  too (Dagster's own launcher knows only the processes it started, and only while it lives), and a step
  waiting for a pool slot checks the holder itself: a holder on the same machine whose process is gone is failed,
  with an event saying why, and its slots are freed, so a retry from the command line succeeds with no daemon
  running. A waiting step says which run holds the slot, since when, and the command that frees it
  (`python -m taxi_assets.execution release <run id>`), at once and every `WAIT_REPORT_SECONDS`.
  A holder on another machine is left to that machine's run monitoring: only there can its process be seen.
* Runs executed by `dg.materialize` or `execute_in_process` (a test, a notebook, a script) ignore the project's
  executor: Dagster always executes them with its own `InProcessExecutor`, which claims pool slots all the same
  (`inprocess_execution_iterator` wraps the steps in an `InstanceConcurrencyContext`) but tags nothing, so such a
  run killed while it held the `duckdb` slot kept it forever (seen: the run STARTED and its slot claimed after
  kill -9, nobody freeing it). The warehouse resource, which every `duckdb` step uses, records the run's process
  as it is set up (`record_worker`), before any step claims its slot, so the same checks free it. A run whose
  process is not recorded (no warehouse, or a multiprocess executor's step processes) is never freed while alive:
  `worker_health` cannot tell, and leaves it running.
* Run workers forked from a warm process (`fork_run_workers_from_a_warm_process`, at import): the daemon launches
  each queued run through its code server (`dagster api grpc`), whose `StartRun` starts the run's process with a
  `spawn` context: a new interpreter that imports Dagster and the code location and builds the definitions again,
  2.2-3.5 s from launch to the run's first event, on the critical path of every run (a backfill's first run, each
  sensor ingest). Here a code server's runs are forked from a `forkserver` process it starts beside itself, which
  has imported `taxi_assets.run_worker` (the definitions, built once): launch to running in about 0.4 s. The run's
  process is the same in every other respect (its own pid, Dagster's signal handling and termination event, the
  same events), and its definitions are the code server's: the ones the daemon's sensors and automation see. A code
  change reaches runs when the code server is replaced: the daemon replaces its own every minute (Dagster's
  `RELOAD_WORKSPACE_INTERVAL`), the webserver's *Reload*; each replacement costs the warm process's start, about 2 s
  of CPU. The warm process exits with its code server. The webserver's code server, which launches no runs with the
  queued run coordinator, starts it only with its first run.
* `QueuedRunCoordinator` (named in dagster.yaml): Dagster's run queue, plus a backfill daemon that looks for new
  backfills every `backfill_interval_seconds` instead of every 30 s. Dagster 1.13's backfill loop sleeps a fixed
  `DEFAULT_DAEMON_INTERVAL_SECONDS` (30, `dagster._daemon.controller`) between iterations, and no instance setting
  changes it (`backfills:` takes `use_threads`, `num_workers`, `num_submit_workers` only): a backfill launched from
  the UI waited up to 30 s before its first run was even queued. The daemon builds the run coordinator before it
  starts its daemons' threads, so the coordinator shortens the backfill daemon's waits there: the loop is Dagster's
  own, given a shutdown event whose waits last at most the interval (it waits on nothing else). The queue also tags
  every run submitted without a priority above 0 `taxi/shared_run_slots`, which dagster.yaml limits to all run
  slots but one: Dagster's priorities order the queue but reserve nothing, so three runs waiting for the warehouse
  held all three slots while the online ingest waited for one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import multiprocessing
import multiprocessing.forkserver
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator

import dagster as dg
import psutil
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.context.system import PlanExecutionContext, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import inner_plan_execution_iterator
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.run_coordinator import QueuedRunCoordinator as DagsterQueuedRunCoordinator
from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_select
from dagster._core.storage.tags import PRIORITY_TAG
from dagster._daemon.backfill import execute_backfill_iteration_loop
from dagster._daemon.daemon import BackfillDaemon
from dagster._grpc.server import DagsterApiServer
from dagster._utils.concurrency import ConcurrencySlotStatus
from dagster._utils.interrupts import check_captured_interrupt

DAGSTER_VERSION = "1.13.27"
# How long a SIGTERM can wait while a step waits for its pool slot.
INTERRUPT_CHECK_SECONDS = 0.5
# How long a blocked step waits before it asks for its slot again. Dagster backs off from 1 s by 10 % per attempt
# (up to 15 s), so the run behind a 10-s holder found the slot freed 1-3 s late, and a backfill's ranged runs hand
# the warehouse over to one another twice. An attempt is a few reads of the instance's storage.
CLAIM_RETRY_SECONDS = 0.5
# Where a run's process lives, tagged by the executor (and the host by the launcher, before the process starts):
# only that machine can tell whether the process still lives, and a pid is that process only with its start time.
WORKER_HOST_TAG = "taxi/worker_host"
WORKER_PID_TAG = "taxi/worker_pid"
WORKER_STARTED_TAG = "taxi/worker_started"
# How often a step waiting for a pool slot looks whether the holder's process still lives, and says who holds it.
HOLDER_CHECK_SECONDS = 2.0
WAIT_REPORT_SECONDS = 20.0
RELEASE_COMMAND = ".venv/bin/python -m taxi_assets.execution release"
# The tag of every run without a priority above 0 (`QueuedRunCoordinator.submit_run`, module docstring).
SHARED_SLOTS_TAG = "taxi/shared_run_slots"
# How often the daemon looks for new backfills: a backfill clicked in the UI starts within this (plus an iteration).
BACKFILL_INTERVAL_SECONDS = 0.5
# psutil derives a process's start time from the boot time; the wall clock may have been adjusted since.
_CLOCK_TOLERANCE_SECONDS = 5.0


def worker_tags() -> dict[str, str]:
    """This process as the worker of the run it executes: host, pid and start time (unix seconds)."""
    pid = os.getpid()
    started = psutil.Process(pid).create_time()
    return {WORKER_HOST_TAG: socket.gethostname(), WORKER_PID_TAG: str(pid), WORKER_STARTED_TAG: f"{started:.3f}"}


def worker_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of a run's worker process and a time it had started by (unix time): from the executor's tags, else
    (a run executed before they existed) from the engine event where the executor reported its pid."""
    run = instance.get_run_by_id(run_id)
    if run is not None and WORKER_PID_TAG in run.tags:
        return int(run.tags[WORKER_PID_TAG]), float(run.tags[WORKER_STARTED_TAG])
    return _reported_process(instance, run_id)


def _reported_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The process the run's executor reported as executing it (its first engine event with a pid: the in-process
    executor's "Executing steps in process", a multiprocess executor's parent process), and when it said so."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        pid = record.dagster_event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value), record.timestamp
    return None


def record_worker(instance: dg.DagsterInstance | None, run: dg.DagsterRun | None) -> bool:
    """Tag `run` with this process as its worker (`worker_tags`) if this process executes its steps and its tags
    do not say so yet; whether it tagged. For the runs the project's `executor` does not execute, which tag
    nothing: `dg.materialize` and `execute_in_process` always use Dagster's own in-process executor, which claims
    pool slots all the same. Called by the warehouse resource as it is set up for a run: before the run's first
    `duckdb` step claims its slot, since Dagster sets a run's resources up before it executes any step.

    Only the process the executor reported executing the run is tagged: a step process of another executor (a
    multiprocess executor's child) is not the one holding the run's slots, and once it ended the run would look
    dead while its parent goes on. Such a run stays untagged, and a run without tags is never freed while it runs.
    """
    if instance is None or run is None:  # a resource used outside a run (a test, a notebook)
        return False
    recorded = instance.get_run_by_id(run.run_id)  # its tags now: the executor may have added them since
    tags = worker_tags()
    if recorded is None or all(recorded.tags.get(name) == value for name, value in tags.items()):
        return False
    reported = _reported_process(instance, run.run_id)
    if reported is None or reported[0] != os.getpid():
        return False
    instance.add_run_tags(run.run_id, tags)
    return True


@dataclasses.dataclass(frozen=True)
class WorkerHealth:
    """Whether a run's process lives, as this machine can tell: `alive` is None when it cannot (another host, or
    a process not reported yet)."""

    alive: bool | None
    description: str


def worker_health(instance: dg.DagsterInstance, run: dg.DagsterRun) -> WorkerHealth:
    host = run.tags.get(WORKER_HOST_TAG)
    if host is None:
        return WorkerHealth(None, "no worker host recorded (executed by another executor)")
    if host != socket.gethostname():
        return WorkerHealth(None, f"on host {host}: only that host can check it")
    worker = worker_process(instance, run.run_id)
    if worker is None:
        return WorkerHealth(None, f"worker process on {host} not reported yet")
    pid, started = worker
    try:
        process = psutil.Process(pid)
        # A pid can be reused, after a reboot above all: the worker had started by the time it was recorded.
        alive = process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= started + _CLOCK_TOLERANCE_SECONDS
    except psutil.NoSuchProcess:
        alive = False
    except psutil.AccessDenied:  # another user's process holds the pid: ours is gone
        alive = False
    if alive:
        return WorkerHealth(True, f"worker process {pid} on {host} is alive")
    return WorkerHealth(False, f"worker process {pid} of this run on {host} is gone (killed?)")


def release_run(instance: dg.DagsterInstance, run_id: str, why: str) -> bool:
    """Fail `run_id` (unless it has finished) with `why` as its failure event, and free its pool slots; whether it
    was failed or held a slot. Its process must be gone: a live one would go on writing."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return False
    storage = instance.event_log_storage
    held = run_id in storage.get_concurrency_run_ids()
    failed = not run.is_finished
    if failed:
        instance.report_run_failed(run, why)
    if held:
        storage.free_concurrency_slots_for_run(run_id)
    return failed or held


# Dagster's own claim of a slot row, kept for tests/test_compat.py to compare with upstream and to show its race.
DAGSTER_CLAIM_SLOT_ROW = SqlEventLogStorage._claim_concurrency_slot


def _claim_free_slot(
    self: SqlEventLogStorage, concurrency_key: str, run_id: str, step_key: str
) -> ConcurrencySlotStatus:
    """Dagster's `SqlEventLogStorage._claim_concurrency_slot`, except that the update takes the slot row only if it is
    still free: one statement, atomic on any database, where upstream's row lock is a no-op on SQLite."""
    slots = ConcurrencySlotsTable.c
    free = (slots.concurrency_key == concurrency_key) & slots.step_key.is_(None) & slots.deleted.is_(False)
    with self.index_connection() as conn:
        row = conn.execute(
            db_select([slots.id])
            .select_from(ConcurrencySlotsTable)
            .where(free)
            .with_for_update(skip_locked=True)
            .limit(1)
        ).fetchone()
        if not row or not row[0]:
            return ConcurrencySlotStatus.BLOCKED
        taken = conn.execute(
            ConcurrencySlotsTable.update()
            .values(run_id=run_id, step_key=step_key)
            .where((slots.id == row[0]) & slots.step_key.is_(None))
        ).rowcount
    return ConcurrencySlotStatus.CLAIMED if taken else ConcurrencySlotStatus.BLOCKED


# Every process that loads the platform's code claims through it: run workers, `dg.materialize`, tests.
SqlEventLogStorage._claim_concurrency_slot = _claim_free_slot


# The module the warm process imports: it builds the definitions there once (taxi_assets/run_worker.py).
RUN_WORKER_MODULE = "taxi_assets.run_worker"


def fork_run_workers_from_a_warm_process() -> None:
    """Make this process, when it is a code server, fork each run's process from a warm process instead of
    starting a new interpreter for it (see the module's docstring)."""
    if isinstance(vars(DagsterApiServer).get("_mp_ctx"), property):
        return
    warm = multiprocessing.get_context("forkserver")
    warm.set_forkserver_preload([RUN_WORKER_MODULE])
    # `DagsterApiServer.__init__` sets `self._mp_ctx` to a spawn context before it loads the code (this module), and
    # `StartRun` starts each run's process with it. A property of the class is looked up before an attribute of the
    # instance, so the server already being built uses the warm context too; the setter ignores `__init__`'s.
    DagsterApiServer._mp_ctx = property(lambda self: warm, lambda self, value: None)
    if sys.argv[1:3] == ["api", "grpc"] and not _started_by_a_webserver():
        # The daemon's code server (`dagster api grpc`): the warm process starts beside it now, not when its first
        # run is launched.
        threading.Thread(target=multiprocessing.forkserver.ensure_running, name="warm_run_workers", daemon=True).start()


def _started_by_a_webserver() -> bool:
    """Whether this process's parent is a Dagster webserver. Its code server launches no runs with the queued run
    coordinator (the daemon launches them through its own), so its warm process, about 2 s of CPU and 170 MB at each
    start and *Reload*, starts with its first run instead (another run coordinator)."""
    try:
        parent = psutil.Process(os.getppid()).cmdline()
    except psutil.Error:
        return False
    return any(os.path.basename(arg) == "dagster-webserver" or arg == "dagster_webserver" for arg in parent[:3])


fork_run_workers_from_a_warm_process()


class _InterruptibleClaims(InstanceConcurrencyContext):
    """Dagster's pool-slot claims of one run, waiting without spinning, giving up on a termination signal, freeing
    the slot of a holder whose process is gone, and saying who holds the slot while a step waits."""

    def __init__(self, instance: dg.DagsterInstance, dagster_run: dg.DagsterRun, log=None) -> None:
        super().__init__(instance, dagster_run)
        self._log = log
        self._holders_checked_at = 0.0
        self._reported_at: dict[str, float] = {}

    def claim(self, concurrency_key: str, step_key: str, step_priority: int = 0) -> bool:
        # Dagster's handler only records the signal during orchestration; the run ends with the usual
        # "interrupted" failure (or as canceled, when the UI asked for it) and frees its pending claim on exit.
        if check_captured_interrupt():
            raise DagsterExecutionInterruptedError(f"terminated while {step_key} waited for a {concurrency_key} slot")
        checks = self._pending_claim_counts[step_key]
        if super().claim(concurrency_key, step_key, step_priority):
            self._reported_at.pop(step_key, None)
            return True
        if self._pending_claim_counts[step_key] > checks:  # the storage was asked, and said blocked
            self._pending_timeouts[step_key] = min(self._pending_timeouts[step_key], time.time() + CLAIM_RETRY_SECONDS)
            storage = self._instance.event_log_storage
            if storage.has_unassigned_slots(concurrency_key):
                # Dagster's own hand-out (highest priority, then oldest, first); the slot rows stay the semaphore,
                # so two processes repairing at once cannot put two steps in one slot.
                storage.assign_pending_steps([concurrency_key])
                self._pending_timeouts[step_key] = time.time()  # claim again at the next check
        if time.time() >= self._holders_checked_at + HOLDER_CHECK_SECONDS:
            self._holders_checked_at = time.time()
            if self._release_dead_holders(concurrency_key):
                self._pending_timeouts[step_key] = time.time()  # the slot may be ours now
            else:
                self._report_wait(concurrency_key, step_key)
        return False

    def _holders(self, concurrency_key: str) -> list[tuple[dg.DagsterRun, str, dt.datetime | None]]:
        """The runs holding the pool's slots (not this one): run, step, and when the step got its slot."""
        info = self._instance.event_log_storage.get_concurrency_info(concurrency_key)
        assigned = {(step.run_id, step.step_key): step.assigned_timestamp for step in info.pending_steps}
        holders = []
        for slot in info.claimed_slots:
            run = self._instance.get_run_by_id(slot.run_id) if slot.run_id != self._run_id else None
            if run is not None:
                holders.append((run, slot.step_key, assigned.get((slot.run_id, slot.step_key))))
        return holders

    def _release_dead_holders(self, concurrency_key: str) -> bool:
        released = False
        for run, step, _ in self._holders(concurrency_key):
            health = worker_health(self._instance, run)
            if health.alive is False:
                why = (
                    f"{health.description}, holding a {concurrency_key} slot (step {step}): failed and its slots "
                    f"freed by run {self._run_id}, which was waiting for that slot"
                )
                if release_run(self._instance, run.run_id, why):
                    released = True
                    if self._log is not None:
                        self._log.warning(f"run {run.run_id}: {why}")
        return released

    def _report_wait(self, concurrency_key: str, step_key: str) -> None:
        now = time.time()
        if self._log is None or now < self._reported_at.get(step_key, 0.0) + WAIT_REPORT_SECONDS:
            return
        self._reported_at[step_key] = now
        holders = self._holders(concurrency_key)
        if not holders:
            self._log.info(f"{step_key} waits for a {concurrency_key} slot: it is being handed over")
            return
        for run, step, since in holders:
            partition = run.tags.get("dagster/partition")
            what = f"run {run.run_id} ({run.job_name}{f' [{partition}]' if partition else ''}, step {step}"
            held = f", since {since.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC" if since else ""
            self._log.info(
                f"{step_key} waits for a {concurrency_key} slot, held by {what}{held}; "
                f"{run.status.value.lower()}, {worker_health(self._instance, run).description}). If that run is "
                f"stuck: `{RELEASE_COMMAND} {run.run_id}` stops it and frees the slot (or terminate it in the UI)"
            )

    def interval_to_next_pending_claim_check(self) -> float:
        if not self.has_pending_claims():
            return 0.0
        next_attempt = min(self._pending_timeouts.values(), default=0.0)
        return max(0.0, min(next_attempt - time.time(), INTERRUPT_CHECK_SECONDS))


# The pool claims of the run this process executes with `executor` (one run per process), for `release_pool_slot`.
_run_claims: _InterruptibleClaims | None = None


def _execution_iterator(
    job_context: PlanExecutionContext, execution_plan: ExecutionPlan, instance_concurrency_context=None
) -> Iterator[dg.DagsterEvent]:
    global _run_claims
    with _InterruptibleClaims(job_context.instance, job_context.dagster_run, job_context.log) as claims:
        _run_claims = claims
        try:
            yield from inner_plan_execution_iterator(job_context, execution_plan, claims)
        finally:
            _run_claims = None


def release_pool_slot(context: dg.AssetExecutionContext) -> bool:
    """Give the running step's pool slot back before the step ends, for a step that has closed the warehouse and
    has only its events left to record (dozens for a backfill's range, 30-100 ms each on SQLite storage): the next
    run's step opens the warehouse meanwhile. Whether a slot was given back: not in a run that the project's
    `executor` does not execute (`dg.materialize`, `execute_in_process`), which keeps it to the step's end."""
    step_key = context.get_step_execution_context().step.key
    if _run_claims is None or step_key not in _run_claims._claims:
        return False
    _run_claims.free_step(step_key)  # Dagster's own free at the step's end then finds nothing to free
    return True


@contextlib.contextmanager
def without_pool_slot(context: dg.AssetExecutionContext) -> Iterator[None]:
    """Lend the running step's pool slot for the body, work that does not open the warehouse (a calibration
    between reading and writing), then wait for it again behind the steps already waiting, highest priority first,
    as the step waited at its start: a run that needs the warehouse for seconds runs meanwhile. Not after a body
    that raised (the step fails without its slot), and a no-op where `release_pool_slot` is one."""
    step = context.get_step_execution_context().step
    if not release_pool_slot(context):
        yield
        return
    yield
    try:
        priority = int(step.tags.get(PRIORITY_TAG, 0))  # as Dagster's `ActiveExecution` claims a step's slot
    except ValueError:
        priority = 0
    claims = _run_claims
    started = time.monotonic()
    while not claims.claim(step.pool, step.key, priority):
        time.sleep(max(claims.interval_to_next_pending_claim_check(), 0.05))
    context.log.info(f"{step.key} has its {step.pool} slot again, after {time.monotonic() - started:.1f} s")


class _InterruptibleInProcessExecutor(InProcessExecutor):
    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[dg.DagsterEvent]:
        # InProcessExecutor.execute with the claims above; the same events, so the UI shows the same run. First,
        # where this run lives, so that its death can be told (by run monitoring, or by a step waiting for its slot).
        plan_context.instance.add_run_tags(plan_context.run_id, worker_tags())
        pid = os.getpid()
        yield dg.DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {pid})",
            event_specific_data=EngineEventData.in_process(pid, execution_plan.step_keys_to_execute),
        )
        yield from ExecuteRunWithPlanIterable(
            execution_plan=plan_context.execution_plan,
            iterator=_execution_iterator,
            execution_context_manager=PlanExecutionContextManager(
                job=plan_context.job,
                retry_mode=plan_context.retry_mode,
                execution_plan=plan_context.execution_plan,
                run_config=plan_context.run_config,
                dagster_run=plan_context.dagster_run,
                instance=plan_context.instance,
                raise_on_error=plan_context.raise_on_error,
                output_capture=plan_context.output_capture,
                step_dependency_config=self.step_dependency_config,
            ),
        )


@dg.executor(name="in_process", config_schema=dg.in_process_executor.config_schema)
def executor(init_context: dg.InitExecutorContext) -> _InterruptibleInProcessExecutor:
    """All steps of a run in its one process; a step waiting for a pool slot sleeps and stops on SIGTERM."""
    base = dg.in_process_executor.executor_creation_fn(init_context)
    return _InterruptibleInProcessExecutor(
        retries=base.retries, step_dependency_config=base.step_dependency_config, marker_to_close=base.marker_to_close
    )


class LocalRunLauncher(dg.DefaultRunLauncher):
    """Dagster's default launcher, whose run workers the monitoring daemon can check: a dead worker fails its run.

    The daemon launches queued runs as processes on its own machine, and records that machine in the tag
    `taxi/worker_host` at once (the executor adds the process's pid and start time once it runs). Run monitoring
    checks every started run, so a run executed from a terminal on this machine is checked too; a run on another
    machine is left to run monitoring there.
    """

    def launch_run(self, context: LaunchRunContext) -> None:
        self._instance.add_run_tags(context.dagster_run.run_id, {WORKER_HOST_TAG: socket.gethostname()})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        health = worker_health(self._instance, run)
        if health.alive is False:
            return CheckRunHealthResult(WorkerStatus.FAILED, health.description)
        # Alive, or not this machine's to tell: left running (run monitoring on its own host checks it).
        return CheckRunHealthResult(WorkerStatus.RUNNING, health.description)


class _ShortWaits:
    """The daemon's shutdown event, whose timed waits last at most `seconds`."""

    def __init__(self, event, seconds: float) -> None:
        self._event, self._seconds = event, seconds

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(self._seconds if timeout is None else min(timeout, self._seconds))


# Dagster's own loop, kept for tests/test_compat.py to compare with upstream.
DAGSTER_BACKFILL_CORE_LOOP = BackfillDaemon.core_loop


def pick_up_backfills_every(seconds: float) -> None:
    """Make this process's backfill daemon look for new backfills (and advance running ones) every `seconds`."""

    def core_loop(self: BackfillDaemon, workspace_process_context, shutdown_event):
        yield from execute_backfill_iteration_loop(
            workspace_process_context,
            self._logger,
            _ShortWaits(shutdown_event, seconds),
            threadpool_executor=self._threadpool_executor,
            submit_threadpool_executor=self._submit_threadpool_executor,
        )

    BackfillDaemon.core_loop = core_loop


def _priority(run: dg.DagsterRun) -> int:
    """The run's queue priority as Dagster's queue reads it (`QueuedRunCoordinatorDaemon._priority_sort`): 0 when
    the tag is absent or not a whole number."""
    try:
        return int(run.tags.get(PRIORITY_TAG, "0"))
    except ValueError:
        return 0


class QueuedRunCoordinator(DagsterQueuedRunCoordinator):
    """Dagster's run queue; in the daemon, backfills are picked up every `backfill_interval_seconds`. Every run
    submitted without a priority above 0 is tagged `SHARED_SLOTS_TAG`, which the instance limits to all run slots but
    one: the last is kept for prioritized runs (the online ingest), whatever launched the others."""

    backfill_interval_seconds = BACKFILL_INTERVAL_SECONDS

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if _priority(run) <= 0 and SHARED_SLOTS_TAG not in run.tags:
            # Stored before the run is queued: the queue reads a run's tags when it considers launching it.
            self._instance.add_run_tags(run.run_id, {SHARED_SLOTS_TAG: "true"})
        return super().submit_run(context)

    @classmethod
    def config_type(cls):
        return {
            **DagsterQueuedRunCoordinator.config_type(),
            "backfill_interval_seconds": dg.Field(
                float,
                is_required=False,
                default_value=BACKFILL_INTERVAL_SECONDS,
                description="Seconds between the backfill daemon's iterations (Dagster's own: 30)",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        config = dict(config_value)
        interval = config.pop("backfill_interval_seconds", BACKFILL_INTERVAL_SECONDS)
        coordinator = super().from_config_value(inst_data, config)
        coordinator.backfill_interval_seconds = interval
        pick_up_backfills_every(interval)
        return coordinator


def initialize_pools() -> None:
    """Create the `duckdb` pool's slots at the instance's default limit, in this one process (set-up does, in
    scripts/init_dagster_home.sh and compose's dagster-init, before any run). Dagster creates a pool's slots on the
    pool's first claim (`initialize_concurrency_limit_to_default`, counting the slots, then adding the missing
    ones): two runs claiming at once on a fresh SQLite instance both counted none and added one each, two slots for
    a limit of one, and both opened the DuckDB file (tests/test_instance.py, 2026-12-03: "Conflicting lock is held")."""
    from taxi_assets.defs.resources import DUCKDB_POOL  # the definitions import this module

    with dg.DagsterInstance.get() as instance:
        # Only when Dagster's first claim would (`InstanceConcurrencyContext.claim`): the pool has no limit yet, or its
        # default changed. Called again on PostgreSQL, the insertion's unique violation aborts the transaction the
        # update after it needs (compose's dagster-init runs at every `docker compose up`).
        default = instance.get_concurrency_config().pool_config.default_pool_limit
        pool = next((pool for pool in instance.event_log_storage.get_pool_limits() if pool.name == DUCKDB_POOL), None)
        if (pool is None and default is not None) or (pool is not None and pool.from_default and pool.limit != default):
            instance.event_log_storage.initialize_concurrency_limit_to_default(DUCKDB_POOL)


def main(argv: list[str] | None = None) -> int:
    """`python -m taxi_assets.execution release RUN_ID`: stop a stuck run and free its pool slots.
    `python -m taxi_assets.execution initialize-pools`: create the pools' slots (set-up, local and compose)."""
    parser = argparse.ArgumentParser(prog="python -m taxi_assets.execution", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    release = commands.add_parser("release", help="stop a run (SIGTERM, then SIGKILL), fail it, free its slots")
    release.add_argument("run_id")
    release.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    commands.add_parser("initialize-pools", help="create the duckdb pool's slots before any run claims one")
    options = parser.parse_args(argv)
    if options.command == "initialize-pools":
        initialize_pools()
        return 0
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(options.run_id)
        if run is None:
            print(f"no run {options.run_id}", file=sys.stderr)
            return 1
        health = worker_health(instance, run)
        if health.alive is None and not run.is_finished:
            print(f"run {run.run_id}: {health.description}; stop it there first", file=sys.stderr)
            return 1
        if health.alive:
            pid, _ = worker_process(instance, run.run_id)
            process = psutil.Process(pid)
            print(f"run {run.run_id}: stopping its process {pid}")
            process.terminate()
            if process not in psutil.wait_procs([process], timeout=options.grace)[0]:
                process.kill()
                psutil.wait_procs([process], timeout=10)
        why = f"released by hand (`{RELEASE_COMMAND} {run.run_id}`): {worker_health(instance, run).description}"
        released = release_run(instance, run.run_id, why)
        print(f"run {run.run_id}: {'failed and its slots freed' if released else 'had finished and held no slot'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
