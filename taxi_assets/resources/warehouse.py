"""The DuckDB warehouse: one file, one writer at a time (the `duckdb` concurrency pool)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster_duckdb import DuckDBResource

DUCKDB_POOL = "duckdb"


class Warehouse(DuckDBResource):
    """DuckDB file connection that creates its folder and always closes, even when the body fails.

    Connections are short: open one per step, never hold it across steps, so that the next run in the
    `duckdb` pool finds the file free.
    """

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.database != ":memory:":
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        conn = duckdb.connect(self.database, config={"custom_user_agent": "taxi-monitoring", **self.connection_config})
        try:
            yield conn
        finally:
            conn.close()
