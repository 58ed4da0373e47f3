"""TLC file rules on the real months: where the line between a month's own file and another month's file lies."""

import duckdb
import pytest

from taxi_assets.core.tlc import (
    MIN_PICKUPS_IN_MONTH_SHARE,
    PICKUP_MONTHS_SQL,
    TripDataError,
    check_pickups_in_month,
    raw_select_sql,
)
from tests.support.platform import MANIFEST_ROWS, TLC_DIR

pytestmark = pytest.mark.unit


def share_in(file_month: str, partition: str) -> float:
    """Share of the pickups of `file_month`'s file that fall in `partition`, by the SQL raw_trips uses."""
    table = f"({raw_select_sql(str(TLC_DIR / f'green_tripdata_{file_month}.parquet'))})"
    with duckdb.connect() as conn:
        ((inside, rows, _),) = conn.execute(PICKUP_MONTHS_SQL.format(table=table), {"month": partition}).fetchall()
    return inside / rows


def test_the_pickup_share_threshold_separates_each_months_file_from_every_other_month() -> None:
    shares = {(file, partition): share_in(file, partition) for file in MANIFEST_ROWS for partition in MANIFEST_ROWS}
    own = min(share for (file, partition), share in shares.items() if file == partition)
    other = max(share for (file, partition), share in shares.items() if file != partition)
    print(f"\npickups inside the month: own file >= {own:.3%}, another month's file <= {other:.3%}")
    assert own > 0.99 > MIN_PICKUPS_IN_MONTH_SHARE > 0.01 > other


def test_a_file_mostly_outside_its_month_is_refused_naming_month_source_and_share() -> None:
    with pytest.raises(TripDataError) as refused:
        check_pickups_in_month("2021-02", "https://tlc/green_tripdata_2021-02.parquet", 12, 1000, "2021-01")
    assert str(refused.value) == (
        "2021-02: https://tlc/green_tripdata_2021-02.parquet holds another month's trips: 1.2% of its 1000 pickups "
        "fall in 2021-02 (most in 2021-01; at least 50% expected), so it is not loaded"
    )
    assert check_pickups_in_month("2021-02", "f", 999, 1000, "2021-02") == pytest.approx(0.999)
    assert check_pickups_in_month("2021-02", "f", 500, 1000, "2021-02") == 0.5
    assert check_pickups_in_month("2021-02", "f", 0, 0, None) == 1.0
