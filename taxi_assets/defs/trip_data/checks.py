"""Data-quality checks shared by the monthly trip tables, evaluated on the partition just written."""

import dagster as dg
import duckdb

from taxi_assets.core.tlc import MAX_LOCATION_ID

# Published TLC months carry a few refunds (negative fares, ~0.3 %) and stray timestamps (< 0.05 %): a
# user wants to hear when that grows, not to stop the pipeline for it.
TOLERATED_SHARE = 0.01

CHECK_DESCRIPTIONS = {
    "key_columns_not_null": "Pickup/dropoff times and location IDs are never null (ERROR).",
    "location_ids_in_range": f"PULocationID and DOLocationID lie in 1..{MAX_LOCATION_ID} (ERROR).",
    "no_negative_distance": "trip_distance is never negative (ERROR).",
    "few_negative_fares": f"At most {TOLERATED_SHARE:.0%} of fares are negative, as refunds are (WARN).",
    "pickups_in_month": (
        f"At most {TOLERATED_SHARE:.0%} of pickups fall outside the partition's month (WARN); a file with most of them "
        "outside is another month's and is not loaded at all."
    ),
}
_SEVERITY = {"few_negative_fares": dg.AssetCheckSeverity.WARN, "pickups_in_month": dg.AssetCheckSeverity.WARN}


def quality_check_specs(asset: str, extra: dict[str, str] | None = None) -> list[dg.AssetCheckSpec]:
    descriptions = {**CHECK_DESCRIPTIONS, **(extra or {})}
    return [dg.AssetCheckSpec(name, asset=asset, description=text) for name, text in descriptions.items()]


def quality_check_results(
    conn: duckdb.DuckDBPyConnection, table: str, month: str, pickup: str, dropoff: str
) -> list[dg.AssetCheckResult]:
    """Evaluate every shared check on one month of `table` in a single scan."""
    rows, null_keys, bad_locations, negative_distance, negative_fares, outside_month = conn.execute(
        f"""
        SELECT count(*),
            count(*) FILTER (WHERE {pickup} IS NULL OR {dropoff} IS NULL
                OR PULocationID IS NULL OR DOLocationID IS NULL),
            count(*) FILTER (WHERE PULocationID NOT BETWEEN 1 AND {MAX_LOCATION_ID}
                OR DOLocationID NOT BETWEEN 1 AND {MAX_LOCATION_ID}),
            count(*) FILTER (WHERE trip_distance < 0),
            count(*) FILTER (WHERE fare_amount < 0),
            count(*) FILTER (WHERE strftime({pickup}, '%Y-%m') <> month)
        FROM {table} WHERE month = $month
        """,
        {"month": month},
    ).fetchone()
    counts = {
        "key_columns_not_null": null_keys,
        "location_ids_in_range": bad_locations,
        "no_negative_distance": negative_distance,
        "few_negative_fares": negative_fares,
        "pickups_in_month": outside_month,
    }
    results = []
    for name, count in counts.items():
        share = count / rows if rows else 0.0
        limit = TOLERATED_SHARE if name in _SEVERITY else 0.0
        results.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=share <= limit,
                severity=_SEVERITY.get(name, dg.AssetCheckSeverity.ERROR),
                metadata={"month": month, "offending_rows": count, "share": float(share)},
            )
        )
    return results
