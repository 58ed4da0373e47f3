"""The floor under a trip-data backfill: the same DuckDB loads with no orchestrator around them.

    .venv/bin/python bench/backfill_floor.py WAREHOUSE.duckdb TLC_DIR MONTH [MONTH ...]

For each month, as the assets do it: one connection, then `raw_trips` replaced by the TLC file (delete + insert
with the normalising casts) in one transaction and `trips` rebuilt from it with the seed filter in another.
The same SQL as the assets (taxi_assets.core). Prints the seconds the loads took; bench_backfill.py times the
whole process, interpreter start included, as it times Dagster's run processes.
"""

import sys
import time
from pathlib import Path

import duckdb

from taxi_assets.core.tlc import TRIPS_SELECT_SQL, raw_select_sql
from taxi_assets.core.warehouse import RAW_TRIPS_DDL, TRIPS_DDL, replace_partition


def load(warehouse: str, tlc_dir: Path, months: list[str]) -> int:
    rows = 0
    for month in months:
        with duckdb.connect(warehouse) as conn:
            conn.execute(RAW_TRIPS_DDL)
            conn.execute(TRIPS_DDL)
            path = str(tlc_dir / f"green_tripdata_{month}.parquet")
            rows += replace_partition(conn, "month", month, {"raw_trips": raw_select_sql(path)})["raw_trips"]
            replace_partition(conn, "month", month, {"trips": TRIPS_SELECT_SQL})
    return rows


if __name__ == "__main__":
    started = time.perf_counter()
    loaded = load(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
    print(f"{loaded} {time.perf_counter() - started:.3f}")
