"""What the instance records of an asset's latest materialization: the one query sensors and assets read their
state from (promotion inputs, retries, ingest watermarks, dashboards' figures)."""

import dagster as dg


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None
) -> dg.EventLogRecord | None:
    """The record of the latest materialization of `key` (of `partition` when given), or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0] if records else None


def metadata_values(record: dg.EventLogRecord) -> dict:
    """A materialization record's metadata, as plain values."""
    return {name: entry.value for name, entry in record.asset_materialization.metadata.items()}


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> dict | None:
    """The metadata of the latest materialization of `key` (of `partition`), or None."""
    record = latest_materialization(instance, key, partition)
    return metadata_values(record) if record else None
