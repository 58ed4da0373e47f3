"""How the platform's runs execute and how the daemon watches them, so that no run can wedge the warehouse.

This is the project's Dagster compatibility module: the only code that uses Dagster's private API, written for
Dagster 1.13.27 exactly (pinned in pyproject.toml); tests/test_compat.py fails when the upstream code it copies or
works around changes, or when another Dagster is installed.

* `executor`: Dagster's in-process executor (one process per run, steps one after the other), except while a step
  waits for a slot of a pool (`duckdb`). Dagster 1.13 then polls without ever sleeping (its
  `interval_to_next_pending_claim_check` is `min(0, …)`; dagster-io/dagster#20367 proposed the fix and was closed
  unmerged), so a blocked run burns a core, and it only looks at a
  SIGTERM/SIGINT once the step has its slot: a run waiting behind a wedged slot could not even be stopped. Here a
  blocked step sleeps until its next claim attempt, in slices of at most `INTERRUPT_CHECK_SECONDS`, and a
  termination received meanwhile ends the run at once. And a blocked step whose pool has a free slot that nobody
  was given is given it: Dagster 1.13 registers a waiting step in two statements (`has_unassigned_slots`, then
  `add_pending_step` with `should_assign` from the first), and hands a freed slot to the waiting steps only when it
  is freed (`free_concurrency_slot_for_step` → `assign_pending_steps`). A slot freed between the two statements is
  given to no one, and the step waits forever beside a free slot: seen in a 10-month backfill whose third run
  waited 11 minutes with the `duckdb` slot free and the other two runs finished.
* `LocalRunLauncher` (named in dagster.yaml): Dagster's default launcher, whose run workers are processes on the
  daemon's machine, plus the health check that run monitoring needs to fail a run whose worker died (kill -9, OOM
  kill, power cut). The default launcher has none: the code server that started a worker notices its death only
  while that code server lives, so after a restart such a run stayed STARTED, and its pool slot claimed, forever.
  Once the run has failed, run monitoring's `free_slots_after_run_end_seconds` gives its slot back.
"""

from __future__ import annotations

import os
import socket
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
from dagster._utils.interrupts import check_captured_interrupt

DAGSTER_VERSION = "1.13.27"
# How long a SIGTERM can wait while a step waits for its pool slot.
INTERRUPT_CHECK_SECONDS = 0.5
# The tag naming the machine whose process runs a launched run: only that machine can tell whether it still lives.
WORKER_HOST_TAG = "taxi/worker_host"
# psutil derives a process's start time from the boot time; the wall clock may have been adjusted since.
_CLOCK_TOLERANCE_SECONDS = 5.0


class _InterruptibleClaims(InstanceConcurrencyContext):
    """Dagster's pool-slot claims of one run, waiting without spinning and giving up on a termination signal."""

    def claim(self, concurrency_key: str, step_key: str, step_priority: int = 0) -> bool:
        # Dagster's handler only records the signal during orchestration; the run ends with the usual
        # "interrupted" failure (or as canceled, when the UI asked for it) and frees its pending claim on exit.
        if check_captured_interrupt():
            raise DagsterExecutionInterruptedError(f"terminated while {step_key} waited for a {concurrency_key} slot")
        checks = self._pending_claim_counts[step_key]
        if super().claim(concurrency_key, step_key, step_priority):
            return True
        if self._pending_claim_counts[step_key] > checks:  # the storage was asked, and said blocked
            storage = self._instance.event_log_storage
            if storage.has_unassigned_slots(concurrency_key):
                # Dagster's own hand-out (highest priority, then oldest, first); the slot rows stay the semaphore,
                # so two processes repairing at once cannot put two steps in one slot.
                storage.assign_pending_steps([concurrency_key])
                self._pending_timeouts[step_key] = time.time()  # claim again at the next check
        return False

    def interval_to_next_pending_claim_check(self) -> float:
        if not self.has_pending_claims():
            return 0.0
        next_attempt = min(self._pending_timeouts.values(), default=0.0)
        return max(0.0, min(next_attempt - time.time(), INTERRUPT_CHECK_SECONDS))


def _execution_iterator(
    job_context: PlanExecutionContext, execution_plan: ExecutionPlan, instance_concurrency_context=None
) -> Iterator[dg.DagsterEvent]:
    with _InterruptibleClaims(job_context.instance, job_context.dagster_run) as claims:
        yield from inner_plan_execution_iterator(job_context, execution_plan, claims)


class _InterruptibleInProcessExecutor(InProcessExecutor):
    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[dg.DagsterEvent]:
        # InProcessExecutor.execute with the claims above; the same events, so the UI shows the same run.
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


def worker_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of a launched run's worker process and when it reported its start (unix time)."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        pid = record.dagster_event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value), record.timestamp
    return None


class LocalRunLauncher(dg.DefaultRunLauncher):
    """Dagster's default launcher, whose run workers the monitoring daemon can check: a dead worker fails its run.

    The daemon launches every run (the run queue), each as a process on its own machine, which it records in the
    tag `taxi/worker_host`; a run started elsewhere (`dagster asset materialize` in a terminal) is left alone.
    """

    def launch_run(self, context: LaunchRunContext) -> None:
        self._instance.add_run_tags(context.dagster_run.run_id, {WORKER_HOST_TAG: socket.gethostname()})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        if run.tags.get(WORKER_HOST_TAG) != socket.gethostname():
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not launched on this machine: not checked")
        worker = worker_process(self._instance, run.run_id)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "worker process not reported yet")
        pid, reported = worker
        try:
            process = psutil.Process(pid)
            # A pid can be reused, after a reboot above all: the worker started before it reported its pid.
            alive = (
                process.status() != psutil.STATUS_ZOMBIE
                and process.create_time() <= reported + _CLOCK_TOLERANCE_SECONDS
            )
        except psutil.NoSuchProcess:
            alive = False
        except psutil.AccessDenied:  # another user's process holds the pid: ours is gone
            alive = False
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker process {pid} is alive")
        return CheckRunHealthResult(WorkerStatus.FAILED, f"worker process {pid} of this run is gone (killed?)")
