"""Batch monitoring materialized on real TLC months, pushing to a real Pushgateway."""

import logging
from pathlib import Path

import dagster as dg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from taxi_assets.core.evidently_report import FEATURE_TYPES
from taxi_assets.core.metrics import BATCH_JOB, Sample
from taxi_assets.defs.batch_monitoring.assets import batch_drift, batch_predictions
from taxi_assets.defs.model.assets import deployed_model, duration_model
from taxi_assets.defs.resources import Pushgateway
from taxi_assets.defs.trip_data.assets import raw_trips, taxi_zones, trips
from tests.support.platform import platform_resources

# BentoML fixes its model store once per process: each test stores models in a process (and store) of its own.
pytestmark = [pytest.mark.integration, pytest.mark.forked]

DRIFT_METRICS, MONITORING_REPORT = dg.AssetKey("drift_metrics"), dg.AssetKey("monitoring_report")

MONITORING = [batch_predictions, batch_drift]


def metadata_of(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def pushed_samples(url: str) -> dict[tuple[str, frozenset], float]:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {
        # The Pushgateway adds an empty `instance` label to every series; only the labels we push matter here.
        (sample.name, frozenset((k, v) for k, v in sample.labels.items() if v)): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("taxi_batch_")
    }


@pytest.fixture
def deployed_january(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """Trips of 2021-01, 2021-02 and 2023-03, the zones, and the model trained on 2021-01 deployed."""
    resources = platform_resources()
    assert dg.materialize([taxi_zones], instance=instance, resources=resources)
    for month in ("2021-01", "2021-02", "2023-03"):
        assert dg.materialize([raw_trips, trips], partition_key=month, instance=instance, resources=resources)
    assert dg.materialize([duration_model], partition_key="2021-01", instance=instance, resources=resources)
    assert dg.materialize([deployed_model], instance=instance, resources=resources)
    return instance


def test_monthly_monitoring_chain(
    platform_env: Path, deployed_january: dg.DagsterInstance, pushgateway: str, monkeypatch: pytest.MonkeyPatch
):
    instance = deployed_january

    # Two years after the training month, pushed: the fares drift, and the figures land in the Pushgateway.
    # The reference month has no batch predictions yet, so its trips are scored on the fly.
    monkeypatch.setenv("TAXI_PUSHGATEWAY_URL", pushgateway)
    march = dg.materialize(MONITORING, partition_key="2023-03", instance=instance, resources=platform_resources())
    assert march.success
    predictions, drift, report = (
        metadata_of(march, key) for key in (batch_predictions.key, DRIFT_METRICS, MONITORING_REPORT)
    )

    with platform_resources()["warehouse"].get_connection() as conn:
        (trip_rows,) = conn.execute("SELECT count(*) FROM trips WHERE month = '2023-03'").fetchone()
        scored_rows, tags, max_error_gap = conn.execute(
            "SELECT count(*), count(DISTINCT model_tag), max(abs(error - (prediction - duration))) "
            "FROM batch_predictions WHERE month = '2023-03'"
        ).fetchone()
        table = {
            (metric, column): value
            for metric, column, value in conn.execute(
                "SELECT metric, column_or_segment, value FROM drift_metrics WHERE month = '2023-03'"
            ).fetchall()
        }
    assert predictions["dagster/row_count"] == scored_rows == trip_rows > 60_000
    assert tags == 1 and max_error_gap < 1e-9

    for name in ("share_drifted", "dataset_drift", "prediction_drift_score", "rmse", "mae", "largest_borough_rmse_gap"):
        assert isinstance(drift[name], float), name
    assert drift["reference_month"] == "2021-01" and drift["reference_rows_from"] == "trips"
    assert drift["dataset_drift"] == 1.0 and drift["share_drifted"] >= 0.5
    assert {"fare_amount", "total_amount"} <= set(drift["drifted_features"].split(", "))
    assert drift["largest_borough_rmse_gap"] > 0
    assert table[("rows", "all")] == trip_rows
    assert table[("drift_share", "all")] == pytest.approx(drift["share_drifted"])
    assert table[("rmse", "all")] == pytest.approx(drift["rmse"])
    assert {column for metric, column in table if metric == "drift_score"} == set(FEATURE_TYPES)

    html = Path(report["path"]).read_text()
    assert Path(report["path"]) == platform_env / "reports" / "monitoring_report_2023-03.html"
    assert report["url"].startswith("http://127.0.0.1:8000/projects/")  # its page in the Evidently UI
    assert "<html" in html and html.rstrip().endswith("</html>") and "Drift in column" in html
    assert "features drifted" in report["summary"]

    assert drift["pushed_to_pushgateway"] is True
    samples = pushed_samples(pushgateway)
    group = {("job", "taxi_batch_monitoring"), ("month", "2023-03")}
    assert samples[("taxi_batch_drift_share", frozenset(group))] == pytest.approx(drift["share_drifted"])
    assert samples[("taxi_batch_rmse", frozenset(group))] == pytest.approx(drift["rmse"])
    assert samples[("taxi_batch_rows", frozenset(group))] == trip_rows
    fare = frozenset(group | {("feature", "fare_amount"), ("method", "wasserstein")})
    assert samples[("taxi_batch_feature_drift_score", fare)] == pytest.approx(table[("drift_score", "fare_amount")])
    manhattan = frozenset(group | {("segment_type", "borough"), ("segment", "Manhattan")})
    assert samples[("taxi_batch_segment_rmse", manhattan)] == pytest.approx(
        table[("segment_rmse", "borough=Manhattan")]
    )

    # Re-running a month replaces it: same rows in DuckDB, not twice as many.
    again = dg.materialize([batch_drift], partition_key="2023-03", instance=instance, resources=platform_resources())
    assert metadata_of(again, DRIFT_METRICS)["dagster/row_count"] == len(table)
    with platform_resources()["warehouse"].get_connection() as conn:
        (rows,) = conn.execute("SELECT count(*) FROM drift_metrics WHERE month = '2023-03'").fetchone()
    assert rows == len(table)

    # The training month against itself, with no Pushgateway configured: nothing drifts, nothing is pushed,
    # and the reference rows are the month's own batch predictions.
    monkeypatch.delenv("TAXI_PUSHGATEWAY_URL")
    january = dg.materialize(MONITORING, partition_key="2021-01", instance=instance, resources=platform_resources())
    assert january.success
    january_drift = metadata_of(january, DRIFT_METRICS)
    assert january_drift["reference_rows_from"] == "batch_predictions"
    assert january_drift["share_drifted"] == 0.0 and january_drift["dataset_drift"] == 0.0
    assert january_drift["pushed_to_pushgateway"] is False
    assert january_drift["rmse"] == pytest.approx(metadata_of(january, batch_predictions.key)["rmse"])
    assert not any(("month", "2021-01") in labels for _, labels in pushed_samples(pushgateway))


def test_unreachable_pushgateway_is_logged_not_raised(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    sample = Sample("taxi_batch_rows", "Rows scored", {}, 1.0)
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    assert (
        Pushgateway(url="http://127.0.0.1:9", timeout_seconds=2).push(BATCH_JOB, {"month": "2021-01"}, [sample])
        is False
    )
    assert "failed" in caplog.text
    assert Pushgateway(url="").push(BATCH_JOB, {"month": "2021-01"}, [sample]) is False
    assert "not set" in caplog.text
