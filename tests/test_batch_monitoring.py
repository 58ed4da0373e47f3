"""Batch monitoring materialized on real TLC months, pushing to a real Pushgateway."""

import logging
from pathlib import Path

import dagster as dg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from taxi_assets.core.batch import EQUAL_WEIGHTS
from taxi_assets.core.drift_scores import BATCH_FEATURES
from taxi_assets.core.metrics import BATCH_JOB, Sample
from taxi_assets.definitions import defs
from taxi_assets.defs.batch_monitoring import assets as batch_monitoring_assets
from taxi_assets.defs.batch_monitoring.assets import batch_drift, batch_predictions
from taxi_assets.defs.model.assets import deployed_model, duration_model
from taxi_assets.defs.model.profile import reference_profile
from taxi_assets.defs.resources import Pushgateway
from taxi_assets.defs.trip_data.assets import taxi_zones, trip_months
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
    return deploy_january(instance)


def deploy_january(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """Trips of 2021-01, 2021-02 and 2023-03, the zones, the model trained on 2021-01 deployed, and its profile."""
    resources = platform_resources()
    assert dg.materialize([taxi_zones], instance=instance, resources=resources)
    for month in ("2021-01", "2021-02", "2023-03"):
        assert dg.materialize([trip_months], partition_key=month, instance=instance, resources=resources)
    assert dg.materialize([duration_model], partition_key="2021-01", instance=instance, resources=resources)
    assert dg.materialize([deployed_model], instance=instance, resources=resources)
    profiled = dg.materialize([reference_profile], instance=instance, resources=resources)
    assert metadata_of(profiled, reference_profile.key)["validation_month"] == "2021-02"
    return instance


def monthly_job() -> dg.JobDefinition:
    """The platform's job with its own executor, as the daemon runs it (`dg.materialize` would use Dagster's)."""
    return defs().resolve_job_def("monthly_job")


def test_a_month_is_scored_and_its_report_drawn_without_the_warehouse_slot(
    platform_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """batch_predictions lends its duckdb slot while it scores the month, batch_drift while it computes the figures
    (scoring the month before, which has no stored predictions) and gives it back once drift_metrics is written:
    the scoring, the figures and the Evidently page (seconds, tens of seconds under load) run while the next run (an
    ingest) uses the warehouse. Inputs replaced while the slot was lent are read and computed again before anything
    is stored, so the predictions always match the trips beside them, and the figures the predictions."""
    pools = {"concurrency": {"pools": {"granularity": "op", "default_limit": 1}}}
    with dg.instance_for_test(temp_dir=str(platform_env / "dagster_home"), overrides=pools) as instance:
        deploy_january(instance)
        warehouse = platform_resources()["warehouse"]
        held_while_scoring, held_while_figures, held_while_publishing = [], [], []
        score, publish = batch_monitoring_assets.score, batch_monitoring_assets._report
        figures = batch_monitoring_assets.month_figures

        def scoring(*args):
            held_while_scoring.append(instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots)
            with warehouse.get_connection() as conn:  # another run replaces the month meanwhile
                conn.execute("DELETE FROM trips WHERE month = '2021-02' AND trip_distance > 5")
            return score(*args)

        def computing(*args):
            held_while_figures.append(instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots)
            if len(held_while_figures) == 1:
                with warehouse.get_connection() as conn:  # another run rescores the month meanwhile
                    conn.execute("DELETE FROM batch_predictions WHERE month = '2021-02' AND PULocationID < 50")
            return figures(*args)

        def publishing(*args):
            held_while_publishing.append(instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots)
            return publish(*args)

        monkeypatch.setattr(batch_monitoring_assets, "score", scoring)
        monkeypatch.setattr(batch_monitoring_assets, "month_figures", computing)
        monkeypatch.setattr(batch_monitoring_assets, "_report", publishing)
        result = dg.execute_job(
            dg.reconstructable(monthly_job),
            instance=instance,
            tags={"dagster/partition": "2021-02"},
            asset_selection=[batch_predictions.key, *batch_drift.keys],
        )
        assert result.success
        # Slot-free: batch_predictions' scoring, batch_drift's scoring of 2021-01 and its figures; then, the month's
        # predictions changed, batch_drift reads and computes again holding the warehouse.
        assert [claimed == [] for claimed in held_while_scoring] == [True, True, False]
        assert [claimed == [] for claimed in held_while_figures] == [True, False]
        assert held_while_publishing == [[]]
        with warehouse.get_connection() as conn:
            (trips_left,) = conn.execute("SELECT count(*) FROM trips WHERE month = '2021-02'").fetchone()
            (rescored_away,) = conn.execute(
                "SELECT count(*) FROM trips WHERE month = '2021-02' AND PULocationID < 50"
            ).fetchone()
            (scored,) = conn.execute("SELECT count(*) FROM batch_predictions WHERE month = '2021-02'").fetchone()
            (long_rides,) = conn.execute(
                "SELECT count(*) FROM batch_predictions WHERE month = '2021-02' AND trip_distance > 5"
            ).fetchone()
        assert scored == trips_left - rescored_away and long_rides == 0
        assert drift_table("2021-02")[("rows", "all")] == scored
        messages = [event.message for event in instance.all_logs(result.run_id)]
        assert "trips[2021-02] changed while it was scored; scoring it again" in messages
        assert "the inputs of drift_metrics[2021-02] changed while it was computed; computing it again" in messages


def drift_table(month: str) -> dict[tuple[str, str], float]:
    with platform_resources()["warehouse"].get_connection() as conn:
        return {
            (metric, column): value
            for metric, column, value in conn.execute(
                "SELECT metric, column_or_segment, value FROM drift_metrics WHERE month = $m", {"m": month}
            ).fetchall()
        }


def test_monthly_monitoring_chain(
    platform_env: Path, deployed_january: dg.DagsterInstance, pushgateway: str, monkeypatch: pytest.MonkeyPatch
):
    instance = deployed_january

    # The training month, with no Pushgateway configured: nothing drifts, nothing is pushed; no month before it.
    january = dg.materialize(MONITORING, partition_key="2021-01", instance=instance, resources=platform_resources())
    assert january.success
    january_drift = metadata_of(january, DRIFT_METRICS)
    assert january_drift["drift_share"] == 0.0 and january_drift["drifted_since_training"] == 0.0
    assert january_drift["previous_month"] == "not loaded"
    assert january_drift["pushed_to_pushgateway"] is False
    assert january_drift["rmse"] == pytest.approx(metadata_of(january, batch_predictions.key)["rmse"])
    assert not any(key[0].startswith("mom_") for key in drift_table("2021-01"))

    # The next month, pushed, inside a "backfill" that skips the report: quiet since training and month over
    # month, every figure stored and pushed, no report materialized.
    monkeypatch.setenv("TAXI_PUSHGATEWAY_URL", pushgateway)
    no_report = {"ops": {"batch_drift": {"config": {"report": False}}}}
    february = dg.materialize(
        MONITORING, partition_key="2021-02", instance=instance, resources=platform_resources(), run_config=no_report
    )
    assert february.success
    assert {e.asset_key for e in february.get_asset_materialization_events()} == {batch_predictions.key, DRIFT_METRICS}
    february_drift = metadata_of(february, DRIFT_METRICS)
    assert february_drift["previous_month"] == "2021-01"
    assert february_drift["drifted_since_training"] == 0.0 and february_drift["drifted_month_over_month"] == 0.0
    table = drift_table("2021-02")
    assert table[("mom_dataset_drift", "all")] == 0.0
    assert {column for metric, column in table if metric == "mom_drift_effect"} == set(BATCH_FEATURES)
    samples = pushed_samples(pushgateway)
    group = frozenset({("job", "taxi_batch_monitoring"), ("month", "2021-02")})
    assert samples[("taxi_batch_mom_dataset_drift", group)] == 0.0
    assert samples[("taxi_batch_month_start_timestamp_seconds", group)] == 1612137600.0

    # Two years after the training month: the zones and fares drifted since training, ranked, and in the report.
    march = dg.materialize(MONITORING, partition_key="2023-03", instance=instance, resources=platform_resources())
    assert march.success
    predictions, drift, report = (
        metadata_of(march, key) for key in (batch_predictions.key, DRIFT_METRICS, MONITORING_REPORT)
    )
    table = drift_table("2023-03")
    with platform_resources()["warehouse"].get_connection() as conn:
        (trip_rows,) = conn.execute("SELECT count(*) FROM trips WHERE month = '2023-03'").fetchone()
    assert predictions["dagster/row_count"] == trip_rows > 60_000
    for name in ("drift_share", "drifted_since_training", "prediction_drift_score", "rmse", "largest_borough_rmse_gap"):
        assert isinstance(drift[name], float), name
    assert drift["reference_month"] == "2021-01" and drift["previous_month"] == "not loaded"
    assert drift["drifted_since_training"] == 1.0
    drifted = [item.split(" (")[0] for item in drift["drifted_features"].split(", ")]
    assert {"PULocationID", "fare_amount", "total_amount"} <= set(drifted)
    # Ranked by the deployed model's permutation importance: fares, which the model does not use, drifted as much
    # as the trip distance but rank below it.
    assert drift["importance_weights"] == "permutation_importance" != EQUAL_WEIGHTS
    assert drifted.index("trip_distance") < drifted.index("fare_amount")
    assert table[("importance_weight", "fare_amount")] == 0.0 < table[("importance_weight", "trip_distance")]
    assert [table[("drift_rank", feature)] for feature in drifted] == list(range(1, len(drifted) + 1))
    assert table[("rows", "all")] == trip_rows
    assert table[("drift_share", "all")] == pytest.approx(drift["drift_share"])
    assert table[("rmse", "all")] == pytest.approx(drift["rmse"])
    assert {column for metric, column in table if metric == "drift_score"} == set(BATCH_FEATURES)
    assert 0 < table[("outlier_share", "any")] < 0.05
    assert drift["outlier_examples"]["distance_above_p999"]

    html = Path(report["path"]).read_text()
    assert Path(report["path"]) == platform_env / "reports" / "monitoring_report_2023-03.html"
    assert report["url"].startswith("http://127.0.0.1:8000/projects/")  # its page in the Evidently UI
    assert "<html" in html and html.rstrip().endswith("</html>") and "Drift in column" in html
    # The report shows the alarms' verdicts, feature by feature.
    for feature in BATCH_FEATURES:
        assert f"<tr data-feature='{feature}' data-drifted='{int(table[('drifted', feature)])}'>" in html
    assert "features drifted since training" in report["summary"]

    samples = pushed_samples(pushgateway)
    group = {("job", "taxi_batch_monitoring"), ("month", "2023-03")}
    assert samples[("taxi_batch_dataset_drift", frozenset(group))] == 1.0
    assert samples[("taxi_batch_rmse", frozenset(group))] == pytest.approx(drift["rmse"])
    assert samples[("taxi_batch_rows", frozenset(group))] == trip_rows
    fare = frozenset(group | {("feature", "fare_amount"), ("test", "ks")})
    assert samples[("taxi_batch_feature_drift_score", fare)] == pytest.approx(table[("drift_score", "fare_amount")])
    manhattan = frozenset(group | {("segment_type", "borough"), ("segment", "Manhattan")})
    assert samples[("taxi_batch_segment_rmse", manhattan)] == pytest.approx(
        table[("segment_rmse", "borough=Manhattan")]
    )

    # Re-running a month replaces it: same rows in DuckDB, not twice as many.
    again = dg.materialize([batch_drift], partition_key="2023-03", instance=instance, resources=platform_resources())
    assert metadata_of(again, DRIFT_METRICS)["dagster/row_count"] == len(table)
    assert len(drift_table("2023-03")) == len(table)

    # Evidently's page is drawn while the figures are stored: when it fails, the figures are stored and
    # materialized all the same, the step fails with Evidently's error and the month's last report stays.
    def broken_page(*args):
        raise RuntimeError("Evidently could not draw the page")

    last_page = Path(report["path"]).read_text()
    with monkeypatch.context() as patch:
        patch.setattr(batch_monitoring_assets, "build_snapshot", broken_page)
        no_page = dg.materialize(
            [batch_drift],
            partition_key="2023-03",
            instance=instance,
            resources=platform_resources(),
            raise_on_error=False,
        )
    assert not no_page.success
    assert [event.asset_key for event in no_page.get_asset_materialization_events()] == [DRIFT_METRICS]
    assert "Evidently could not draw the page" in str(no_page.get_step_failure_events()[0].event_specific_data.error)
    assert len(drift_table("2023-03")) == len(table)
    assert Path(report["path"]).read_text() == last_page

    # Without the deployed model's profile the month fails, saying what to materialize.
    with platform_resources()["warehouse"].get_connection() as conn:
        conn.execute("DELETE FROM reference_profile")
    failed = dg.materialize(
        [batch_drift], partition_key="2023-03", instance=instance, resources=platform_resources(), raise_on_error=False
    )
    assert not failed.success
    assert "materialize reference_profile" in str(failed.get_step_failure_events()[0].event_specific_data.error)


def test_unreachable_pushgateway_is_logged_not_raised(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    sample = Sample("taxi_batch_rows", {}, 1.0)
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    assert (
        Pushgateway(url="http://127.0.0.1:9", timeout_seconds=2).push(BATCH_JOB, {"month": "2021-01"}, [sample])
        is False
    )
    assert "failed" in caplog.text
    assert Pushgateway(url="").push(BATCH_JOB, {"month": "2021-01"}, [sample]) is False
    assert "not set" in caplog.text
