"""`taxi-replay` against a real `bentoml serve`: its summary is what the service logged and the ingest stored, 4xx
answers are counted with their reasons, and Ctrl-C stops it cleanly with a summary."""

import datetime as dt
import http.server
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from taxi_assets import settings
from taxi_assets.cli import replay as cli
from taxi_assets.core import predlog
from taxi_assets.core.tlc import RAW_COLUMNS
from taxi_assets.defs.online_monitoring.assets import prediction_logs
from taxi_assets.replay import engine, rides, stats
from tests.support import service_harness as harness
from tests.support.platform import REPO_ROOT, free_port, platform_resources

TAXI_REPLAY = REPO_ROOT / ".venv" / "bin" / "taxi-replay"
GOOD_ROWS, BAD_LOCATION_ROWS, NEGATIVE_DURATION_ROWS = 300, 3, 2


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tlc_dir: Path) -> Iterator[tuple[str, Path]]:
    work = tmp_path_factory.mktemp("replay-service")
    harness.save_deployed_model(work / "bentoml")
    port = free_port()
    process = harness.serve(work / "bentoml", work / "logs", port, work / "serve.log")
    yield f"http://127.0.0.1:{port}", work / "logs"
    harness.stop(process)


def source_with_faults(folder: Path, tlc_dir: Path) -> Path:
    """2022-02 as TLC publishes it, cut to a few hundred real rows, plus rows the service must refuse: location 0
    (a 400 for the prediction) and a drop-off before the pickup (a 400 for the feedback)."""
    table = pq.read_table(tlc_dir / "green_tripdata_2022-02.parquet").slice(0, GOOD_ROWS + 10)
    table = table.filter(pc.field("lpep_dropoff_datetime") > pc.field("lpep_pickup_datetime")).slice(0, GOOD_ROWS)
    bad_location = table.slice(0, BAD_LOCATION_ROWS)
    bad_location = bad_location.set_column(
        bad_location.schema.get_field_index("PULocationID"), "PULocationID", pa.array([0] * BAD_LOCATION_ROWS)
    )
    backwards = table.slice(10, NEGATIVE_DURATION_ROWS)
    pickup, dropoff = backwards["lpep_pickup_datetime"], backwards["lpep_dropoff_datetime"]
    backwards = backwards.set_column(
        backwards.schema.get_field_index("lpep_pickup_datetime"), "lpep_pickup_datetime", dropoff
    )
    backwards = backwards.set_column(
        backwards.schema.get_field_index("lpep_dropoff_datetime"), "lpep_dropoff_datetime", pickup
    )
    folder.mkdir()
    pq.write_table(pa.concat_tables([table, bad_location, backwards]), folder / "green_tripdata_2022-02.parquet")
    return folder


def logged(logs: Path, prefix: str) -> tuple[dict[str, dict], dict[str, float]]:
    """The service's log records of one replay: predictions and feedback by ride id."""
    reader = predlog.FileLogReader(logs)
    records = [record for day in sorted(p.name for p in logs.iterdir()) for record in reader.read_day(day)]
    mine = [record for record in records if record["id"].startswith(prefix)]
    predictions = {record["id"]: record for record in mine if record["kind"] == "prediction"}
    feedback = {record["id"]: record["actual_duration"] for record in mine if record["kind"] == "feedback"}
    return predictions, feedback


@pytest.mark.service
def test_the_summary_is_what_the_service_logged_and_the_ingest_stored(
    service: tuple[str, Path], tmp_path: Path, tlc_dir: Path, platform_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, logs = service
    source = source_with_faults(tmp_path / "tlc", tlc_dir)
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        [str(TAXI_REPLAY), "--url", url, "--source", str(source), "--month", "2022-02", "--rate", "max"]
        + ["--speed", "inf", "--all-rides", "--id-prefix", "t1", "--summary-json", str(summary_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_path.read_text())
    sent = GOOD_ROWS + BAD_LOCATION_ROWS + NEGATIVE_DURATION_ROWS
    predicted = GOOD_ROWS + NEGATIVE_DURATION_ROWS
    assert summary["predict"] | {"reasons": None, "latency_ms": None, "per_second": None} == {
        "sent": sent,
        "2xx": predicted,
        "4xx": BAD_LOCATION_ROWS,
        "5xx": 0,
        "no_answer": 0,
        "reasons": None,
        "latency_ms": None,
        "per_second": None,
    }
    ((reason, count),) = summary["predict"]["reasons"].items()
    assert count == BAD_LOCATION_ROWS and reason.startswith("400: PULocationID")
    assert (summary["feedback"]["sent"], summary["feedback"]["2xx"], summary["feedback"]["4xx"]) == (
        predicted,
        GOOD_ROWS,
        NEGATIVE_DURATION_ROWS,
    )
    ((reason, count),) = summary["feedback"]["reasons"].items()
    assert count == NEGATIVE_DURATION_ROWS and reason.startswith("400: actual_duration")
    assert set(summary["predict"]["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert "/predict: sent 305, 2xx 302, 4xx 3" in done.stdout

    predictions, feedback = logged(logs, "t1-")
    assert len(predictions) == summary["predict"]["2xx"] and len(feedback) == summary["feedback"]["2xx"]
    first = pq.read_table(source / "green_tripdata_2022-02.parquet").slice(0, 1).to_pylist()[0]
    ride = predictions["t1-2022-02-0"]
    assert (ride["PULocationID"], ride["DOLocationID"], ride["trip_distance"]) == (
        first["PULocationID"],
        first["DOLocationID"],
        first["trip_distance"],
    )
    assert ride["pickup_datetime"] == first["lpep_pickup_datetime"].isoformat()
    expected = (first["lpep_dropoff_datetime"] - first["lpep_pickup_datetime"]).total_seconds() / 60
    assert feedback["t1-2022-02-0"] == pytest.approx(expected, abs=1e-5)

    # The ingest stores exactly what the replay counted.
    monkeypatch.setenv("TAXI_PREDLOG_URI", str(logs))
    resources = platform_resources()
    for day in sorted(p.name for p in logs.iterdir()):
        assert dg.materialize([prediction_logs], partition_key=day, resources=resources).success
    with resources["warehouse"].get_connection() as conn:
        stored = conn.execute(
            "SELECT count(*), count(actual_duration) FROM online_predictions WHERE id LIKE 't1-%'"
        ).fetchone()
    assert stored == (summary["predict"]["2xx"], summary["feedback"]["2xx"])


@pytest.mark.service
def test_ctrl_c_stops_the_replay_with_a_summary_and_no_traceback(
    service: tuple[str, Path], tmp_path: Path, tlc_dir: Path
) -> None:
    url, logs = service
    summary_path = tmp_path / "summary.json"
    process = subprocess.Popen(
        [str(TAXI_REPLAY), "--url", url, "--source", str(tlc_dir), "--month", "2022-02", "--rate", "40"]
        + ["--speed", "60", "--id-prefix", "t2", "--summary-json", str(summary_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(logged(logs, "t2-")[0]) < 40 and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    stdout, stderr = process.communicate(timeout=30)
    assert time.monotonic() - stopped < engine.DRAIN_SECONDS + 3
    assert process.returncode == cli.INTERRUPTED_EXIT_STATUS, stderr
    assert "Traceback" not in stderr and "(interrupted)" in stdout
    summary = json.loads(summary_path.read_text())
    assert summary["interrupted"] and 40 <= summary["predict"]["sent"] < summary["rides"]
    # Rides take minutes, a second of replay is a minute of the month: most feedback was not yet due.
    assert summary["feedback"]["not_sent"] > 0
    predictions, feedback = logged(logs, "t2-")
    assert len(predictions) == summary["predict"]["2xx"] and len(feedback) == summary["feedback"]["2xx"]


def replay_into_log(url: str, source: Path, prefix: str, *flags: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(TAXI_REPLAY), "--url", url, "--source", str(source), "--month", "2022-02", "--limit", str(SCENARIO_RIDES)]
        + ["--rate", "max", "--no-feedback", "--no-progress", "--id-prefix", prefix, *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


SCENARIO_RIDES = 200


@pytest.mark.service
@pytest.mark.parametrize("raw", [False, True], ids=["documented-fields", "raw-tlc-rows"])
def test_scenario_flags_change_exactly_what_the_service_receives(
    service: tuple[str, Path], tlc_dir: Path, raw: bool
) -> None:
    """From the prediction log the service wrote: with --distance-scale 1.5 --hour-shift 3 every ride's distance is
    its TLC distance x 1.5 and its pickup 3 hours later, and --start-day 8 starts at the 8th; without the flags
    distance and pickup are the TLC row's own, from the 1st."""
    url, logs = service
    mode = ["--raw-tlc-rows"] if raw else []
    tag = "r" if raw else "d"
    plain = replay_into_log(url, tlc_dir, f"s0{tag}", *mode)
    shifted = replay_into_log(
        url, tlc_dir, f"s1{tag}", *mode, "--distance-scale", "1.5", "--hour-shift", "3", "--start-day", "8"
    )
    assert shifted.stderr.splitlines()[0].startswith("replay: trip data from ")
    assert "(distances x1.5, pickups shifted by +3 h)" in shifted.stderr
    assert "distances x" not in plain.stderr

    rows = pq.read_table(tlc_dir / "green_tripdata_2022-02.parquet").to_pylist()
    for prefix, scale, shift, first_day in ((f"s0{tag}", 1.0, 0, 1), (f"s1{tag}", 1.5, 3, 8)):
        predictions, _ = logged(logs, f"{prefix}-")
        assert len(predictions) == SCENARIO_RIDES
        days = set()
        for ride_id, record in predictions.items():
            row = rows[int(ride_id.rsplit("-", 1)[1])]
            days.add(row["lpep_pickup_datetime"].day)
            assert record["trip_distance"] == row["trip_distance"] * scale, ride_id
            expected = row["lpep_pickup_datetime"] + dt.timedelta(hours=shift)
            assert record["pickup_datetime"] == expected.isoformat(), ride_id
            assert (record["PULocationID"], record["DOLocationID"]) == (row["PULocationID"], row["DOLocationID"])
        assert min(days) == first_day  # --start-day: the timeline starts at that day of the month


@pytest.mark.unit
@pytest.mark.parametrize(
    "flag", ["--distance-scale=-1", "--distance-scale=nan", "--hour-shift=inf", "--start-day=0", "--start-day=32"]
)
def test_a_scenario_that_is_not_a_number_of_rides_is_refused(flag: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--month", "2022-02", flag])
    assert stopped.value.code == 2 and flag.split("=")[0] in capsys.readouterr().err


@pytest.mark.unit
def test_scenarios_mix_months_on_one_timeline_and_distort_only_what_is_sent(tlc_dir: Path) -> None:
    plain = rides.load_rides(["2021-01", "2022-02"], str(tlc_dir), "unused", all_rides=False, raw=False)
    shifted = rides.load_rides(
        ["2021-01", "2022-02"], str(tlc_dir), "unused", False, False, rides.Scenario(distance_scale=2, hour_shift=3)
    )
    assert set(plain["month"]) == {"2021-01", "2022-02"} and plain["offset_s"].is_monotonic_increasing
    assert plain["duration_min"].between(1, 60).all()
    # Interleaved: both months appear within the first hour of the timeline.
    assert set(plain.loc[plain["offset_s"] < 3600, "month"]) == {"2021-01", "2022-02"}
    assert (shifted["trip_distance"] == plain["trip_distance"] * 2).all()
    assert ((shifted[rides.PICKUP] - plain[rides.PICKUP]).dt.total_seconds() == 3 * 3600).all()
    assert (shifted["duration_min"] == plain["duration_min"]).all() and (shifted["offset_s"] == plain["offset_s"]).all()
    sent = engine.Replay("http://unused", shifted, "r", rate=None, speed=60)
    body = rides.ride_payload(sent.ride(0), sent.ride_id(sent.ride(0)), raw=False)
    assert body["id"] == f"r-{shifted['month'].iat[0]}-{shifted['row'].iat[0]}"
    assert body["pickup_datetime"] == shifted[rides.PICKUP].iat[0].isoformat()
    raw_rides = engine.Replay(
        "http://unused", rides.load_rides(["2022-02"], str(tlc_dir), "", False, True), "r", None, 60
    )
    raw = rides.ride_payload(raw_rides.ride(0), "r", raw=True)
    assert set(raw) == {"id", *RAW_COLUMNS} and isinstance(raw["PULocationID"], int)
    json.dumps(raw, allow_nan=False)  # missing values are nulls, timestamps strings


@pytest.mark.unit
def test_refusals_are_grouped_by_field_and_message_without_the_values() -> None:
    body = json.dumps(
        {
            "error": "1 validation error for RideIODescriptor",
            "detail": [{"loc": ["trip_distance"], "msg": "Input should be less than 500", "type": "less_than"}],
        }
    )
    assert stats.reason(400, body) == "400: trip_distance: Input should be less than 500"
    assert stats.reason(415, "not json") == "415: not json"


@pytest.mark.unit
def test_a_missing_month_is_named_and_nothing_is_sent(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--source", str(tmp_path), "--month", "2021-04"]) == 2
    assert f"2021-04: no file at {tmp_path}" in capsys.readouterr().err


class TruncatingSource(http.server.BaseHTTPRequestHandler):
    """A trip-data address whose downloads stop short of the length they announce (a dropped connection)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"PAR1" + bytes(996))

    def log_message(self, *args) -> None:
        pass


@pytest.mark.integration
def test_a_truncated_download_is_refused_and_never_cached(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """taxi-replay downloads a remote month as the Dagster side does (taxi_assets/trip_files.py), with its check."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TruncatingSource)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    source = f"http://127.0.0.1:{server.server_address[1]}/green_tripdata_{{month}}.parquet"
    monkeypatch.setenv("TAXI_CACHE_DIR", str(tmp_path / "cache"))
    settings.current.cache_clear()
    try:
        assert cli.main(["--source", source, "--month", "2021-04"]) == 2
    finally:
        server.shutdown()
        settings.current.cache_clear()
    error = capsys.readouterr().err
    assert f"2021-04: {source.format(month='2021-04')} ended after 1000 of 100000 bytes" in error, error
    assert list((tmp_path / "cache").iterdir()) == []


class SlowService(http.server.BaseHTTPRequestHandler):
    """A /predict that answers after a pause, counting the requests it holds at once (the server's `in_flight`)."""

    def do_POST(self) -> None:
        server = self.server
        self.rfile.read(int(self.headers["Content-Length"]))
        with server.lock:
            server.in_flight += 1
            server.most = max(server.most, server.in_flight)
        # Long enough for every request the replay holds open to arrive, on a busy machine too: at 0.2 s, with
        # two e2e tests beside it, the eighth came after the first had been answered (7 == 8, once).
        time.sleep(1.0)
        with server.lock:
            server.in_flight -= 1
        body = b'{"prediction": 12.0}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.integration
@pytest.mark.parametrize("concurrency", [3, 8])
def test_concurrency_is_the_number_of_requests_in_flight(concurrency: int, tlc_dir: Path) -> None:
    """`--concurrency N`: as fast as it can (`--rate max`), the replay holds exactly N requests open at once."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowService)
    server.lock, server.in_flight, server.most = threading.Lock(), 0, 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run(
            [str(TAXI_REPLAY), "--url", f"http://127.0.0.1:{server.server_address[1]}", "--source", str(tlc_dir)]
            + ["--month", "2021-01", "--limit", str(5 * concurrency), "--rate", "max", "--no-feedback"]
            + ["--no-progress", "--concurrency", str(concurrency)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sent {5 * concurrency}, 2xx {5 * concurrency}" in done.stdout + done.stderr
    assert server.most == concurrency


@pytest.mark.unit
def test_the_replay_never_reuses_a_connection_the_service_may_be_closing() -> None:
    """The service is `bentoml serve` with BentoML's keep-alive timeout (the README's command, compose.yaml and
    tests/support/service_harness.py set none); the replay lets its idle connections go well before it."""
    from _bentoml_impl.worker.service import main as bentoml_worker

    (server_keep_alive,) = [p.default for p in bentoml_worker.params if p.name == "timeout_keep_alive"]
    assert server_keep_alive / 2 >= engine.IDLE_CONNECTION_SECONDS
    for path in ("compose.yaml", "README.md", "Makefile", "scripts/up.sh", "tests/support/service_harness.py"):
        assert "keep-alive" not in (REPO_ROOT / path).read_text().replace("Keep-Alive", "keep-alive"), path
