"""The monitoring in the local Evidently workspace: a month's report is a snapshot page that `monitoring_report`
links to over HTTP, and each month and online window is a point of a dashboard, with the figures the monitoring
computed."""

import datetime as dt
import re
from pathlib import Path

import dagster as dg
import pytest

from taxi_assets.core.evidently_workspace import MONTHS_PROJECT, WINDOWS_PROJECT, MonitoringWorkspace
from taxi_assets.defs.batch_monitoring.assets import batch_drift, batch_predictions
from taxi_assets.defs.dashboards.assets import (
    ONLINE_DRIFT_UPDATED_SINCE_REQUESTED,
    monitoring_dashboard,
    online_dashboard,
)
from taxi_assets.defs.model.assets import deployed_model, duration_model
from taxi_assets.defs.model.profile import reference_profile
from taxi_assets.defs.trip_data.assets import taxi_zones, trip_months
from tests.support.platform import platform_resources

EVIDENTLY_UI = "http://127.0.0.1:8000"


def workspace(platform_env: Path) -> MonitoringWorkspace:
    return MonitoringWorkspace(platform_env / "evidently", EVIDENTLY_UI)


def stored(platform_env: Path, project: str) -> tuple[str, dict[str, tuple[str, object]]]:
    """The project's id and its snapshots by name: (id, stored snapshot)."""
    ws = workspace(platform_env).workspace
    (found,) = ws.search_project(project)
    runs = {ws.get_run(found.id, run).name: (str(run), ws.get_run(found.id, run)) for run in ws.list_runs(found.id)}
    return str(found.id), runs


def values(snapshot) -> dict[str, float]:
    """A figures snapshot's figures by column (its metrics are "Mean value of '<column>'")."""
    return {
        re.search(r"'(.+)'", result.display_name).group(1): result.value for result in snapshot.metric_results.values()
    }


# BentoML fixes its model store once per process: the test stores models in a process of its own.
@pytest.mark.integration
@pytest.mark.forked
def test_a_months_report_and_figures_land_in_the_evidently_workspace(
    platform_env: Path, instance: dg.DagsterInstance
) -> None:
    resources = platform_resources()
    assert dg.materialize([taxi_zones], instance=instance, resources=resources)
    for month in ("2021-01", "2021-02"):
        assert dg.materialize([trip_months], partition_key=month, instance=instance, resources=resources)
    assert dg.materialize([duration_model], partition_key="2021-01", instance=instance, resources=resources)
    assert dg.materialize([deployed_model], instance=instance, resources=resources)
    assert dg.materialize([reference_profile], instance=instance, resources=resources)
    monitored = dg.materialize(
        [batch_predictions, batch_drift], partition_key="2021-02", instance=instance, resources=resources
    )
    (report,) = [
        event for event in monitored.get_asset_materialization_events() if event.asset_key.path == ["monitoring_report"]
    ]
    url = report.materialization.metadata["url"].value
    assert dg.materialize([monitoring_dashboard], partition_key="2021-02", instance=instance, resources=resources)

    project, runs = stored(platform_env, MONTHS_PROJECT)
    report_id, _ = runs["monitoring_report 2021-02"]
    assert url == f"{EVIDENTLY_UI}/projects/{project}/reports/{report_id}"
    assert (platform_env / "reports" / "monitoring_report_2021-02.html").stat().st_size > 10_000

    _, figures = runs["figures 2021-02"]
    shown = values(figures)
    with resources["warehouse"].get_connection() as conn:
        table = {
            (metric, column): value
            for metric, column, value in conn.execute(
                "SELECT metric, column_or_segment, value FROM drift_metrics WHERE month = '2021-02'"
            ).fetchall()
        }
    assert shown["rmse"] == pytest.approx(table[("rmse", "all")])
    assert shown["drift_share"] == pytest.approx(table[("drift_share", "all")])
    scores = {column: value for (metric, column), value in table.items() if metric == "drift_score"}
    assert {name: value for name, value in shown.items() if name.startswith("drift_score/")} == pytest.approx(
        {f"drift_score/{column}": value for column, value in scores.items()}
    )
    deployed = resources["model_registry"].deployed()
    assert shown["validation_rmse"] == pytest.approx(deployed["validation_rmse"])
    assert "challenger_gain" not in shown  # 2021-02 was not challenged: no point, rather than a zero

    # Again: the month is still one point.
    assert dg.materialize([monitoring_dashboard], partition_key="2021-02", instance=instance, resources=resources)
    assert sorted(stored(platform_env, MONTHS_PROJECT)[1]) == ["figures 2021-02", "monitoring_report 2021-02"]


@pytest.mark.integration
def test_online_windows_are_points_of_the_windows_dashboard(platform_env: Path, instance: dg.DagsterInstance) -> None:
    metadata = {
        "last_1000/rows": 1000,
        "last_1000/feedback_rows": 640,
        "last_1000/drift_share": 0.5,
        "last_1000/rmse": 6.25,
        "last_hour/rows": 120,
        "last_hour/feedback_rows": 0,
        "last_hour/drift_share": 0.0,
    }
    instance.report_runless_asset_event(dg.AssetMaterialization("online_drift", metadata=metadata))
    result = dg.materialize([online_dashboard], instance=instance, resources=platform_resources())
    assert result.success
    _, runs = stored(platform_env, WINDOWS_PROJECT)
    ((_, snapshot),) = runs.values()
    assert values(snapshot) == {
        "last_1000/rows": 1000,
        "last_1000/feedback_rows": 640,
        "last_1000/drift_share": 0.5,
        "last_1000/rmse": 6.25,
        "last_hour/rows": 120,
        "last_hour/feedback_rows": 0,
        "last_hour/drift_share": 0.0,  # and no RMSE without feedback
    }


@pytest.mark.integration
def test_the_windows_dashboard_keeps_the_days_the_setting_says(
    platform_env: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`online_dashboard` adds a point up to once a minute while traffic flows: without a bound the windows project
    grows by up to 1,440 snapshots a day. TAXI_EVIDENTLY_WINDOW_DAYS (read as a whole number through the resource's
    `dg.EnvVar`) is how far back from the newest point the dashboard keeps."""
    monkeypatch.setenv("TAXI_EVIDENTLY_WINDOW_DAYS", "1")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    for hours in (50, 25, 23):
        workspace(platform_env).publish_window_figures({"last_1000": {"rows": hours}}, now - dt.timedelta(hours=hours))
    instance.report_runless_asset_event(dg.AssetMaterialization("online_drift", metadata={"last_1000/rows": 1000}))
    result = dg.materialize([online_dashboard], instance=instance, resources=platform_resources())
    assert result.success
    _, runs = stored(platform_env, WINDOWS_PROJECT)
    kept = sorted(values(snapshot)["last_1000/rows"] for _, snapshot in runs.values())
    assert kept == [23, 1000]  # 25 and 50 hours before the new point are gone


@pytest.mark.unit
def test_an_online_window_that_lands_just_after_the_dashboard_is_still_shown() -> None:
    """The dashboard's trigger (`online_drift` updated since the dashboard was last requested), evaluated by
    Dagster: an online_drift run ending just after the dashboard's run, both first seen on one tick, asks for
    another point (with `since_last_handled()` it was dropped and the dashboard stayed a window behind for good);
    nothing new asks for nothing."""
    condition = ONLINE_DRIFT_UPDATED_SINCE_REQUESTED & ~dg.AutomationCondition.in_progress()

    @dg.asset(name="online_drift")
    def drift() -> None: ...

    @dg.asset(name="online_dashboard", deps=[drift], automation_condition=condition)
    def dashboard() -> None: ...

    defs = dg.Definitions(assets=[drift, dashboard])
    instance = dg.DagsterInstance.ephemeral()

    def materialize(*names: str) -> None:
        for name in names:
            assert dg.materialize([drift, dashboard], selection=[name], instance=instance).success

    def requested(cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return result.total_requested, result.cursor

    materialize("online_drift", "online_dashboard")
    _, cursor = requested(None)
    materialize("online_drift")
    count, cursor = requested(cursor)
    assert count == 1
    # the requested dashboard run ends, then another online window lands before the next tick
    materialize("online_dashboard", "online_drift")
    count, cursor = requested(cursor)
    assert count == 1
    materialize("online_dashboard")
    count, cursor = requested(cursor)
    assert count == 0
