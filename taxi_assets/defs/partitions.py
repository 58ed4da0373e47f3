"""Partitions shared by the capabilities: calendar months of TLC data and UTC days of the prediction log, and how
one run materializes a range of partitions while each partition succeeds or fails on its own."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from taxi_assets import settings

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=settings.current().start_month, fmt="%Y-%m")

# Today's partition exists (end_offset=1): the log of the current day is ingested while it grows.
prediction_days = dg.DailyPartitionsDefinition(start_date=settings.current().predlog_start_day, end_offset=1)

# A backfill hands an asset with this policy up to a year of contiguous months per run. A run costs a process and
# a code load (seconds); a month of TLC data costs a quarter of a second in DuckDB, so one run per month spent most
# of a backfill starting runs. Twelve, not unbounded: a run holds the DuckDB pool while it loads its whole range, and
# between two runs the queue lets other warehouse work (the prediction-log ingest) through. A run's partitions are
# one range, so Dagster splits a backfill at every gap: the ten local months (2021-01..03, 2022-01..03,
# 2023-01..04) are three runs whatever this limit.
MONTHS_PER_RUN = 12
monthly_backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=MONTHS_PER_RUN)


@dataclass(frozen=True)
class PartitionResult:
    """What one asset's work on one partition reports: materialization metadata and its checks' results."""

    metadata: Mapping[str, Any]
    checks: Sequence[dg.AssetCheckResult] = field(default_factory=list)


PartitionWork = Callable[[str], PartitionResult]


@dataclass(frozen=True)
class PartitionsOutcome:
    """What one run did to its partitions (`materialize_partitions`), for Dagster to record (`events`)."""

    context: dg.AssetExecutionContext
    selected: list[dg.AssetKey]
    done: list[tuple[dg.AssetKey, str, PartitionResult]]
    failures: dict[str, list[str]]

    def events(self) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckResult]:
        """The step's results: when all succeeded, one MaterializeResult per asset (Dagster records one
        materialization per partition with that partition's metadata); when some failed, the materializations of
        those that succeeded, then a failure with one line per failed partition. Check results are combined per
        check over the run's partitions (identical to the partition's own result when the run has one)."""
        context, done, failures = self.context, self.done, self.failures
        results_by_check: dict[dg.AssetCheckKey, list[tuple[str, dg.AssetCheckResult]]] = {}
        for key, partition, result in done:
            for check in result.checks:
                results_by_check.setdefault(dg.AssetCheckKey(key, check.check_name), []).append((partition, check))
        checks = [
            _combined(check_key, results)
            for check_key, results in results_by_check.items()
            if check_key in context.selected_asset_check_keys
        ]
        if failures:
            for key, partition, result in done:
                yield dg.AssetMaterialization(asset_key=key, partition=partition, metadata=dict(result.metadata))
            yield from checks
            header = (
                f"{len(failures)} of {len(context.partition_keys)} partitions failed and keep their previous rows; "
                "the others are materialized:\n"
                if len(context.partition_keys) > 1
                else ""
            )
            raise dg.Failure(description=header + "\n".join(line for lines in failures.values() for line in lines))
        for key in self.selected:
            yield dg.MaterializeResult(asset_key=key, check_results=[c for c in checks if c.asset_key == key])


def materialize_partitions(
    context: dg.AssetExecutionContext, work: Mapping[dg.AssetKey, PartitionWork]
) -> PartitionsOutcome:
    """Materialize every partition of the run (one, or a backfill's range), partition by partition, the selected
    assets of `work` in its order within a partition (later ones read what earlier ones wrote); each (asset,
    partition) is its own unit of success, so its work must commit on its own (`replace_partition`). The step
    yields the outcome's `events()` once the work is over: the warehouse can be closed (and its pool slot given
    back) before the dozens of events are recorded.

    A failure of one (asset, partition) is recorded and the next partition goes on; the later assets of that
    partition are not attempted. When some fail, the ones that succeeded are recorded explicitly (so a backfill
    counts them as materialized and retries only the rest) and the step then fails.

    A run that dies midway (killed, out of memory) records no materialization although the partitions finished
    before are committed in the warehouse; materializing them again replaces them with the same rows.
    """
    selected = [key for key in work if key in context.selected_asset_keys]
    done: list[tuple[dg.AssetKey, str, PartitionResult]] = []
    failures: dict[str, list[str]] = {}
    for partition in context.partition_keys:
        for position, key in enumerate(selected):
            name = f"{key.to_user_string()}[{partition}]"
            try:
                result = work[key](partition)
            except Exception as error:  # any failure belongs to this partition alone
                context.log.error(f"{name} failed:\n{traceback.format_exc()}")
                failures[partition] = [f"{name}: {error}"] + [
                    f"{later.to_user_string()}[{partition}]: not attempted after {name} failed"
                    for later in selected[position + 1 :]
                ]
                break
            context.add_asset_metadata(dict(result.metadata), asset_key=key, partition_key=partition)
            done.append((key, partition, result))
        else:
            # One line per partition: on SQLite storage every log line is an event written at ~10-40 ms.
            context.log.info(f"{partition}: {', '.join(key.to_user_string() for key in selected)} committed")
    return PartitionsOutcome(context, selected, done, failures)


def _combined(check_key: dg.AssetCheckKey, results: list[tuple[str, dg.AssetCheckResult]]) -> dg.AssetCheckResult:
    """One result for the check over the run's partitions: passed when every partition passed; the metadata of the
    partition itself when there is one, else the failing partitions and a table of every partition's metadata."""
    first = results[0][1]
    if len(results) == 1:
        metadata = dict(first.metadata)
    else:
        columns = list(dict.fromkeys(column for _, result in results for column in result.metadata))
        rows = [
            f"| {partition} | {'yes' if result.passed else 'NO'} | "
            + " | ".join(_cell(result.metadata.get(column)) for column in columns)
            + " |"
            for partition, result in results
        ]
        table = "\n".join(
            [f"| partition | passed | {' | '.join(columns)} |", "|---|---|" + "---:|" * len(columns), *rows]
        )
        metadata = {
            "partitions": len(results),
            "failing_partitions": ", ".join(p for p, result in results if not result.passed) or "none",
            "by_partition": dg.MetadataValue.md(table),
        }
    return dg.AssetCheckResult(
        asset_key=check_key.asset_key,
        check_name=check_key.name,
        passed=all(result.passed for _, result in results),
        severity=first.severity,
        metadata=metadata,
    )


def _cell(value: object) -> str:
    raw = getattr(value, "value", value)
    return f"{raw:.4g}" if isinstance(raw, float) else str(raw if raw is not None else "")
