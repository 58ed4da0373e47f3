"""Online monitoring: the prediction-log sensor, the exactly-once ingest of log days and the window drift."""

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mongomock
import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from taxi_assets import settings
from taxi_assets.core import calibration, predlog, profile, warehouse
from taxi_assets.core.drift_scores import ONLINE_FEATURES
from taxi_assets.core.model import PREDICTION, predict
from taxi_assets.core.online import (
    ACTUAL,
    DISTANCE_CUSUM_ALLOWANCE,
    DISTANCE_CUSUM_LIMIT,
    RMSE_CHUNK,
    RMSE_CUSUM_LIMIT,
    SLOWDOWN_CUSUM_LIMIT,
    confirmed,
    online_samples,
    window_figures,
)
from taxi_assets.core.profile import log_ratios
from taxi_assets.definitions import defs
from taxi_assets.defs.model.assets import deployed_model, duration_model
from taxi_assets.defs.model.profile import reference_profile
from taxi_assets.defs.online_monitoring import sensors
from taxi_assets.defs.online_monitoring.assets import OnlineDriftConfig, online_drift, prediction_logs
from taxi_assets.defs.online_monitoring.resources import PredictionLogStore
from taxi_assets.defs.online_monitoring.sensors import prediction_log_sensor
from taxi_assets.defs.resources import Pushgateway
from taxi_assets.defs.trip_data.assets import trip_months
from tests.support.platform import platform_resources
from tests.support.service_harness import load_rides

# BentoML fixes its model store once per process: each test stores models in a process (and store) of its own.
pytestmark = [pytest.mark.integration, pytest.mark.forked]

UTC = dt.timezone.utc


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def prediction(ride_id: str, ts: dt.datetime, value: float = 12.0, tag: str = "taxi_duration_deployed:v1") -> dict:
    ride = {"id": ride_id, "PULocationID": 74, "DOLocationID": 42, "trip_distance": 1.7}
    return predlog.prediction_record({**ride, "pickup_datetime": "2022-02-03T08:15:00"}, value, tag, ts=iso(ts))


def feedback(ride_id: str, ts: dt.datetime, actual: float) -> dict:
    return predlog.feedback_record(ride_id, actual, ts=iso(ts))


def write(records: list[dict]) -> None:
    current = settings.load()
    writer = predlog.open_writer(current.predlog_uri, current.predlog_spool_dir)
    assert writer.append(records)
    writer.close()


def pushed(url: str, job: str) -> dict[tuple[str, frozenset], float]:
    """Series the Pushgateway holds for `job`, keyed by name and the labels pushed (its empty `instance` left out)."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {
        (sample.name, frozenset((k, v) for k, v in sample.labels.items() if v and k != "job")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("job") == job and not sample.name.startswith("push_")
    }


def metadata_of(result: dg.ExecuteInProcessResult, asset: dg.AssetsDefinition) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == asset.key]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def profile_of(model_tag: str) -> profile.ReferenceProfile:
    with platform_resources()["warehouse"].get_connection() as conn:
        return profile.load(conn, model_tag)


def with_pushgateway(url: str) -> dict:
    return {**platform_resources(), "pushgateway": Pushgateway(url=url)}


def tick(instance: dg.DagsterInstance, cursor: str | None, pushgateway_url: str = "") -> dg.SensorResult:
    resources = with_pushgateway(pushgateway_url)
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={name: resources[name] for name in ("prediction_log", "pushgateway")},
    )
    return prediction_log_sensor(context)


def ingest(instance: dg.DagsterInstance, day: str, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [prediction_logs], partition_key=day, instance=instance, resources=platform_resources(), **kwargs
    )


def table_counts(day: str) -> tuple[int, int]:
    with platform_resources()["warehouse"].get_connection() as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM prediction_log WHERE day = $d), "
            "(SELECT count(*) FROM prediction_feedback WHERE day = $d)",
            {"d": day},
        ).fetchone()


def test_sensor_requests_new_days_once_and_never_opens_duckdb(
    platform_env: Path, instance: dg.DagsterInstance, pushgateway: str
) -> None:
    now = dt.datetime.now(UTC)
    yesterday, today = (now - dt.timedelta(days=1)), now
    write([prediction("a", yesterday), prediction("b", yesterday), prediction("c", today)])
    duckdb_file = platform_env / "warehouse.duckdb"

    first = tick(instance, None, pushgateway)
    requested = {r.partition_key: r.run_key for r in first.run_requests}
    assert set(requested) == {yesterday.date().isoformat(), today.date().isoformat()}
    assert len(set(requested.values())) == 2
    # A retried tick (its cursor was never stored) asks for the same runs, which Dagster then skips.
    assert [r.run_key for r in tick(instance, None).run_requests] == [r.run_key for r in first.run_requests]
    assert len(first.cursor) < 2000

    ingest_job = pushed(pushgateway, "taxi_ingest")
    assert ingest_job[("taxi_ingest_records_waiting", frozenset())] == 3
    assert 86_000 < ingest_job[("taxi_ingest_oldest_pending_age_seconds", frozenset())] < 87_000
    assert ("taxi_ingest_last_success_timestamp_seconds", frozenset()) not in ingest_job

    # Nothing new: no runs. A new record today: only today, under a new key.
    assert tick(instance, first.cursor).run_requests == []
    write([prediction("d", dt.datetime.now(UTC))])
    second = tick(instance, first.cursor, pushgateway)
    assert [r.partition_key for r in second.run_requests] == [today.date().isoformat()]
    assert second.run_requests[0].run_key != requested[today.date().isoformat()]
    assert pushed(pushgateway, "taxi_ingest")[("taxi_ingest_records_waiting", frozenset())] == 4
    assert not duckdb_file.exists(), "the sensor must not open DuckDB"

    # Once the requested days are in DuckDB, nothing waits and the last success is the materialization's time.
    before = dt.datetime.now(UTC).timestamp()
    for day in requested:
        assert ingest(instance, day).success
    third = tick(instance, second.cursor, pushgateway)
    assert third.run_requests == []
    ingest_job = pushed(pushgateway, "taxi_ingest")
    assert ingest_job[("taxi_ingest_records_waiting", frozenset())] == 0
    assert ingest_job[("taxi_ingest_oldest_pending_age_seconds", frozenset())] == 0
    assert (
        before
        <= ingest_job[("taxi_ingest_last_success_timestamp_seconds", frozenset())]
        <= dt.datetime.now(UTC).timestamp()
    )
    assert json.loads(third.cursor)["open"] == []


# Another process holding the warehouse open for writing: DuckDB lets one process write a file.
HOLD_WAREHOUSE = """
import duckdb, sys
conn = duckdb.connect(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""


def test_sensor_requests_a_failed_day_again_with_backoff_until_it_lands(
    platform_env: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three days old: sealed in the store cursor by the first tick, so only the open batch remembers it.
    day = (dt.datetime.now(UTC) - dt.timedelta(days=3)).replace(hour=12)
    key = day.date().isoformat()
    write([prediction("a", day), prediction("b", day)])
    job = defs().resolve_job_def("online_monitoring_job")

    def run(request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        tags = {**request.tags, "dagster/run_key": request.run_key}
        return job.execute_in_process(partition_key=key, instance=instance, tags=tags, raise_on_error=False)

    clock = [dt.datetime.now(UTC).timestamp()]
    monkeypatch.setattr(sensors.time, "time", lambda: clock[0])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WAREHOUSE, str(platform_env / "warehouse.duckdb")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        first = tick(instance, None)
        assert [r.partition_key for r in first.run_requests] == [key]
        assert json.loads(first.cursor)["store"]["sealed"] == key
        assert not run(first.run_requests[0]).success

        # At the next tick: requested again. When that fails too, not before a minute has passed.
        clock[0] += 30
        second = tick(instance, first.cursor)
        assert [r.run_key.rsplit("/", 1)[-1] for r in second.run_requests] == ["retry-1"]
        assert not run(second.run_requests[0]).success
        clock[0] += 30
        assert tick(instance, second.cursor).run_requests == []
        clock[0] += 31
        third = tick(instance, second.cursor)
        assert [r.run_key.rsplit("/", 1)[-1] for r in third.run_requests] == ["retry-2"]
        assert json.loads(third.cursor)["retries"] == {key: 2}
    finally:
        holder.kill()
        holder.wait()

    run(third.run_requests[0])
    assert table_counts(key) == (2, 0)
    clock[0] += 30
    done = tick(instance, third.cursor)
    assert done.run_requests == []
    assert {k: json.loads(done.cursor)[k] for k in ("open", "retries")} == {"open": [], "retries": {}}


def test_prediction_logs_exactly_once_with_late_feedback_and_a_crash(
    platform_env: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = dt.datetime.now(UTC)
    day1, day2 = (now - dt.timedelta(days=3)), now
    write([prediction(f"r{i}", day1, value=10.0 + i) for i in range(3)])
    write([prediction("r3", day2, value=20.0), feedback("r3", day2, 18.0)])
    key1, key2 = day1.date().isoformat(), day2.date().isoformat()
    assert ingest(instance, key1).success

    # Feedback for a ride of day 1 arrives on day 2: stored under day 2, joined to its day-1 prediction.
    write([feedback("r0", day2, 13.0), feedback("r1", day2, 9.0), feedback("r1", day2 + dt.timedelta(seconds=1), 8.0)])
    result = ingest(instance, key2)
    meta = metadata_of(result, prediction_logs)
    assert meta["prediction_rows"] == 1 and meta["feedback_rows"] == 4 and meta["late_feedback_rows"] == 3
    assert meta["joined_share"] == 1.0 and isinstance(meta["joined_share"], float)
    with platform_resources()["warehouse"].get_connection() as conn:
        joined = dict(
            conn.execute("SELECT id, error FROM online_predictions WHERE actual_duration IS NOT NULL").fetchall()
        )
    assert joined == {"r0": pytest.approx(-3.0), "r1": pytest.approx(3.0), "r3": pytest.approx(2.0)}  # latest wins

    # A re-run changes nothing.
    assert ingest(instance, key2).success and ingest(instance, key1).success
    assert table_counts(key1) == (3, 0) and table_counts(key2) == (1, 4)

    # A crash after the predictions of the day were replaced, before the feedback: the day stays as it was.
    write([prediction("r4", day2), feedback("r4", day2, 7.0)])
    original = warehouse.replace_rows

    def crash_before_feedback(conn, table, *args):
        if table == "prediction_feedback":
            raise RuntimeError("simulated crash between the two ingest steps")
        return original(conn, table, *args)

    monkeypatch.setattr(warehouse, "replace_rows", crash_before_feedback)
    assert not ingest(instance, key2, raise_on_error=False).success
    assert table_counts(key2) == (1, 4)
    monkeypatch.setattr(warehouse, "replace_rows", original)
    assert ingest(instance, key2).success
    assert table_counts(key2) == (2, 5) and table_counts(key1) == (3, 0)


@pytest.fixture
def deployed(instance: dg.DagsterInstance) -> tuple[dg.DagsterInstance, dict]:
    """Trips of 2021-01 and 2021-02 in DuckDB, the model trained on 2021-01 (validated on 2021-02) deployed, and
    its reference profile."""
    resources = platform_resources()
    for month in ("2021-01", "2021-02"):
        assert dg.materialize([trip_months], partition_key=month, instance=instance, resources=resources)
    assert dg.materialize([duration_model], partition_key="2021-01", instance=instance, resources=resources)
    assert dg.materialize([deployed_model], instance=instance, resources=resources)
    assert dg.materialize([reference_profile], instance=instance, resources=resources)
    return instance, resources["model_registry"].load_deployed()


def test_online_drift_windows_are_pushed(deployed, pushgateway: str) -> None:
    instance, (pipeline, model) = deployed
    hour_start = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    # 1,200 consecutive rides (half a day of 15 February): a consecutive window, whose RMSE alarm is the CUSUM.
    month = load_rides("2022-02").sort_values("pickup_datetime", kind="stable")
    rides = month[month.pickup_datetime >= "2022-02-15"].head(1200).reset_index(drop=True)
    rides["prediction"] = predict(pipeline, rides)
    records = []
    for i, ride in enumerate(rides.itertuples()):
        ts = hour_start + dt.timedelta(seconds=2 * i)
        fields = {
            "id": f"ride-{i}",
            "PULocationID": int(ride.PULocationID),
            "DOLocationID": int(ride.DOLocationID),
            "trip_distance": float(ride.trip_distance),
            "pickup_datetime": ride.pickup_datetime.isoformat(),
        }
        records.append(predlog.prediction_record(fields, float(ride.prediction), model["tag"], ts=iso(ts)))
        if i % 6:  # feedback for five rides in six: 1,000, one chunk of the RMSE alarm's CUSUM
            records.append(feedback(f"ride-{i}", ts + dt.timedelta(minutes=1), float(ride.duration)))
    records.append(prediction("other-model", hour_start, tag="taxi_duration_deployed:old"))
    write(records)

    resources = with_pushgateway(pushgateway)
    assert dg.materialize(
        [prediction_logs], partition_key=hour_start.date().isoformat(), instance=instance, resources=resources
    )
    last_1000 = dg.RunConfig({"online_drift": OnlineDriftConfig(last_n=1000)})
    result = dg.materialize([online_drift], instance=instance, resources=resources, run_config=last_1000)
    meta = metadata_of(result, online_drift)

    last = rides.iloc[200:]  # the 1,000 latest
    last_error = (last.prediction - last.duration)[last.index % 6 != 0]
    assert meta["last_1000/rows"] == 1000 and meta["last_1000/feedback_rows"] == 834
    assert meta["hour/rows"] == 1200 and meta["hour/feedback_rows"] == 1000
    # The sliding window's RMSE alarm is the CUSUM of the newest 1,000 errors with feedback, whichever window they
    # fall in (one chunk: the excess of its log RMSE over the validation RMSE's, less the allowance, or 0).
    fed = rides[rides.index % 6 != 0]
    chunk = float(np.sqrt(((fed.prediction - fed.duration) ** 2).mean()))
    validation_rmse = profile_of(model["tag"]).residuals.rmse
    assert meta["last_1000/rmse_cusum"] == pytest.approx(max(0.0, np.log(chunk / validation_rmse) - 0.04))
    assert meta["last_1000/rmse_cusum_limit"] == RMSE_CUSUM_LIMIT and "hour/rmse_cusum" not in meta
    # Beside it, the slowdown CUSUM of the same chunk: its mean log ratio of actual to predicted duration over the
    # validation month's.
    ratio = float(log_ratios(fed.prediction.to_numpy(), fed.duration.to_numpy()).mean())
    reference_ratio = profile_of(model["tag"]).residuals.mean_log_ratio
    assert meta["last_1000/slowdown_cusum"] == pytest.approx(max(0.0, ratio - reference_ratio))
    assert meta["last_1000/slowdown_cusum_limit"] == SLOWDOWN_CUSUM_LIMIT and "hour/slowdown_cusum" not in meta
    # The dataset alarm's distance CUSUM over the newest rides, feedback or not (one chunk: the newest 1,000 rides'
    # mean log distance less their slots' means in the profile, less the allowance, on the longer or shorter side).
    deviation = profile_of(model["tag"]).distance_deviations(last.trip_distance.to_numpy(), last.pickup_datetime)
    shift = float(np.nanmean(deviation))
    expected_distance = max(0.0, abs(shift) - DISTANCE_CUSUM_ALLOWANCE)
    assert meta["last_1000/distance_cusum"] == pytest.approx(expected_distance)
    assert meta["last_1000/distance_cusum_limit"] == DISTANCE_CUSUM_LIMIT and "hour/distance_cusum" not in meta
    # The windows that confirm an alarm share no ride with the current one: the 200 rides before the newest 1,000
    # (the two hours before had none).
    assert meta["last_1000/previous_window_rows"] == meta["last_1000/agreeing_windows_min_rows"] == 200
    assert meta["hour/previous_window_rows"] == meta["hour/agreeing_windows_min_rows"] == 0
    assert meta["last_1000/rmse"] == pytest.approx(float(np.sqrt((last_error**2).mean())))
    assert meta["last_1000/mae"] == pytest.approx(float(last_error.abs().mean()))
    for name in ("last_1000/drift_share", "last_1000/dataset_drift", "last_1000/prediction_drift_score", "hour/rmse"):
        assert isinstance(meta[name], float), name
    # Consecutive rides, tested against the profile; the RMSE bound is above the validation RMSE and tighter for
    # more feedback.
    assert meta["last_1000/kind"] == meta["hour/kind"] == "consecutive"
    assert meta["hour/rmse_bound"] < meta["last_1000/rmse_bound"]
    assert meta["hour/rmse_bound"] > model["validation_rmse"]

    series = pushed(pushgateway, "taxi_online_monitoring")
    for window in ("last_1000", "hour"):
        group = {("window", window)}
        assert series[("taxi_online_window_rows", frozenset(group))] == meta[f"{window}/rows"]
        assert series[("taxi_online_rmse", frozenset(group))] == pytest.approx(meta[f"{window}/rmse"])
        assert series[("taxi_online_drift_share", frozenset(group))] == pytest.approx(meta[f"{window}/drift_share"])
        validation = frozenset(group | {("model_tag", model["tag"])})
        assert series[("taxi_model_validation_rmse", validation)] == pytest.approx(model["validation_rmse"])
        assert series[("taxi_online_rmse_bound", frozenset(group))] == pytest.approx(meta[f"{window}/rmse_bound"])
        cusum = series.get(("taxi_online_rmse_cusum", frozenset(group)))
        assert cusum == (pytest.approx(meta["last_1000/rmse_cusum"]) if window == "last_1000" else None)
        slowdown = series.get(("taxi_online_slowdown_cusum", frozenset(group)))
        assert slowdown == (pytest.approx(meta["last_1000/slowdown_cusum"]) if window == "last_1000" else None)
        distance = series.get(("taxi_online_distance_cusum", frozenset(group)))
        assert distance == (pytest.approx(meta["last_1000/distance_cusum"]) if window == "last_1000" else None)
        features = {dict(labels)["feature"] for name, labels in series if name == "taxi_online_feature_drifted"}
        assert features == set(ONLINE_FEATURES)

    # An hour without traffic: rows only, and the drift series of the previous push are gone.
    later = (hour_start + dt.timedelta(hours=5)).isoformat()
    config = dg.RunConfig({"online_drift": OnlineDriftConfig(as_of=later, last_n=1000)})
    assert dg.materialize([online_drift], instance=instance, resources=resources, run_config=config)
    series = pushed(pushgateway, "taxi_online_monitoring")
    assert series[("taxi_online_window_rows", frozenset({("window", "hour")}))] == 0
    assert not [name for name, labels in series if ("window", "hour") in labels and "drift" in name]


def test_online_drift_skips_while_the_new_models_profile_is_built_and_fails_without_one(
    platform_env: Path, instance: dg.DagsterInstance
) -> None:
    """Right after a deployment the ingest, first in the run queue (its priority), can judge the windows before the
    automation has stored the new model's profile: while a run building it has not ended, online_drift is skipped
    and the run succeeds; with no such run it fails, saying what to materialize. Once the profile is stored, the
    prediction-log sensor asks for the last ingested day once more, which judges the windows: traffic that stopped
    meanwhile brings no next ingest."""
    resources = platform_resources()
    seed = {"config": {"recipe": "seed"}}
    for month in ("2021-01", "2021-02"):
        assert dg.materialize([trip_months], partition_key=month, instance=instance, resources=resources)
    run_config = {"ops": {"duration_model": seed}}
    assert dg.materialize(
        [duration_model], partition_key="2021-01", instance=instance, resources=resources, run_config=run_config
    )
    run_config = {"ops": {"deployed_model": seed}}
    assert dg.materialize([deployed_model], instance=instance, resources=resources, run_config=run_config)
    tag = resources["model_registry"].deployed()["tag"]
    now = dt.datetime.now(UTC)
    write([prediction("first", now, tag=tag)])
    assert ingest(instance, now.date().isoformat()).success

    building = instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            status=dg.DagsterRunStatus.STARTED,
            asset_selection=frozenset({reference_profile.key}),
        )
    )
    skipped = dg.materialize([online_drift], instance=instance, resources=resources)
    assert skipped.success
    assert skipped.asset_materializations_for_node(online_drift.op.name) == []
    assert instance.get_latest_materialization_event(online_drift.key) is None

    instance.report_run_canceled(building)  # the profile's run ended without it: nothing is on its way
    failed = dg.materialize([online_drift], instance=instance, resources=resources, raise_on_error=False)
    assert not failed.success
    (failure,) = [event for event in failed.all_events if event.is_step_failure]
    assert f"no reference profile for {tag}; materialize reference_profile first" in str(
        failure.step_failure_data.error
    )

    def rejudged() -> list[str]:
        return [r.partition_key for r in tick(instance, None).run_requests if r.run_key.startswith("rejudge-")]

    assert rejudged() == []  # no profile yet: nothing to judge against
    assert dg.materialize([reference_profile], instance=instance, resources=resources)
    assert rejudged() == [now.date().isoformat()]
    assert dg.materialize([online_drift], instance=instance, resources=resources).success
    assert instance.get_latest_materialization_event(online_drift.key) is not None
    assert rejudged() == []  # judged after the last ingest


def test_window_figures_judge_windows_against_the_profile() -> None:
    """A window of the profile's own month is quiet; the same rides with 25% longer trips drift on trip_distance."""

    def scored(month: str) -> pd.DataFrame:
        rides = load_rides(month)
        return rides.assign(prediction=5 + 3 * rides.trip_distance.clip(0, 30), actual_duration=rides.duration)

    reference = scored("2021-01")
    validation = scored("2021-02")
    prof = calibration.build_profile(
        reference.assign(passenger_count=1.0, fare_amount=1.0, total_amount=1.0),
        validation.assign(passenger_count=1.0, fare_amount=1.0, total_amount=1.0),
        model_tag="stand-in",
        reference_month="2021-01",
        validation_month="2021-02",
        sizes=(1000,),
    )
    arrays = prof.arrays()
    window = reference.sample(1000, random_state=2)
    quiet = window_figures("last_1000", window, prof, arrays)
    longer = window_figures("last_1000", window.assign(trip_distance=window.trip_distance * 1.25), prof, arrays)
    assert quiet.kind == "spread" and not quiet.features.dataset_drift
    assert longer.features.feature("trip_distance").drifted and longer.features.dataset_drift
    assert quiet.rmse == pytest.approx(float(np.sqrt(((window.prediction - window.duration) ** 2).mean())))
    assert quiet.rmse < quiet.rmse_bound

    # Given the newest feedback, a consecutive window's RMSE verdict is the CUSUMs', and it needs no window before it
    # to agree: five chunks 25% above the validation RMSE alarm (rides faster than predicted: no slowdown); under one
    # chunk, no RMSE verdict. A spread window keeps its bound (what was measured for it).
    actual = np.full(5 * RMSE_CHUNK, 20.0)
    worse = pd.DataFrame({PREDICTION: actual + 1.25 * prof.residuals.rmse, ACTUAL: actual})
    assert window_figures("last_1000", window, prof, arrays, worse).rmse_cusum is None
    stretch = reference.sort_values("pickup_datetime", kind="stable").iloc[5000:6000]
    fed = window_figures("last_1000", stretch, prof, arrays, worse)
    assert fed.kind == "consecutive" and fed.slowdown_cusum == 0.0
    assert fed.rmse_cusum > RMSE_CUSUM_LIMIT and confirmed(fed, [quiet])["rmse"]
    assert not confirmed(quiet, [quiet])["rmse"] and not confirmed(longer, [fed])["rmse"]
    unfed = window_figures("last_1000", stretch, prof, arrays, worse[: RMSE_CHUNK - 1])
    assert unfed.rmse_cusum is None and not confirmed(unfed, [fed])["rmse"]
    pushed_cusum = {s.name: s.value for s in online_samples(fed, [quiet], "t", 5.0)}
    assert pushed_cusum["taxi_online_rmse_cusum"] == pytest.approx(fed.rmse_cusum)
    assert pushed_cusum["taxi_online_rmse_cusum_limit"] == RMSE_CUSUM_LIMIT
    # Rides taking a third longer than the validation month's, chunk after chunk, with an RMSE no worse: the slowdown
    # CUSUM raises the alarm alone.
    expected = np.exp(prof.residuals.mean_log_ratio)
    late = pd.DataFrame(
        {PREDICTION: np.full(3 * RMSE_CHUNK, 12.0), ACTUAL: np.full(3 * RMSE_CHUNK, 12.0 * expected * 4 / 3)}
    )
    slow = window_figures("last_1000", stretch, prof, arrays, late)
    assert slow.rmse_cusum < RMSE_CUSUM_LIMIT and slow.slowdown_cusum > SLOWDOWN_CUSUM_LIMIT
    assert confirmed(slow, [quiet])["rmse"]
    assert slow.slowdown_cusum == pytest.approx(3 * np.log(4 / 3))
    pushed_slowdown = {s.name: s.value for s in online_samples(slow, [quiet], "t", 5.0)}
    assert pushed_slowdown["taxi_online_slowdown_cusum"] == pytest.approx(slow.slowdown_cusum)
    assert pushed_slowdown["taxi_online_slowdown_cusum_limit"] == SLOWDOWN_CUSUM_LIMIT

    # Given the newest rides, a consecutive window's dataset alarm is also the distance CUSUM's, which needs no window
    # before it to agree: eight chunks of rides 25% longer raise it; the same rides as they were do not.
    recent = reference.sort_values("pickup_datetime", kind="stable").iloc[6000:14000]
    far = window_figures(
        "last_1000", stretch, prof, arrays, rides=recent.assign(trip_distance=recent.trip_distance * 1.25)
    )
    near = window_figures("last_1000", stretch, prof, arrays, rides=recent)
    assert far.distance_cusum > DISTANCE_CUSUM_LIMIT > near.distance_cusum
    assert confirmed(far, [quiet])["dataset"] and not confirmed(near, [quiet])["dataset"]
    assert window_figures("last_1000", stretch, prof, arrays, rides=recent.iloc[:999]).distance_cusum is None

    names = {sample.name for sample in online_samples(longer, [quiet], "stand-in", 5.0)}
    assert {"taxi_online_rmse_bound", "taxi_online_prediction_drifted", "taxi_online_feature_drift_effect"} <= names

    def dataset_alarm(figures, previous) -> float:
        (alarm,) = (
            s.value
            for s in online_samples(figures, previous, "t", 5.0)
            if s.name == "taxi_online_alarm" and s.labels["alarm"] == "dataset"
        )
        return alarm

    # An alarm needs the evaluation before to agree: a drifted window after a quiet one is not yet an alarm.
    assert dataset_alarm(longer, [longer]) == 1.0
    assert dataset_alarm(longer, [quiet]) == 0.0
    # An hour needs both hours before it to agree; given one, the caller is wrong, not the traffic.
    hour = dataclasses.replace(longer, window="hour")
    assert dataset_alarm(hour, [longer, longer]) == 1.0
    assert dataset_alarm(hour, [longer, quiet]) == dataset_alarm(hour, [quiet, longer]) == 0.0
    with pytest.raises(ValueError, match="needs 2 windows before it"):
        dataset_alarm(hour, [longer])
    # Too few rides for any test: "insufficient data", no verdict either way.
    for few in (window.head(0), window.head(50)):
        figures = window_figures("hour", few, prof, arrays)
        samples = {sample.name: sample.value for sample in online_samples(figures, [figures, figures], "t", 5.0)}
        assert samples["taxi_online_window_sufficient"] == 0.0
        assert not set(samples) & {"taxi_online_dataset_drift", "taxi_online_feature_drifted", "taxi_online_alarm"}


def day_rows(day: str) -> list[tuple]:
    with platform_resources()["warehouse"].get_connection() as conn:
        return conn.execute(
            "SELECT * EXCLUDE (feedback_ts) FROM online_predictions WHERE day = $d ORDER BY id", {"d": day}
        ).fetchall()


def test_prediction_logs_skips_torn_lines_and_reads_mongodb_alike(
    platform_env: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = dt.datetime.now(UTC)
    day = now.date().isoformat()
    records = [prediction(f"m{i}", now, value=5.0 + i) for i in range(4)] + [feedback("m2", now, 6.5)]
    write(records)
    (segment,) = (platform_env / "prediction_logs" / day).glob("*.jsonl")
    with open(segment, "ab") as f:
        f.write(b'not json\n{"kind": "prediction", "id": "torn')  # a corrupt line and a torn last one
    assert ingest(instance, day).success
    from_files = day_rows(day)
    assert [row[1] for row in from_files] == ["m0", "m1", "m2", "m3"]
    assert [row[-2] for row in from_files] == [None, None, 6.5, None]  # actual_duration

    collection = mongomock.MongoClient().taxi.prediction_logs
    writer = predlog.MongoLogWriter("mongodb://unused", platform_env / "spool", collection_obj=collection)
    assert writer.append(records)
    writer.close()
    reader = predlog.MongoLogReader("mongodb://unused", collection_obj=collection)
    monkeypatch.setattr(PredictionLogStore, "reader", lambda self: reader)
    assert ingest(instance, day).success
    assert day_rows(day) == from_files
