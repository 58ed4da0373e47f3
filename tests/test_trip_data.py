"""Trip-data assets materialized from the real TLC files, and every way a month can be bad."""

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from taxi_assets.core.tlc import RAW_COLUMNS
from taxi_assets.defs.trip_data.assets import taxi_zones, trip_months
from tests.support.platform import MANIFEST_ROWS, TLC_DIR, platform_resources

pytestmark = pytest.mark.integration

# Rows with 1 <= duration <= 60 minutes (the seed filter), counted independently with DuckDB on the files.
TRIPS_ROWS = {"2021-01": 73908, "2022-01": 59603, "2023-03": 69392}


def materialize(instance: dg.DagsterInstance, month: str, assets=(trip_months,), **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(assets), partition_key=month, instance=instance, resources=platform_resources(), **kwargs
    )


def materialization(result: dg.ExecuteInProcessResult, table: str) -> dg.AssetMaterialization:
    """The one materialization of `table` in a one-month run."""
    (event,) = [m for m in result.asset_materializations_for_node("trip_months") if m.asset_key.path == [table]]
    return event


def query(path: Path, sql: str, params: dict | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(sql, params or {}).fetchall()


def month_rows(platform_env: Path, table: str, month: str) -> int:
    return query(platform_env / "warehouse.duckdb", f"SELECT count(*) FROM {table} WHERE month = $m", {"m": month})[0][
        0
    ]


@pytest.fixture
def source_dir(platform_env: Path, tlc_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable trip-data directory holding a copy of 2021-01, so tests can spoil it."""
    source = platform_env / "source"
    source.mkdir()
    shutil.copy(tlc_dir / "green_tripdata_2021-01.parquet", source)
    shutil.copy(tlc_dir / "taxi_zone_lookup.csv", source)
    monkeypatch.setenv("TAXI_TRIP_DATA_URL", str(source))
    return source


def test_months_of_every_year_load_into_one_schema(instance, platform_env):
    for month in TRIPS_ROWS:
        result = materialize(instance, month)
        assert result.success
        raw_meta = materialization(result, "raw_trips").metadata
        assert raw_meta["dagster/row_count"].value == MANIFEST_ROWS[month]
        assert 0 < raw_meta["pickups_outside_month_share"].value < 0.001
        assert all(check.passed for check in result.get_asset_check_evaluations())
        assert month_rows(platform_env, "raw_trips", month) == MANIFEST_ROWS[month]
        assert month_rows(platform_env, "trips", month) == TRIPS_ROWS[month]
    # 2023-03 ships int32 IDs, int64 passenger_count and a double ehail_fee: all land in the same columns.
    types = dict(query(platform_env / "warehouse.duckdb", "SELECT column_name, column_type FROM (DESCRIBE raw_trips)"))
    assert {name: types[name] for name in RAW_COLUMNS} == RAW_COLUMNS
    per_month = query(
        platform_env / "warehouse.duckdb",
        "SELECT month, count(*), min(duration) >= 1, max(duration) <= 60 FROM trips GROUP BY month ORDER BY month",
    )
    assert per_month == [(month, rows, True, True) for month, rows in TRIPS_ROWS.items()]


def test_rematerializing_a_month_replaces_exactly_that_month(instance, platform_env):
    materialize(instance, "2021-01")
    materialize(instance, "2022-01")
    materialize(instance, "2021-01")
    assert month_rows(platform_env, "raw_trips", "2021-01") == MANIFEST_ROWS["2021-01"]
    assert month_rows(platform_env, "raw_trips", "2022-01") == MANIFEST_ROWS["2022-01"]
    assert month_rows(platform_env, "trips", "2021-01") == TRIPS_ROWS["2021-01"]


def test_taxi_zones_load_the_lookup(instance, platform_env):
    result = dg.materialize([taxi_zones], instance=instance, resources=platform_resources())
    assert result.asset_materializations_for_node("taxi_zones")[0].metadata["dagster/row_count"].value == 265
    assert query(platform_env / "warehouse.duckdb", "SELECT Borough, Zone FROM taxi_zones WHERE LocationID = 1") == [
        ("EWR", "Newark Airport")
    ]


def spoil_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def spoil_not_parquet(path: Path) -> None:
    # What a misconfigured bucket sends instead of the file.
    path.write_text('<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>')


def spoil_schema(path: Path) -> None:
    duckdb.sql(f"COPY (SELECT VendorID, trip_distance FROM read_parquet('{path}')) TO '{path}.tmp' (FORMAT parquet)")
    Path(f"{path}.tmp").replace(path)


def spoil_pages(path: Path) -> None:
    """Garble the column data but keep the footer, so only reading the rows finds out."""
    data = bytearray(path.read_bytes())
    for offset in range(100, len(data) // 2, 997):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (spoil_truncated, "is not a readable parquet file"),
        (spoil_not_parquet, "is not a readable parquet file"),
        (spoil_schema, "lacks the TLC green columns"),
        (spoil_pages, "DuckDB could not load"),
    ],
)
def test_a_bad_file_fails_the_month_and_keeps_the_loaded_rows(instance, platform_env, source_dir, spoil, message):
    assert materialize(instance, "2021-01").success
    spoil(source_dir / "green_tripdata_2021-01.parquet")

    result = materialize(instance, "2021-01", raise_on_error=False)

    assert not result.success
    error = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "2021-01" in error and str(source_dir) in error and message in error
    assert month_rows(platform_env, "raw_trips", "2021-01") == MANIFEST_ROWS["2021-01"]
    assert month_rows(platform_env, "trips", "2021-01") == TRIPS_ROWS["2021-01"]


def test_a_month_missing_from_the_directory_fails_cleanly(instance, platform_env):
    result = materialize(instance, "2021-04", raise_on_error=False)
    assert not result.success
    error = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "2021-04: no file at" in error and "green_tripdata_2021-04.parquet" in error
    assert not (platform_env / "cache").exists() or not any((platform_env / "cache").iterdir())


def sample_month(tlc_dir: Path, month: str, target: Path, rows: int = 300) -> None:
    """`rows` real rides of `month` as a TLC file at `target`: a valid month that differs from the published one."""
    source = tlc_dir / f"green_tripdata_{month}.parquet"
    duckdb.sql(
        f"COPY (SELECT * FROM read_parquet('{source}') USING SAMPLE {rows} ROWS (reservoir, 7)) "
        f"TO '{target}' (FORMAT parquet)"
    )


RANGE_TAGS = {"dagster/asset_partition_range_start": "2021-01", "dagster/asset_partition_range_end": "2021-04"}


def test_a_range_with_a_missing_and_a_corrupt_month_lands_the_good_months_and_keeps_the_bad_ones(
    instance, platform_env, tlc_dir, source_dir
):
    # 2021-02 holds 300 rides from an earlier load; its file then turns corrupt. 2021-04 was never published.
    sample_month(tlc_dir, "2021-02", source_dir / "green_tripdata_2021-02.parquet")
    assert materialize(instance, "2021-02").success
    previous_trips = month_rows(platform_env, "trips", "2021-02")
    spoil_truncated(source_dir / "green_tripdata_2021-02.parquet")
    shutil.copy(tlc_dir / "green_tripdata_2021-03.parquet", source_dir)

    # What a backfill's ranged run executes: the four months in one run.
    result = dg.materialize(
        [trip_months], instance=instance, resources=platform_resources(), tags=RANGE_TAGS, raise_on_error=False
    )

    assert not result.success
    landed = {(m.asset_key.path[-1], m.partition) for m in result.asset_materializations_for_node("trip_months")}
    assert landed == {(table, month) for table in ("raw_trips", "trips") for month in ("2021-01", "2021-03")}
    # One result per check over the run's good months: six checks of each table, each naming both months.
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 12 and all(check.passed for check in checks)
    assert {check.metadata["partitions"].value for check in checks} == {2}
    (failure,) = result.get_step_failure_events()
    lines = str(failure.step_failure_data.error).splitlines()
    assert any(
        line.startswith("raw_trips[2021-02]: 2021-02: ") and "is not a readable parquet file" in line for line in lines
    )
    assert any(line.startswith("raw_trips[2021-04]: 2021-04: no file at") for line in lines)
    assert any(line.startswith("trips[2021-02]: not attempted") for line in lines)
    assert "2 of 4 partitions failed" in lines[0]
    assert [month_rows(platform_env, "raw_trips", month) for month in ("2021-01", "2021-02", "2021-03", "2021-04")] == [
        MANIFEST_ROWS["2021-01"],
        300,
        MANIFEST_ROWS["2021-03"],
        0,
    ]
    assert month_rows(platform_env, "trips", "2021-02") == previous_trips
    assert month_rows(platform_env, "trips", "2021-01") == TRIPS_ROWS["2021-01"]
    assert instance.get_materialized_partitions(dg.AssetKey("raw_trips")) == {"2021-01", "2021-02", "2021-03"}


@pytest.fixture
def http_source(source_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`source_dir` served over HTTP on loopback, as TLC's trip-data address would serve it."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(source_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("TAXI_TRIP_DATA_URL", url + "/green_tripdata_{month}.parquet")
    monkeypatch.setenv("TAXI_ZONE_LOOKUP_URL", url + "/taxi_zone_lookup.csv")
    yield url
    server.shutdown()


def test_downloads_are_cached_and_bad_downloads_never_are(instance, platform_env, source_dir, http_source):
    cache = platform_env / "cache"
    first = materialize(instance, "2021-01", assets=(trip_months, taxi_zones))
    assert first.success
    assert sorted(path.name for path in cache.iterdir()) == ["green_tripdata_2021-01.parquet", "taxi_zone_lookup.csv"]
    assert materialization(first, "raw_trips").metadata["source"].value.startswith(http_source)

    missing = materialize(instance, "2021-05", raise_on_error=False)
    assert "answered HTTP 404" in str(missing.get_step_failure_events()[0].step_failure_data.error)

    shutil.copy(source_dir / "green_tripdata_2021-01.parquet", source_dir / "green_tripdata_2021-02.parquet")
    spoil_truncated(source_dir / "green_tripdata_2021-02.parquet")
    truncated = materialize(instance, "2021-02", raise_on_error=False)
    assert "is not a readable parquet file" in str(truncated.get_step_failure_events()[0].step_failure_data.error)
    assert sorted(path.name for path in cache.iterdir()) == ["green_tripdata_2021-01.parquet", "taxi_zone_lookup.csv"]


def spoil_location_type(path: Path) -> None:
    """PULocationID as text, as an export through a spreadsheet gives it: the footer and column names pass."""
    rewrite(path, "'zone ' || PULocationID AS PULocationID")


def spoil_timestamp_type(path: Path) -> None:
    """Pickup times as int64 microseconds, as some writers store timestamps."""
    rewrite(path, "epoch_us(lpep_pickup_datetime) AS lpep_pickup_datetime")


def rewrite(path: Path, replacement: str) -> None:
    duckdb.sql(f"COPY (SELECT * REPLACE ({replacement}) FROM read_parquet('{path}')) TO '{path}.tmp' (FORMAT parquet)")
    Path(f"{path}.tmp").replace(path)


def publish_another_month(path: Path) -> None:
    """The 2021-01 file published under another month's name."""
    shutil.copy(TLC_DIR / "green_tripdata_2021-01.parquet", path)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (spoil_location_type, "DuckDB could not load"),
        (spoil_timestamp_type, "DuckDB could not load"),
        (spoil_pages, "DuckDB could not load"),
        (publish_another_month, "holds another month's trips"),
    ],
)
def test_a_download_that_does_not_load_is_never_cached(instance, platform_env, source_dir, http_source, spoil, message):
    month, cache = "2021-02", platform_env / "cache"
    served = source_dir / f"green_tripdata_{month}.parquet"
    shutil.copy(TLC_DIR / served.name, served)
    spoil(served)

    failed = materialize(instance, month, selection=["raw_trips"], raise_on_error=False)

    error = str(failed.get_step_failure_events()[0].step_failure_data.error)
    assert month in error and http_source in error and message in error
    assert not cache.exists() or list(cache.iterdir()) == [], "a file that did not load was cached"
    # Once the source is fixed, the next run downloads it again and loads it.
    shutil.copy(TLC_DIR / served.name, served)
    assert materialize(instance, month, selection=["raw_trips"]).success
    assert [path.name for path in cache.iterdir()] == [served.name]
    assert month_rows(platform_env, "raw_trips", month) == MANIFEST_ROWS[month]


def test_a_cached_file_that_does_not_load_is_dropped(instance, platform_env, source_dir, http_source):
    """A bad file cached by an earlier version stays no longer than the run that finds it bad."""
    cached = platform_env / "cache" / "green_tripdata_2021-01.parquet"
    cached.parent.mkdir()
    shutil.copy(source_dir / cached.name, cached)
    spoil_timestamp_type(cached)

    failed = materialize(instance, "2021-01", selection=["raw_trips"], raise_on_error=False)

    assert "DuckDB could not load" in str(failed.get_step_failure_events()[0].step_failure_data.error)
    assert not cached.exists()
    assert materialize(instance, "2021-01", selection=["raw_trips"]).success and cached.exists()


def test_another_months_file_fails_the_month_and_keeps_its_rows(instance, platform_env, source_dir):
    february = source_dir / "green_tripdata_2021-02.parquet"
    shutil.copy(TLC_DIR / february.name, february)
    assert materialize(instance, "2021-02").success
    publish_another_month(february)

    result = materialize(instance, "2021-02", raise_on_error=False)

    assert not result.success
    (error,) = [str(event.step_failure_data.error) for event in result.get_step_failure_events()]
    assert f"2021-02: {february} holds another month's trips: 0.0% of its {MANIFEST_ROWS['2021-01']} pickups" in error
    assert "fall in 2021-02 (most in 2021-01; at least 50% expected)" in error
    assert month_rows(platform_env, "raw_trips", "2021-02") == MANIFEST_ROWS["2021-02"]
    assert month_rows(platform_env, "trips", "2021-02") > 0


def test_checks_fire_on_doctored_data(instance, platform_env, source_dir):
    path = source_dir / "green_tripdata_2021-01.parquet"
    duckdb.sql(
        f"""COPY (SELECT * REPLACE (
                CASE WHEN VendorID = 2 AND trip_distance > 5 THEN 300 ELSE PULocationID END AS PULocationID,
                CASE WHEN fare_amount > 20 THEN -trip_distance ELSE trip_distance END AS trip_distance,
                CASE WHEN tip_amount > 3 THEN -fare_amount ELSE fare_amount END AS fare_amount,
                CASE WHEN tolls_amount > 0 THEN NULL ELSE DOLocationID END AS DOLocationID,
                CASE WHEN extra > 0.5 THEN lpep_pickup_datetime - INTERVAL 40 DAY ELSE lpep_pickup_datetime END
                    AS lpep_pickup_datetime)
            FROM read_parquet('{path}')) TO '{path}.tmp' (FORMAT parquet)"""
    )
    Path(f"{path}.tmp").replace(path)

    result = materialize(instance, "2021-01", raise_on_error=False)

    failed = {(c.asset_key.path[-1], c.check_name) for c in result.get_asset_check_evaluations() if not c.passed}
    for table in ("raw_trips", "trips"):
        for check in ("key_columns_not_null", "location_ids_in_range", "no_negative_distance", "few_negative_fares"):
            assert (table, check) in failed
    assert ("raw_trips", "pickups_in_month") in failed
    assert ("raw_trips", "tlc_schema") not in failed
