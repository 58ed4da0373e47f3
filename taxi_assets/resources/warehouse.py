"""The DuckDB warehouse: one file, one writer at a time (the `duckdb` concurrency pool)."""

from collections.abc import Iterator, Mapping
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


def replace_rows(conn: duckdb.DuckDBPyConnection, table: str, column: str, key: str, select_sql: str) -> int:
    """Replace the rows of `table` whose `column` is `key` by those of `select_sql` (with `$<column>` bound to
    `key`), inside the caller's transaction; return how many rows the partition holds now."""
    params = {column: key}
    conn.execute(f"DELETE FROM {table} WHERE {column} = ${column}", params)
    conn.execute(f"INSERT INTO {table} {select_sql}", params)
    (rows,) = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = ${column}", params).fetchone()
    return rows


def replace_partition(
    conn: duckdb.DuckDBPyConnection, column: str, key: str, selects: Mapping[str, str]
) -> dict[str, int]:
    """Swap one partition (`column` = `key`) of every table in `selects` for its select's rows, in one transaction.

    Readers see the old partition or the new one, never a mix; a failure or a crash before the commit leaves
    every table with its previous rows. Returns the rows per table.
    """
    conn.execute("BEGIN TRANSACTION")
    try:
        rows = {table: replace_rows(conn, table, column, key, select_sql) for table, select_sql in selects.items()}
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return rows
