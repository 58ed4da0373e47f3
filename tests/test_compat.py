"""The two compatibility modules hold the only private framework uses: bento_service/compat.py (BentoML and
prometheus_client; the service must not import Dagster) and taxi_assets/execution.py (Dagster). These tests fail as
soon as the upstream code they replace or rely on is not the code they were written for."""

import contextlib
import dataclasses
import hashlib
import inspect
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import bentoml
import dagster as dg
import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, Histogram

from bento_service import compat
from taxi_assets import execution
from tests.support.platform import REPO_ROOT

# sha256 of BentoML 1.4.40's `TimeoutMiddleware.__call__` source, which compat._timeout_middleware_call copies.
UPSTREAM_TIMEOUT_CALL_SHA256 = "fd8b9e3da28ed2b44cfd508d641617e049fcd4986138197ce7bb227332505896"
# sha256 of BentoML 1.4.40's `telemetry.ParentBasedTraceIdRatio` source, which compat.SampledSpansRecorded replaces.
UPSTREAM_SAMPLER_SHA256 = "c17aec4d55a852c17bf9a3814c9c5656997fe42332276ec14265e78ed1464b96"


@pytest.mark.unit
def test_the_running_bentoml_is_the_pinned_one() -> None:
    assert bentoml.__version__ == compat.BENTOML_VERSION
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert re.findall(r'"bentoml([^"]*)"', pyproject) == [f"=={compat.BENTOML_VERSION}"]
    bentofile = yaml.safe_load(Path(REPO_ROOT / "bento_service" / "bentofile.yaml").read_text())
    assert [p for p in bentofile["python"]["packages"] if p.startswith("bentoml")] == [
        f"bentoml=={compat.BENTOML_VERSION}"
    ]


@pytest.mark.integration  # imports BentoML in a process of its own: seconds
def test_the_bento_ships_exactly_the_taxi_assets_modules_the_service_imports() -> None:
    """The bento holds the service and what it imports: no Dagster glue, no Evidently report, no test helpers."""
    import subprocess
    import sys

    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, bento_service.service, bento_service.model_process; "
            "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('taxi_assets')))",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    bentofile = yaml.safe_load((REPO_ROOT / "bento_service" / "bentofile.yaml").read_text())
    shipped = {
        path.relative_to(REPO_ROOT).as_posix()
        for pattern in bentofile["include"]
        for path in REPO_ROOT.glob(pattern)
        if not pattern.startswith("bento_service/")
    }
    assert shipped == {Path(path).relative_to(REPO_ROOT).as_posix() for path in imported}


@pytest.mark.unit
def test_the_replaced_sampler_is_unchanged_upstream_and_records_only_what_it_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bentoml._internal.configuration import containers
    from bentoml._internal.utils import telemetry
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import Decision

    source = inspect.getsource(compat.UPSTREAM_SAMPLER)
    assert hashlib.sha256(source.encode()).hexdigest() == UPSTREAM_SAMPLER_SHA256, (
        "BentoML's ParentBasedTraceIdRatio changed: re-check whether it still records unsampled spans, then update "
        "or drop compat.SampledSpansRecorded"
    )
    # The provider imports the sampler by name when it is built (in the worker, after the service module), so the
    # module attribute is what it gets.
    provider = inspect.getsource(containers)
    assert "from ..utils.telemetry import ParentBasedTraceIdRatio" in provider
    assert "sampler=ParentBasedTraceIdRatio(sample_rate)" in provider
    monkeypatch.setattr(telemetry, "ParentBasedTraceIdRatio", compat.UPSTREAM_SAMPLER)  # restored after the test
    compat.record_sampled_spans_only()
    assert telemetry.ParentBasedTraceIdRatio is compat.SampledSpansRecorded

    trace_id = 0x5CE0E9A56015FEC5AADFA328AE398115
    unsampled_parent = trace.set_span_in_context(
        trace.NonRecordingSpan(trace.SpanContext(trace_id, 0x1234, is_remote=False))
    )
    sampled_parent = trace.set_span_in_context(
        trace.NonRecordingSpan(trace.SpanContext(trace_id, 0x1234, False, trace.TraceFlags(trace.TraceFlags.SAMPLED)))
    )

    def decisions(sampler) -> list[Decision]:
        return [sampler.should_sample(parent, trace_id, "request").decision for parent in (None, unsampled_parent)]

    # BentoML's default rate is 0: upstream records every span anyway, the replacement none.
    assert decisions(compat.UPSTREAM_SAMPLER(0.0)) == [Decision.RECORD_ONLY, Decision.RECORD_ONLY]
    assert decisions(compat.SampledSpansRecorded(0.0)) == [Decision.DROP, Decision.DROP]
    # A sampled request is recorded and exported as before, its children with it.
    assert decisions(compat.SampledSpansRecorded(1.0))[0] == Decision.RECORD_AND_SAMPLE
    child = compat.SampledSpansRecorded(0.0).should_sample(sampled_parent, trace_id, "child").decision
    assert child == Decision.RECORD_AND_SAMPLE


@pytest.mark.unit
def test_the_replaced_timeout_middleware_is_unchanged_upstream() -> None:
    source = inspect.getsource(compat.UPSTREAM_TIMEOUT_CALL)
    assert hashlib.sha256(source.encode()).hexdigest() == UPSTREAM_TIMEOUT_CALL_SHA256, (
        "BentoML's TimeoutMiddleware.__call__ changed: re-check whether it still leaks its timer, then update or "
        "drop compat._timeout_middleware_call"
    )
    # The copy differs from upstream by the cancelled timer only.
    replaced = inspect.getsource(compat._timeout_middleware_call)
    assert "timer = loop.call_later(self.timeout, self._set_timer_out, waiter)" in replaced
    assert "timer.cancel()" in replaced and "timer.cancel()" not in source


@pytest.mark.unit
def test_the_bulk_observe_equals_one_observe_per_value() -> None:
    values = np.random.default_rng(1).uniform(0, 100, 1000)
    values[:5] = [2, 5, 90, 0, 1e9]  # on bucket bounds, zero, beyond the last finite bound
    buckets = (2, 5, 10, 15, 20, 30, 45, 60, 90, float("inf"))
    registries = CollectorRegistry(), CollectorRegistry()
    bulk = Histogram("h", "h", buckets=buckets, registry=registries[0])
    one_by_one = Histogram("h", "h", buckets=buckets, registry=registries[1])
    compat.observe_many(bulk, values)
    for value in values:
        one_by_one.observe(value)

    def samples(registry: CollectorRegistry) -> dict:
        return {(s.name, tuple(s.labels.items())): s.value for m in registry.collect() for s in m.samples}

    bulk_samples, loop_samples = samples(registries[0]), samples(registries[1])
    assert bulk_samples.keys() == loop_samples.keys()
    sums = bulk_samples.pop(("h_sum", ())), loop_samples.pop(("h_sum", ()))
    assert np.isclose(*sums)  # one addition against 1,000: rounding differs
    created = [key for key in loop_samples if key[0] == "h_created"]
    assert {k: v for k, v in bulk_samples.items() if k not in created} == {
        k: v for k, v in loop_samples.items() if k not in created
    }


# sha256 of Dagster 1.13.27's sources that taxi_assets/execution.py copies or works around.
UPSTREAM_DAGSTER_SHA256 = {
    # _InterruptibleInProcessExecutor.execute is this method with interruptible claims.
    "InProcessExecutor.execute": "bbf6a314f243a1d86cc7d77ee7bdbd9f5cdac793b541c38cb240cf0bc5535b62",
    # The busy wait: min(0, ...) never sleeps (dagster-io/dagster#20367).
    "InstanceConcurrencyContext.interval_to_next_pending_claim_check": (
        "d9b44ab68eb41a99a2991cb72bdd4103cf91dec98fd3f12adf60f03941c1cc37"
    ),
    # _InterruptibleClaims.claim checks for a termination, then defers to this.
    "InstanceConcurrencyContext.claim": "8375daa833c671e54e6ec523809a8e26d6baffd6dbaa01ccfc0d824c06cd7124",
    # The race the claim repairs (registered unassigned beside a free slot), and the two calls the repair makes.
    "SqlEventLogStorage.claim_concurrency_slot": "cbfe2436f7e3b1e6da78e385c187c1b88c2e998a0d5f80ff6a54dee3efd5e03b",
    "SqlEventLogStorage.has_unassigned_slots": "3b97c6f524a3c80f0c31b3bba76b28bf4f519ce582237d78b087e2a6c745e43e",
    "SqlEventLogStorage.assign_pending_steps": "d7d5d9f84bd42141b2fb47c7b1d651eceba5c1f6f87d2583291ba95965456188",
    # _claim_free_slot is this with the update conditional on the slot row being free.
    "SqlEventLogStorage._claim_concurrency_slot": "7628812bbe08bc3e6ec3416a46b7f61f03c379ff47ac06d366f99dbbb4a93a72",
    # _InterruptibleClaims keeps the run id and pending timeouts this sets up.
    "InstanceConcurrencyContext.__init__": "9aed827d8bdaae32d0d0473c8323e7151546a0aa57a4f17a4c8ba973aa98e818",
    # release_run frees a dead holder's slots with this, which also hands them to the waiting steps.
    "SqlEventLogStorage.free_concurrency_slots_for_run": (
        "5881be36a0a96fabb2af4ab51d11a7349219d840f94b0e28a5b8a51fdff588ba"
    ),
    # Run monitoring asks the launcher about every started run, launched or executed from a terminal, and fails
    # the run whose worker is FAILED: what LocalRunLauncher.check_run_worker_health relies on.
    "execute_run_monitoring_iteration": "9d4ad3c488139d11f3b50c6a61920fda06f24abbd20a01c0a0e96080d44d9ec4",
    "monitor_started_run": "bc211672a19dbc70fba31a163f73fb486fe262c402fac9bb85e3e7ead7216ec8",
    # pick_up_backfills_every calls the loop as BackfillDaemon.core_loop does; the loop's only wait between
    # iterations is `shutdown_event.wait(sleep_time)`, which _ShortWaits shortens.
    "BackfillDaemon.core_loop": "060dff14cea965d22a2bcd470e1c09e5917bd2db31a1a8f1825eabe1ed53b4c8",
    "execute_backfill_iteration_loop": "2cd2b6119e4561f746485bf9e2a23e8224c4e1a78e1edcd8060d1e04cff4d7f7",
    # fork_run_workers_from_a_warm_process: the code server sets its `_mp_ctx` (spawn) before loading the code, and
    # starts each run's process from `self._mp_ctx` with a picklable target and arguments.
    "DagsterApiServer.__init__": "820bb029ed1f1260cbdc9ff9aba365222a87fbd482e9582cc16f54a242791553",
    "DagsterApiServer.StartRun": "ec53adf5e40c9c7c941dd936c04131705d9c1abfd5bcc34fd6c104ff1c0ebfd5",
    # _priority reads a run's priority as the queue sorts by it.
    "QueuedRunCoordinatorDaemon._priority_sort": "1f5a80955ee3069b9af97a7a8acc3a0688bce025c1ba12afa05884b69d269896",
}


@pytest.mark.unit
def test_the_running_dagster_is_the_pinned_one() -> None:
    import dagster

    assert dagster.__version__ == execution.DAGSTER_VERSION
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    pins = dict(re.findall(r'"(dagster(?:-webserver|-dg-cli)?)(==[^"]*)"', pyproject))
    assert pins == dict.fromkeys(["dagster", "dagster-webserver", "dagster-dg-cli"], f"=={execution.DAGSTER_VERSION}")


@pytest.mark.unit
def test_the_dagster_code_execution_copies_is_unchanged() -> None:
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
    from dagster._core.executor.in_process import InProcessExecutor
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
    from dagster._daemon.backfill import execute_backfill_iteration_loop
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration, monitor_started_run
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
    from dagster._grpc.server import DagsterApiServer

    functions = {
        "InProcessExecutor.execute": InProcessExecutor.execute,
        "InstanceConcurrencyContext.interval_to_next_pending_claim_check": (
            InstanceConcurrencyContext.interval_to_next_pending_claim_check
        ),
        "InstanceConcurrencyContext.claim": InstanceConcurrencyContext.claim,
        **{
            f"SqlEventLogStorage.{name}": getattr(SqlEventLogStorage, name)
            for name in ("claim_concurrency_slot", "has_unassigned_slots", "assign_pending_steps")
        },
        "InstanceConcurrencyContext.__init__": InstanceConcurrencyContext.__init__,
        "SqlEventLogStorage.free_concurrency_slots_for_run": SqlEventLogStorage.free_concurrency_slots_for_run,
        "SqlEventLogStorage._claim_concurrency_slot": execution.DAGSTER_CLAIM_SLOT_ROW,
        "execute_run_monitoring_iteration": execute_run_monitoring_iteration,
        "monitor_started_run": monitor_started_run,
        "BackfillDaemon.core_loop": execution.DAGSTER_BACKFILL_CORE_LOOP,
        "execute_backfill_iteration_loop": execute_backfill_iteration_loop,
        "DagsterApiServer.__init__": DagsterApiServer.__init__,
        "DagsterApiServer.StartRun": DagsterApiServer.StartRun,
        "QueuedRunCoordinatorDaemon._priority_sort": QueuedRunCoordinatorDaemon._priority_sort,
    }
    digests = {name: hashlib.sha256(inspect.getsource(f).encode()).hexdigest() for name, f in functions.items()}
    assert digests == UPSTREAM_DAGSTER_SHA256, "Dagster changed: review taxi_assets/execution.py against it"


@pytest.mark.unit
def test_the_instance_s_run_queue_makes_the_daemon_pick_up_backfills_every_half_second(tmp_path: Path) -> None:
    """The daemon builds the run coordinator before its daemons' threads start: by then the backfill daemon's loop
    waits at most the configured interval between iterations, however long Dagster's own loop asks to wait."""
    import threading

    from dagster._daemon.daemon import BackfillDaemon

    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, execution.QueuedRunCoordinator)
        assert coordinator.backfill_interval_seconds == 0.5 and coordinator.dequeue_interval_seconds == 1
        assert BackfillDaemon.daemon_type() in instance.get_required_daemon_types()
    assert BackfillDaemon.core_loop is not execution.DAGSTER_BACKFILL_CORE_LOOP

    shutdown = threading.Event()
    waits = execution._ShortWaits(shutdown, 0.2)
    started = time.monotonic()
    assert waits.wait(30) is False  # Dagster's loop asks for up to 30 s
    assert 0.15 <= time.monotonic() - started < 2
    shutdown.set()
    assert waits.is_set() and waits.wait(30) is True


@pytest.mark.unit
def test_a_code_server_starts_its_runs_from_the_warm_process_that_has_the_definitions_built() -> None:
    """Every code server (any `DagsterApiServer`, whenever built) starts its runs' processes from one forkserver
    that imports taxi_assets.run_worker first; what `__init__` assigns is ignored. The daemon's real runs are
    checked in tests/test_recovery.py (their parent process)."""
    import multiprocessing.forkserver

    from dagster._grpc.server import DagsterApiServer

    server = object.__new__(DagsterApiServer)
    server._mp_ctx = multiprocessing.get_context("spawn")  # what DagsterApiServer.__init__ does
    assert server._mp_ctx.get_start_method() == "forkserver"
    assert multiprocessing.forkserver._forkserver._preload_modules == [execution.RUN_WORKER_MODULE]
    execution.fork_run_workers_from_a_warm_process()  # once is enough: a second call changes nothing
    assert server._mp_ctx.get_start_method() == "forkserver"


@pytest.mark.integration
@pytest.mark.parametrize(("parent", "by_a_webserver"), [("dagster-webserver", True), ("dagster-daemon", False)])
def test_only_a_code_server_started_by_a_webserver_leaves_its_warm_process_for_later(
    tmp_path: Path, parent: str, by_a_webserver: bool
) -> None:
    """The parent is a script of that name, as `.venv/bin/dagster-webserver` is; its child asks, as a code server
    does at import."""
    script = tmp_path / parent
    child = "from taxi_assets import execution; print(execution._started_by_a_webserver())"
    script.write_text(f"#!{sys.executable}\nimport subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}])")
    script.chmod(0o755)
    answer = subprocess.run([str(script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert answer.stdout.strip() == str(by_a_webserver), answer.stderr[-2000:]


@pytest.mark.unit
def test_private_dagster_imports_live_in_the_compatibility_module_only() -> None:
    for path in sorted((REPO_ROOT / "taxi_assets").rglob("*.py")) + sorted((REPO_ROOT / "bento_service").glob("*.py")):
        if path.name != "execution.py":
            assert "dagster._" not in path.read_text(), f"{path.relative_to(REPO_ROOT)} uses Dagster's private API"


class _FirstReadThen:
    """A storage connection whose first statement's row is fetched, then `then` runs, then the caller goes on."""

    def __init__(self, conn, then) -> None:
        self._conn, self._then = conn, then

    def execute(self, statement, *args, **kwargs):
        result = self._conn.execute(statement, *args, **kwargs)
        if self._then is None:
            return result
        row = result.fetchone()
        result.close()
        self._then, then = None, self._then
        then()
        return _Fetched(row)


@dataclasses.dataclass
class _Fetched:
    row: object

    def fetchone(self):
        return self.row


@pytest.mark.integration
@pytest.mark.parametrize(
    ("claim_row", "holders", "row_holder"),
    [
        # Both run; the slot row names the first, whose update overwrote the second's.
        pytest.param(execution.DAGSTER_CLAIM_SLOT_ROW, {"first", "second"}, "first", id="dagster-s-claim"),
        pytest.param(execution._claim_free_slot, {"second"}, "second", id="the-project-s-claim"),
    ],
)
def test_two_steps_claiming_the_one_free_slot_in_the_same_instant_get_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claim_row, holders: set[str], row_holder: str
) -> None:
    """The first step has read the free slot row when the second claims it: on the local instance's SQLite, Dagster's
    claim then gives both steps the one `duckdb` slot (two DuckDB writers: the second fails on the file's lock); the
    project's gives it to the second only, and the first waits. Every process that loads the platform claims with the
    project's."""
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
    from dagster._utils.concurrency import ConcurrencySlotStatus

    assert SqlEventLogStorage._claim_concurrency_slot is execution._claim_free_slot
    steps = ("first", "second")
    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text())
    # Two instances on one storage, as two run processes have (one instance's SQLite storage serialises its own calls).
    with (
        dg.DagsterInstance.from_config(str(tmp_path)) as instance,
        dg.DagsterInstance.from_config(str(tmp_path)) as other_process,
    ):
        storage = instance.event_log_storage
        storage.set_concurrency_slots("duckdb", 1)
        runs = {step: instance.create_run_for_job(dg.GraphDefinition(step).to_job()).run_id for step in steps}
        outcome: dict[str, object] = {}

        def second_claims() -> None:
            outcome["second"] = claim_row(other_process.event_log_storage, "duckdb", runs["second"], "trip_months")

        connect = storage.index_connection

        @contextlib.contextmanager
        def first_reads_then_second_claims():
            with connect() as conn:
                yield _FirstReadThen(conn, second_claims)

        monkeypatch.setattr(storage, "index_connection", first_reads_then_second_claims)
        outcome["first"] = claim_row(storage, "duckdb", runs["first"], "trip_months")
        slots = other_process.event_log_storage.get_concurrency_info("duckdb").claimed_slots

    claimed = {name for name, status in outcome.items() if status == ConcurrencySlotStatus.CLAIMED}
    assert claimed == holders
    assert [slot.run_id for slot in slots] == [runs[row_holder]]


def _orphaned_waiter(instance: dg.DagsterInstance) -> dg.DagsterRun:
    """The race in Dagster 1.13's claim: the pool's one slot is free, and a waiting step was registered unassigned
    (it found the slot taken, and the slot was freed before it registered)."""
    storage = instance.event_log_storage
    storage.set_concurrency_slots("duckdb", 1)
    run = instance.create_run_for_job(dg.GraphDefinition("waiter").to_job())
    storage.add_pending_step(concurrency_key="duckdb", run_id=run.run_id, step_key="trip_months", should_assign=False)
    assert storage.has_unassigned_slots("duckdb")
    return run


def _claims_within(claims, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if claims.claim("duckdb", "trip_months"):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.integration
def test_dagster_still_leaves_a_step_waiting_beside_a_free_slot(tmp_path: Path) -> None:
    """The defect the workaround is for: when this fails, Dagster fixed it and the repair in
    `_InterruptibleClaims.claim` can go."""
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = _orphaned_waiter(instance)
        with InstanceConcurrencyContext(instance, run) as claims:
            assert not _claims_within(claims, 4.0)


@pytest.mark.integration
def test_a_step_waiting_beside_a_free_slot_gets_it(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = _orphaned_waiter(instance)
        with execution._InterruptibleClaims(instance, run) as claims:
            assert _claims_within(claims, 4.0)
            # It holds the one slot now: another run's step waits, and is not given a slot that does not exist.
            other = instance.create_run_for_job(dg.GraphDefinition("other").to_job())
            with execution._InterruptibleClaims(instance, other) as waiting:
                assert not _claims_within(waiting, 2.0)


@dg.asset(pool="duckdb")
def slot_giver(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Gives its duckdb slot back, then sees whether another run's step gets it while this step still runs."""
    given_back = execution.release_pool_slot(context)
    following = context.instance.create_run_for_job(dg.GraphDefinition("following").to_job())
    storage = context.instance.event_log_storage
    taken = storage.claim_concurrency_slot("duckdb", following.run_id, "trip_months").is_claimed
    return dg.MaterializeResult(metadata={"given_back": given_back, "taken_by_the_next_run": taken})


def slot_giver_job() -> dg.JobDefinition:
    return _job_with_the_project_s_executor(slot_giver)


def _job_with_the_project_s_executor(asset: dg.AssetsDefinition) -> dg.JobDefinition:
    name = f"{asset.key.path[-1]}_job"
    jobs = [dg.define_asset_job(name, [asset])]
    return dg.Definitions(assets=[asset], jobs=jobs, executor=execution.executor).resolve_job_def(name)


def _materialized_in_one_pool_slot(
    tmp_path: Path, asset: dg.AssetsDefinition, job, executed_by: str
) -> tuple[dict, list]:
    """The metadata of `asset` materialized with a one-slot `duckdb` pool, by the project's executor (`job`, a
    module-level function for `dg.reconstructable`) or by `dg.materialize`, and the pool's claimed slots after."""
    pools = {"concurrency": {"pools": {"granularity": "op", "default_limit": 1}}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=pools) as instance:
        if executed_by == "dg.materialize":
            result = dg.materialize([asset], instance=instance)
        else:
            result = dg.execute_job(dg.reconstructable(job), instance=instance)
        assert result.success
        claimed = instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots
    (materialization,) = result.asset_materializations_for_node(asset.op.name)
    return {name: value.value for name, value in materialization.metadata.items()}, claimed


@pytest.mark.integration
@pytest.mark.parametrize("executed_by", ["the project's executor", "dg.materialize"])
def test_a_step_gives_its_pool_slot_back_only_under_the_project_s_executor(tmp_path: Path, executed_by: str) -> None:
    """`release_pool_slot` frees the running step's slot for the next run (a backfill's next range); a run the
    executor does not execute keeps the slot to the step's end, as Dagster's own executor does."""
    metadata, _ = _materialized_in_one_pool_slot(tmp_path, slot_giver, slot_giver_job, executed_by)
    mine = executed_by != "dg.materialize"
    assert metadata["given_back"] is mine
    assert metadata["taken_by_the_next_run"] is mine


@dg.asset(pool="duckdb")
def slot_lender(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Lends its duckdb slot to another run's step, which gives it back a second later; then holds it again."""
    storage = context.instance.event_log_storage
    following = context.instance.create_run_for_job(dg.GraphDefinition("following").to_job())
    with execution.without_pool_slot(context):
        lent = storage.claim_concurrency_slot("duckdb", following.run_id, "trip_months").is_claimed
        if lent:
            threading.Timer(1.0, storage.free_concurrency_slot_for_step, (following.run_id, "trip_months")).start()
        lent_at = time.monotonic()
    (holder,) = storage.get_concurrency_info("duckdb").claimed_slots
    return dg.MaterializeResult(
        metadata={"lent": lent, "waited": time.monotonic() - lent_at, "held_again": holder.run_id == context.run_id}
    )


def slot_lender_job() -> dg.JobDefinition:
    return _job_with_the_project_s_executor(slot_lender)


@pytest.mark.integration
@pytest.mark.parametrize("executed_by", ["the project's executor", "dg.materialize"])
def test_a_step_lends_its_pool_slot_and_waits_for_it_again_only_under_the_project_s_executor(
    tmp_path: Path, executed_by: str
) -> None:
    """`without_pool_slot` lets another run's step have the slot while the body computes, then the step waits
    until that step gives it back; a run the executor does not execute keeps its slot throughout."""
    metadata, claimed = _materialized_in_one_pool_slot(tmp_path, slot_lender, slot_lender_job, executed_by)
    mine = executed_by != "dg.materialize"
    assert metadata["lent"] is mine and metadata["held_again"] is True
    assert (metadata["waited"] >= 0.9) is mine, metadata
    assert claimed == []


def _holder(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    """A started run holding the pool's one slot, its process as `tags` say."""
    storage = instance.event_log_storage
    storage.set_concurrency_slots("duckdb", 1)
    run = instance.create_run_for_job(dg.GraphDefinition("holder").to_job(), tags=tags)
    instance.handle_run_event(run.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name="holder"))
    assert storage.claim_concurrency_slot("duckdb", run.run_id, "trip_months").is_claimed
    return instance.get_run_by_id(run.run_id)


def _dead_process_tags(host: str) -> dict[str, str]:
    """Tags of a process that has ended (a real one, started and waited for)."""
    import subprocess
    import sys

    import psutil

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(child.pid).create_time()
    child.wait()
    return {
        execution.WORKER_HOST_TAG: host,
        execution.WORKER_PID_TAG: str(child.pid),
        **{execution.WORKER_STARTED_TAG: f"{started:.3f}"},
    }


@pytest.mark.integration
def test_a_step_waiting_behind_a_dead_holder_on_this_host_fails_it_and_takes_its_slot(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        dead = _holder(instance, _dead_process_tags(socket.gethostname()))
        waiter = instance.create_run_for_job(dg.GraphDefinition("waiter").to_job())
        with execution._InterruptibleClaims(instance, waiter) as claims:
            assert _claims_within(claims, 4.0)
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "is gone" in failure.message and waiter.run_id in failure.message, failure.message


@pytest.mark.integration
def test_a_live_holder_and_a_holder_on_another_host_keep_their_slot(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        launcher = execution.LocalRunLauncher()
        launcher.register_instance(instance)
        for tags in (execution.worker_tags(), _dead_process_tags("another-host")):
            storage = instance.event_log_storage
            holder = _holder(instance, tags)
            waiter = instance.create_run_for_job(dg.GraphDefinition("waiter").to_job())
            with execution._InterruptibleClaims(instance, waiter) as claims:
                assert not _claims_within(claims, 3.0)
            assert instance.get_run_by_id(holder.run_id).status == dg.DagsterRunStatus.STARTED
            assert storage.get_concurrency_info("duckdb").active_run_ids == {holder.run_id}
            # Run monitoring leaves both running: one lives, the other is for its own host to check.
            assert launcher.check_run_worker_health(holder).status.value == "RUNNING"
            storage.free_concurrency_slots_for_run(holder.run_id)
        dead_here = _holder(instance, _dead_process_tags(socket.gethostname()))
        health = launcher.check_run_worker_health(dead_here)
        assert health.status.value == "FAILED" and "is gone" in health.msg


@pytest.mark.integration
def test_dagster_s_own_in_process_runs_claim_pool_slots_and_the_warehouse_records_their_process(
    tmp_path: Path,
) -> None:
    """`dg.materialize` ignores the project's executor; Dagster's own in-process executor claims the slot and tags
    nothing (when that half fails, Dagster records the process itself: revisit `execution.record_worker`)."""
    import os

    from dagster._core.events import EngineEventData

    from taxi_assets.defs.resources import Warehouse

    seen = {}

    def holding(context: dg.AssetExecutionContext) -> None:
        claimed = context.instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots
        tags = context.instance.get_run_by_id(context.run_id).tags
        seen[context.asset_key.path[-1]] = (
            [slot.run_id for slot in claimed],
            {name: value for name, value in tags.items() if name.startswith("taxi/")},
        )

    @dg.asset(pool="duckdb")
    def bare(context: dg.AssetExecutionContext) -> None:
        holding(context)

    @dg.asset(pool="duckdb")
    def warehouse_user(context: dg.AssetExecutionContext, warehouse: Warehouse) -> None:
        holding(context)

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.event_log_storage.set_concurrency_slots("duckdb", 1)
        bare_run = dg.materialize([bare], instance=instance).run_id
        assert seen["bare"] == ([bare_run], {})
        warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"))
        job = dg.Definitions(assets=[warehouse_user], resources={"warehouse": warehouse})
        user_run = job.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance).run_id
        assert seen["warehouse_user"] == ([user_run], execution.worker_tags())
        assert execution.worker_process(instance, user_run)[0] == os.getpid()

        # A step process of another executor (a multiprocess executor's child) is not the run's worker: the run
        # stays untagged, and so is never freed while its parent runs.
        child_step = instance.create_run_for_job(dg.GraphDefinition("child_step").to_job())
        parent = os.getppid()
        instance.report_engine_event(
            f"Executing steps using multiprocess executor: parent process (pid: {parent})",
            child_step,
            EngineEventData.multiprocess(parent),
        )
        assert not execution.record_worker(instance, child_step)
        assert execution.WORKER_PID_TAG not in instance.get_run_by_id(child_step.run_id).tags


@pytest.mark.integration
def test_the_release_command_stops_a_stuck_run_and_frees_its_slot(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import psutil

    from tests.support.dagster_processes import prepare_dagster_home

    dagster_home = tmp_path / "dagster_home"
    prepare_dagster_home(dagster_home)
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        tags = {
            execution.WORKER_HOST_TAG: socket.gethostname(),
            execution.WORKER_PID_TAG: str(stuck.pid),
            execution.WORKER_STARTED_TAG: f"{psutil.Process(stuck.pid).create_time():.3f}",
        }
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            holder = _holder(instance, tags)
            released = subprocess.run(
                [sys.executable, "-m", "taxi_assets.execution", "release", holder.run_id, "--grace", "5"],
                cwd=REPO_ROOT,
                env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert released.returncode == 0 and "failed and its slots freed" in released.stdout, released
            assert stuck.wait(5) is not None
            assert instance.get_run_by_id(holder.run_id).status == dg.DagsterRunStatus.FAILURE
            assert not instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots
            (failure,) = instance.all_logs(holder.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert "released by hand" in failure.message, failure.message
    finally:
        stuck.kill()


@pytest.mark.integration
def test_code_that_no_longer_builds_leaves_the_warm_process_alive() -> None:
    """The warm process imports taxi_assets.run_worker; definitions that fail to build (here a setting that is not a
    number) must not kill it, or every launch would fail with a broken pipe instead of the run's own error."""
    env = {**os.environ, "TAXI_SERVICE_PORT": "not a port"}
    built = subprocess.run(
        [sys.executable, "-c", "from taxi_assets.definitions import defs; defs()"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 1 and "TAXI_SERVICE_PORT must be a whole number" in built.stderr
    warm = subprocess.run(
        [sys.executable, "-c", f"import {execution.RUN_WORKER_MODULE}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert warm.returncode == 0, warm.stderr
