"""TLC green-taxi files: where a month lives, whether a file is one, and how it becomes one table schema.

Pure logic: no Dagster here, so the rules are unit-tested on their own and shared by every caller.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# The 20 green-taxi columns in TLC order, with the one type each gets in DuckDB. TLC changed physical types
# over the years (2023-03 onwards: int32 IDs, int64 passenger_count, double ehail_fee), so every load casts.
RAW_COLUMNS: dict[str, str] = {
    "VendorID": "INTEGER",
    "lpep_pickup_datetime": "TIMESTAMP",
    "lpep_dropoff_datetime": "TIMESTAMP",
    "store_and_fwd_flag": "VARCHAR",
    "RatecodeID": "INTEGER",
    "PULocationID": "INTEGER",
    "DOLocationID": "INTEGER",
    "passenger_count": "INTEGER",
    "trip_distance": "DOUBLE",
    "fare_amount": "DOUBLE",
    "extra": "DOUBLE",
    "mta_tax": "DOUBLE",
    "tip_amount": "DOUBLE",
    "tolls_amount": "DOUBLE",
    "ehail_fee": "DOUBLE",
    "improvement_surcharge": "DOUBLE",
    "total_amount": "DOUBLE",
    "payment_type": "INTEGER",
    "trip_type": "INTEGER",
    "congestion_surcharge": "DOUBLE",
}

ZONE_COLUMNS = ["LocationID", "Borough", "Zone", "service_zone"]

MIN_DURATION_MINUTES = 1.0
MAX_DURATION_MINUTES = 60.0
MAX_LOCATION_ID = 265

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class TripDataError(Exception):
    """A month's file is missing, unreadable or not a TLC green-taxi file."""


@dataclass(frozen=True)
class FileSummary:
    rows: int
    bytes: int


def check_month(month: str) -> str:
    if not _MONTH.match(month):
        raise ValueError(f"month must look like YYYY-MM, got {month!r}")
    return month


def source_location(template: str, month: str) -> str:
    """Where `month` lives: a URL, a `file://` URL or a local path.

    A template without `{month}` names a directory that holds files under TLC's own names.
    """
    check_month(month)
    if "{month}" in template:
        return template.format(month=month)
    return str(Path(template) / f"green_tripdata_{month}.parquet")


def is_remote(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def local_path(location: str) -> Path:
    return Path(location.removeprefix("file://"))


def validate_trip_file(path: Path, month: str, source: str) -> FileSummary:
    """Fail with a message naming the month, the source and the problem unless `path` is a TLC green file."""
    import pyarrow.parquet as pq  # the service imports this module for MAX_LOCATION_ID, never for files

    try:
        metadata = pq.read_metadata(path)
    except Exception as error:  # pyarrow raises several types for truncated or foreign files
        raise TripDataError(f"{month}: {source} is not a readable parquet file ({error})") from error
    missing = [name for name in RAW_COLUMNS if name not in metadata.schema.names]
    if missing:
        raise TripDataError(f"{month}: {source} lacks the TLC green columns {missing}")
    return FileSummary(rows=metadata.num_rows, bytes=path.stat().st_size)


# A published month's pickups fall inside it but for a few strays (at most 0.1 % in each month of 2021-2023); a
# file of another month published under its name has almost none inside. A majority is the line between the two.
MIN_PICKUPS_IN_MONTH_SHARE = 0.5

# Over a table of one month's rows in the raw_trips schema: pickups inside $month, all rows, the most common month.
PICKUP_MONTHS_SQL = """
SELECT count(*) FILTER (WHERE strftime(lpep_pickup_datetime, '%Y-%m') = $month), count(*),
    mode(strftime(lpep_pickup_datetime, '%Y-%m'))
FROM {table}
"""


def check_pickups_in_month(month: str, source: str, inside: int, rows: int, most_common: str | None) -> float:
    """The share of a file's pickups that fall inside `month`; fails, naming month, source and share, when most
    fall outside (another month's file published under this month's name)."""
    share = inside / rows if rows else 1.0
    if share < MIN_PICKUPS_IN_MONTH_SHARE:
        raise TripDataError(
            f"{month}: {source} holds another month's trips: {share:.1%} of its {rows} pickups fall in {month} "
            f"(most in {most_common}; at least {MIN_PICKUPS_IN_MONTH_SHARE:.0%} expected), so it is not loaded"
        )
    return share


def raw_select_sql(parquet_path: str) -> str:
    """SELECT turning one TLC file into the `raw_trips` schema (month comes first, as parameter $month)."""
    casts = ",\n    ".join(f'CAST("{name}" AS {sql_type}) AS "{name}"' for name, sql_type in RAW_COLUMNS.items())
    escaped = parquet_path.replace("'", "''")
    return f"SELECT $month AS month,\n    {casts}\nFROM read_parquet('{escaped}')"


# Duration in minutes with the sub-second part kept, exactly as the course model computed it in pandas.
_DURATION = "date_diff('microsecond', lpep_pickup_datetime, lpep_dropoff_datetime) / 60e6"

TRIPS_SELECT_SQL = f"""
SELECT month,
    lpep_pickup_datetime AS pickup_datetime,
    lpep_dropoff_datetime AS dropoff_datetime,
    PULocationID,
    DOLocationID,
    CAST(passenger_count AS DOUBLE) AS passenger_count,
    trip_distance,
    fare_amount,
    total_amount,
    {_DURATION} AS duration
FROM raw_trips
WHERE month = $month
    AND {_DURATION} BETWEEN {MIN_DURATION_MINUTES} AND {MAX_DURATION_MINUTES}
"""

# Why each raw row does not reach `trips`; the seed filter is on duration alone.
TRIPS_DROP_REASONS_SQL = f"""
SELECT
    count(*) FILTER (WHERE lpep_pickup_datetime IS NULL OR lpep_dropoff_datetime IS NULL) AS missing_timestamps,
    count(*) FILTER (WHERE {_DURATION} < {MIN_DURATION_MINUTES}) AS shorter_than_1_min,
    count(*) FILTER (WHERE {_DURATION} > {MAX_DURATION_MINUTES}) AS longer_than_60_min
FROM raw_trips
WHERE month = $month
"""


# TLC's CloudFront answers 403 (not 404) for a month it has not published.
_NOT_PUBLISHED = (403, 404)


def published_version(location: str, timeout: float = 10.0) -> str | None:
    """A short fingerprint of the file at `location` when it exists (size and modification time, or the HTTP
    ETag / Last-Modified and length), None when it does not. Only metadata is read: an HTTP HEAD or a stat.

    A changed file gets a new fingerprint, so a month re-published (or still being copied when first seen) is
    loaded again. Network failures other than "not there" raise OSError: the caller cannot tell.
    """
    if not is_remote(location):
        path = local_path(location)
        if not path.is_file():
            return None
        stat = path.stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}"
    request = urllib.request.Request(location, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            headers = response.headers
    except urllib.error.HTTPError as error:
        if error.code in _NOT_PUBLISHED:
            return None
        raise OSError(f"{location} answered HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise OSError(f"could not reach {location} ({error.reason})") from error
    tag = headers.get("ETag") or headers.get("Last-Modified") or ""
    return f"{headers.get('Content-Length', '')}-{tag.strip(chr(34))}"
