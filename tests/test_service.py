"""The Bento service over HTTP: a real `bentoml serve` process, a model trained on real TLC rides, real log files."""

import datetime as dt
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import openapi_spec_validator
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bento_service.model_process import ModelProcess
from taxi_assets.core import predlog
from taxi_assets.core.model import FEATURE_FIELDS
from tests.support import course_client
from tests.support import service_harness as harness
from tests.support.platform import MANIFEST_ROWS, free_port, wait_until

pytestmark = pytest.mark.service

MAX_BATCH_RIDES = 10_000  # the service's documented limit

RIDE = {"PULocationID": 74, "DOLocationID": 42, "trip_distance": 1.7, "pickup_datetime": "2022-01-03T08:15:00"}


class Served:
    def __init__(self, url: str, logs: Path, bentoml_home: Path, process: subprocess.Popen) -> None:
        self.url, self.logs, self.bentoml_home, self.process = url, logs, bentoml_home, process

    def post(self, path: str, body, **kwargs) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers = {"Content-Type": "application/json"}
        return requests.post(f"{self.url}{path}", data=data, headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory, tlc_dir: Path) -> Path:
    home = tmp_path_factory.mktemp("bentoml")
    harness.save_deployed_model(home)
    return home


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, bentoml_home: Path) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("service")
    port = free_port()
    process = harness.serve(bentoml_home, work / "logs", port, work / "serve.log")
    yield Served(f"http://127.0.0.1:{port}", work / "logs", bentoml_home, process)
    harness.stop(process)


@pytest.fixture(scope="module")
def pipeline(bentoml_home: Path):
    """The deployed artefact itself, read from the store the service loads it from."""
    (path,) = bentoml_home.glob("models/taxi_duration_deployed/*/saved_model.pkl")
    return joblib.load(path)


@pytest.fixture(scope="module")
def rides_2022() -> pd.DataFrame:
    return harness.load_rides("2022-01").sample(3000, random_state=7).reset_index(drop=True)


def _today_records(logs: Path) -> list[dict]:
    return predlog.FileLogReader(logs).read_day(dt.datetime.now(dt.timezone.utc).date().isoformat())


def test_ready_with_the_deployed_model(served: Served) -> None:
    assert requests.get(f"{served.url}/readyz", timeout=5).status_code == 200
    (version,) = [p.name for p in served.bentoml_home.glob("models/taxi_duration_deployed/*") if p.is_dir()]
    assert served.post("/predict", RIDE).json()["model_tag"] == f"taxi_duration_deployed:{version}"


def test_the_access_log_names_each_request_s_trace_and_span(served: Served) -> None:
    """Spans are recorded only when sampled (compat.record_sampled_spans_only; BentoML's sample rate is 0 by
    default), yet the access log still names every request's trace and span, as BentoML's own does."""
    assert served.post("/predict", {**RIDE, "id": "traced"}).status_code == 200
    log = served.logs.parent / "serve.log"
    pattern = re.compile(r"path=/predict,.*\(status=200,.*\(trace=([0-9a-f]{32}),span=([0-9a-f]{16}),sampled=0")
    found = wait_until(lambda: pattern.findall(log.read_text()), 10, "an access log line of /predict")
    assert all(int(trace_id, 16) and int(span_id, 16) for trace_id, span_id in found), found[-3:]


def test_single_predictions_equal_the_pipeline(served: Served, pipeline, rides_2022: pd.DataFrame) -> None:
    rides = rides_2022.head(40)
    expected = pipeline.predict(rides[FEATURE_FIELDS])
    for i, payload in enumerate(harness.ride_payloads(rides)):
        answer = served.post("/predict", {**payload, "id": f"single-{i}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == f"single-{i}"
        assert answer.json()["duration_minutes"] == pytest.approx(expected[i], rel=1e-9)


def test_batch_predictions_equal_the_pipeline_in_order(served: Served, pipeline, rides_2022: pd.DataFrame) -> None:
    expected = pipeline.predict(rides_2022[FEATURE_FIELDS])
    answer = served.post("/predict_batch", {"rides": harness.ride_payloads(rides_2022)})
    assert answer.status_code == 200, answer.text
    results = answer.json()["predictions"]
    np.testing.assert_allclose([r["duration_minutes"] for r in results], expected, rtol=1e-9)
    assert len({r["id"] for r in results}) == len(results)
    logged = {r["id"]: r for r in _today_records(served.logs) if r["kind"] == "prediction"}
    assert all(logged[r["id"]]["prediction"] == r["duration_minutes"] for r in results)


def test_feedback_is_logged(served: Served) -> None:
    answer = served.post("/feedback", {"id": "ride-fb", "actual_duration": 12.5})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": "ride-fb", "recorded": True}
    feedback = [r for r in _today_records(served.logs) if r["kind"] == "feedback" and r["id"] == "ride-fb"]
    assert [r["actual_duration"] for r in feedback] == [12.5]


MALFORMED = [
    ("/predict", {**RIDE, "PULocationID": 0}, "PULocationID"),
    ("/predict", {**RIDE, "DOLocationID": 266}, "DOLocationID"),
    ("/predict", {**RIDE, "DOLocationID": "42"}, "DOLocationID"),
    ("/predict", {**RIDE, "PULocationID": 7.5}, "PULocationID"),
    ("/predict", {**RIDE, "trip_distance": -1}, "trip_distance"),
    ("/predict", {**RIDE, "trip_distance": "1.7"}, "trip_distance"),
    ("/predict", {**RIDE, "trip_distance": None}, "trip_distance"),
    (
        "/predict",
        '{"PULocationID": 74, "DOLocationID": 42, "trip_distance": NaN, "pickup_datetime": "2022-01-03"}',
        "trip_distance",
    ),
    (
        "/predict",
        '{"PULocationID": 74, "DOLocationID": 42, "trip_distance": Infinity, "pickup_datetime": "2022-01-03"}',
        "trip_distance",
    ),
    ("/predict", {**RIDE, "pickup_datetime": "yesterday"}, "pickup_datetime"),
    ("/predict", {**RIDE, "pickup_datetime": "9999-01-01T00:00:00"}, "pickup_datetime"),
    ("/predict", {k: v for k, v in RIDE.items() if k != "trip_distance"}, "trip_distance"),
    ("/predict", '{"PULocationID": 74,', "json_invalid"),
    ("/predict", [RIDE], "object"),
    ("/predict_batch", {"rides": [RIDE, {**RIDE, "PULocationID": None}]}, "PULocationID"),
    ("/predict_batch", {"rides": []}, "at least 1"),
    ("/predict_batch", {"rides": [RIDE] * (MAX_BATCH_RIDES + 1)}, "at most 10000"),
    ("/predict_batch", {"rides": RIDE}, "list"),
    ("/predict_batch", [RIDE], "object"),
    ("/predict_batch", b"\x00", "json_invalid"),
    ("/feedback", {"id": "r1", "actual_duration": 0}, "actual_duration"),
    ("/feedback", {"id": "", "actual_duration": 3}, "id"),
    ("/feedback", '{"id": "r1", "actual_duration": NaN}', "actual_duration"),
    ("/predict", {**RIDE, "id": "ride\x00"}, "control characters"),
    ("/predict_batch", {"rides": [{**RIDE, "id": "r\x001"}]}, "control characters"),
    ("/feedback", {"id": "\x00", "actual_duration": 3}, "control characters"),
    ("/feedback", {"id": "r1\n", "actual_duration": 3}, "control characters"),
    ("/predict_batch", {"rides": [{**RIDE, "id": "dup"}, RIDE, {**RIDE, "id": "dup"}]}, "'dup' is given twice"),
    ("/predict", {**RIDE, "lpep_pickup_datetime": "2022-01-03T09:15:00"}, "lpep_pickup_datetime"),
    ("/predict", {k: v for k, v in RIDE.items() if k != "pickup_datetime"}, "pickup_datetime"),
]


@pytest.mark.parametrize(("path", "body", "named"), MALFORMED)
def test_malformed_input_is_a_4xx_naming_the_field(served: Served, path: str, body, named: str) -> None:
    answer = served.post(path, body)
    assert 400 <= answer.status_code < 500, answer.text
    assert named in answer.text


SAME_RULES_RIDES = [
    RIDE,
    {**RIDE, "trip_distance": 260_000.0},  # an odometer glitch: predicted, counted as an outlier
    {**RIDE, "trip_distance": 0},
    {**RIDE, "pickup_datetime": "2022-01-03 08:15:00.5"},
    {**{k: v for k, v in RIDE.items() if k != "pickup_datetime"}, "lpep_pickup_datetime": "2022-01-03T08:15"},
    {**RIDE, "pickup_datetime": "2022-01-03T08:15:00+05:00"},
    {**RIDE, "PULocationID": 0},
    {**RIDE, "DOLocationID": "42"},
    {**RIDE, "trip_distance": -0.5},
    {**RIDE, "pickup_datetime": "2022-02-30T08:15:00"},
    {**RIDE, "pickup_datetime": "1999-12-31T23:59:59"},
    {**RIDE, "id": "x" * 129},
]


def test_a_batch_gets_the_answers_and_4xx_of_its_rides_one_by_one(served: Served) -> None:
    """Every ride alone through /predict and as a one-ride batch through /predict_batch: the same prediction or
    the same 4xx naming the same field; the valid ones together in one batch: the same predictions in order."""
    valid = []
    for ride in SAME_RULES_RIDES:
        single, batch = served.post("/predict", ride), served.post("/predict_batch", {"rides": [ride]})
        assert single.status_code == batch.status_code, (ride, single.text, batch.text)
        if single.ok:
            valid.append(ride)
            assert batch.json()["predictions"][0]["duration_minutes"] == single.json()["duration_minutes"]
        else:
            assert 400 <= single.status_code < 500
            assert _errors(single) == _errors(batch), ride
    assert len(valid) == 6
    together = served.post("/predict_batch", {"rides": valid}).json()["predictions"]
    singles = [served.post("/predict", ride).json()["duration_minutes"] for ride in valid]
    assert [p["duration_minutes"] for p in together] == singles


def _errors(answer: requests.Response) -> list[tuple]:
    """Each pydantic error of a 400 (its type, field and message), wherever the field sits in the body."""
    return [(e["type"], e["loc"][-1], e["msg"]) for e in answer.json()["detail"]]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)
FIELD_VALUES = {
    "PULocationID": st.integers(-5, 300) | JSON_VALUES,
    "DOLocationID": st.integers(-5, 300) | JSON_VALUES,
    "trip_distance": st.floats(allow_nan=True, allow_infinity=True) | JSON_VALUES,
    "pickup_datetime": st.datetimes().map(dt.datetime.isoformat) | st.text(max_size=40) | JSON_VALUES,
    "id": st.text(max_size=200) | JSON_VALUES,
}
RIDE_BODIES = st.fixed_dictionaries({}, optional=FIELD_VALUES)
FEEDBACK_BODIES = st.fixed_dictionaries(
    {}, optional={"id": FIELD_VALUES["id"], "actual_duration": FIELD_VALUES["trip_distance"]}
)


def _encoded(body) -> bytes:
    # json.dumps writes NaN/Infinity as Python does: exactly the non-JSON a sloppy client sends.
    return json.dumps(body).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.sampled_from(["/predict", "/predict_batch", "/feedback"]),
    body=st.one_of(
        RIDE_BODIES.map(_encoded),
        st.lists(RIDE_BODIES, max_size=4).map(lambda rides: _encoded({"rides": rides})),
        FEEDBACK_BODIES.map(_encoded),
        JSON_VALUES.map(_encoded),
        st.binary(max_size=64),
    ),
)
def test_fuzzed_bodies_never_get_a_5xx(served: Served, target: str, body: bytes) -> None:
    answer = served.post(target, body)
    assert answer.status_code < 500, (target, body, answer.text)


def test_every_api_in_the_openapi_document_is_fuzzed(served: Served) -> None:
    paths = requests.get(f"{served.url}/docs.json", timeout=5).json()["paths"]
    assert {"/predict", "/predict_batch", "/feedback"} <= set(paths)
    assert {p for p in paths if "post" in paths[p]} == {"/predict", "/predict_batch", "/feedback"}


def _metric(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    assert values, f"{name} missing from /metrics"
    return sum(values)


def test_metrics_count_what_was_served(served: Served) -> None:
    tag = served.post("/predict", RIDE).json()["model_tag"]
    before = requests.get(f"{served.url}/metrics", timeout=5).text
    assert served.post("/predict_batch", {"rides": [RIDE] * 25}).status_code == 200
    after = requests.get(f"{served.url}/metrics", timeout=5).text

    predicted = f'taxi_predictions_total{{model_tag="{tag}"}}'
    assert _metric(after, predicted) - _metric(before, predicted) == 25
    count = "taxi_input_trip_distance_miles_count"
    assert _metric(after, count) - _metric(before, count) == 25
    assert _metric(after, 'taxi_input_trip_distance_miles_bucket{le="2.0"}') >= 25
    assert _metric(after, 'taxi_input_pickup_hour_bucket{le="8.0"}') >= 25
    assert _metric(after, "taxi_predicted_duration_minutes_count") >= 26
    assert _metric(after, "taxi_predlog_write_failures_total") == 0
    assert _metric(after, "taxi_predlog_spool_backlog") == 0
    assert "bentoml_service_request_total" in after


def test_every_taxi_metric_of_the_service_has_help_and_is_in_the_contract(served: Served) -> None:
    assert served.post("/predict", {**RIDE, "trip_distance": 0}).status_code == 200  # an outlier: its series exists
    text = requests.get(f"{served.url}/metrics", timeout=5).text
    helped = dict(re.findall(r"^# HELP (taxi_\w+) (.+)$", text, re.MULTILINE))
    exposed = {re.sub(r"_(bucket|sum|count|created)$", "", name) for name in re.findall(r"^(taxi_\w+)", text, re.M)}
    contract = (harness.REPO_ROOT / "docs" / "contracts.md").read_text()
    assert "taxi_input_outliers_total" in exposed
    for name in exposed:
        assert helped.get(name) or helped.get(name.removesuffix("_total")), f"{name} has no HELP"
        assert f"`{name}" in contract, f"{name} is not in docs/contracts.md"


def test_kill_9_loses_no_answered_record_and_two_workers_never_interleave(
    tmp_path: Path, bentoml_home: Path, rides_2022: pd.DataFrame
) -> None:
    port = free_port()
    process = harness.serve(bentoml_home, tmp_path / "logs", port, tmp_path / "serve.log", workers=2)
    url = f"http://127.0.0.1:{port}"
    payloads = harness.ride_payloads(rides_2022)
    answered: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        for n in range(10**6):
            if stop.is_set():
                return
            # No keep-alive: every request is a new connection, so both worker processes get some.
            try:
                if n % 5 == 0:
                    body = [{**p, "id": f"t{worker}-{n}-{i}"} for i, p in enumerate(payloads[n % 2000 :][:50])]
                    answer = requests.post(f"{url}/predict_batch", json={"rides": body}, timeout=10)
                    ok = answer.status_code == 200
                    ids = [r["id"] for r in answer.json()["predictions"]] if ok else []
                else:
                    ride = {**payloads[n % 3000], "id": f"t{worker}-{n}"}
                    answer = requests.post(f"{url}/predict", json=ride, timeout=10)
                    ids = [answer.json()["id"]] if answer.status_code == 200 else []
            except requests.RequestException:
                continue  # the server died under this request: its answer never came
            if answer.status_code != 200:
                refused.append(answer.text)
            answered.extend(ids)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    harness.kill_tree(process, signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(30)

    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/readyz", timeout=2)  # every worker is gone
    assert not refused
    assert len(answered) > 500
    segments = list((tmp_path / "logs").glob("*/*.jsonl"))
    assert len({path.name.rsplit("-", 1)[0] for path in segments}) == 2, "both workers must have logged"
    for segment in segments:
        lines = segment.read_bytes().split(b"\n")
        lines.pop()  # b"" unless the kill landed inside a write: then a partial record, never answered
        # Each line is one whole record: a torn or interleaved write would not parse or would lose keys.
        records = [json.loads(line) for line in lines]
        assert all(r.keys() == set(predlog.prediction_record(RIDE, 1.0, "t")) for r in records)
    logged = [r["id"] for r in _today_records(tmp_path / "logs")]
    assert len(logged) == len(set(logged))
    assert set(answered) <= set(logged)


def test_a_dead_model_process_is_replaced_without_failing_requests(served: Served) -> None:
    processes = psutil.Process(served.process.pid).children(recursive=True)
    (model_process,) = [p for p in processes if "spawn_main" in " ".join(p.cmdline())]
    model_process.kill()
    model_process.wait(10)
    answer = served.post("/predict", RIDE)
    assert answer.status_code == 200, answer.text
    assert served.post("/predict", RIDE).status_code == 200


def test_mongodb_down_keeps_serving_and_shows_the_spool(
    tmp_path: Path, bentoml_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAXI_PREDLOG_SPOOL_DIR", str(tmp_path / "spool"))
    port = free_port()
    mongo_uri = f"mongodb://127.0.0.1:{free_port()}/"  # nothing listens there
    process = harness.serve(bentoml_home, mongo_uri, port, tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}"
        assert requests.post(f"{url}/predict", json=RIDE, timeout=10).status_code == 200
        time.sleep(3)  # the shipper's first attempt times out after 2 s
        assert requests.post(f"{url}/predict", json=RIDE, timeout=10).status_code == 200
        metrics = requests.get(f"{url}/metrics", timeout=5).text
    finally:
        harness.stop(process)
    assert _metric(metrics, "taxi_predlog_spool_backlog") >= 1
    assert _metric(metrics, "taxi_predlog_write_failures_total") >= 1
    spooled = [line for path in (tmp_path / "spool").glob("*/*.jsonl") for line in path.read_text().splitlines()]
    assert len(spooled) == 2


def test_the_largest_batch_crosses_to_the_model_process_whole(served: Served, rides_2022: pd.DataFrame) -> None:
    # 10,000 rides are several pipe buffers each way: neither end may give up on a partial read or write.
    rides = harness.ride_payloads(rides_2022.sample(MAX_BATCH_RIDES, replace=True, random_state=3))
    for _ in range(3):
        answer = served.post("/predict_batch", {"rides": rides})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == MAX_BATCH_RIDES


def test_the_model_pipe_is_blocking_again_after_each_batch(pipeline) -> None:
    """uvloop, which BentoML serves on, leaves a watched descriptor non-blocking; whole-message reads and writes
    on the model pipe need it blocking, or a batch caught mid-transfer fails with EAGAIN (a 500)."""
    columns = {
        "PULocationID": [74, 43],
        "DOLocationID": [75, 151],
        "trip_distance": [1.5, 3.0],
        "pickup_datetime": [dt.datetime(2022, 1, 5, 8, 15), dt.datetime(2022, 1, 8, 23, 0)],
    }

    async def exchange() -> tuple[int, bool]:
        process = ModelProcess("test", pipeline, columns)
        try:
            predictions = await process.predict(columns)
            return len(predictions), os.get_blocking(process._conn.fileno())
        finally:
            process.retire()

    assert uvloop.run(exchange()) == (2, True)


RIDE_JSON = json.dumps(RIDE).encode()
NOT_JSON = [
    ("multipart/form-data", b"garbage", "application/json"),  # no boundary
    ("multipart/form-data; boundary=", b"--\r\n\r\n", "application/json"),
    ("multipart/form-data; boundary=xyz", b"--xyz\r\ngarbage", "application/json"),
    ("application/x-www-form-urlencoded", b"PULocationID=74&DOLocationID=42", "application/json"),
    ("text/plain", RIDE_JSON, "application/json"),
    ("application/vnd.bentoml+pickle", b"\x80\x05K\x01.", "application/json"),
]


@pytest.mark.parametrize("path", ["/predict", "/predict_batch", "/feedback"])
@pytest.mark.parametrize(("content_type", "body", "named"), NOT_JSON)
def test_a_body_that_is_not_json_is_a_415_naming_json(
    served: Served, path: str, content_type: str, body: bytes, named: str
) -> None:
    answer = requests.post(f"{served.url}{path}", data=body, headers={"Content-Type": content_type}, timeout=10)
    assert answer.status_code == 415, answer.text
    assert named in answer.json()["error"]
    assert answer.headers["Accept"] == "application/json"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_compressed_body_is_a_415_naming_the_encoding(served: Served, encoding: str) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    answer = requests.post(f"{served.url}/predict", data=gzip.compress(RIDE_JSON), headers=headers, timeout=10)
    assert answer.status_code == 415, answer.text
    assert encoding in answer.json()["error"]
    assert answer.headers["Accept-Encoding"] == "identity"


def test_json_with_a_charset_or_without_a_content_type_is_read(served: Served) -> None:
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert requests.post(f"{served.url}/predict", data=RIDE_JSON, headers=charset, timeout=10).status_code == 200
    bare = requests.Request("POST", f"{served.url}/predict", data=RIDE_JSON).prepare()
    bare.headers.pop("Content-Type", None)
    with requests.Session() as session:
        answer = session.send(bare, timeout=10)
    assert answer.status_code == 200, answer.text


def test_refused_bodies_never_count_as_server_errors(served: Served) -> None:
    def server_errors() -> float:
        text = requests.get(f"{served.url}/metrics", timeout=5).text
        lines = [line for line in text.splitlines() if line.startswith("bentoml_service_request_total")]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if 'http_response_code="5' in line)

    before = server_errors()
    for content_type, body, _ in NOT_JSON:
        requests.post(f"{served.url}/predict", data=body, headers={"Content-Type": content_type}, timeout=10)
    assert server_errors() == before


def test_the_openapi_document_is_valid_and_states_every_bound(served: Served) -> None:
    document = requests.get(f"{served.url}/docs.json", timeout=5).json()
    openapi_spec_validator.validate(document)  # against the version it declares
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "NYC taxi ride duration"
    assert "created with BentoML" not in document["info"]["description"]
    assert "/predict_batch" in document["info"]["description"]
    schemas = document["components"]["schemas"]
    ride = schemas["Ride"]["properties"]
    assert (ride["PULocationID"]["minimum"], ride["PULocationID"]["maximum"]) == (1, 265)
    assert (ride["DOLocationID"]["minimum"], ride["DOLocationID"]["maximum"]) == (1, 265)
    # No upper bound: real TLC rows reach 260,000 miles; they are predicted and counted as outliers.
    assert ride["trip_distance"]["minimum"] == 0
    assert not {"maximum", "exclusiveMaximum"} & set(ride["trip_distance"])
    assert "outlier" in ride["trip_distance"]["description"]
    prediction = schemas["Prediction"]
    assert {"id", "duration_minutes", "duration", "model_tag"} <= set(prediction["required"])
    assert "course" in prediction["properties"]["duration"]["description"]
    pickup = ride["pickup_datetime"]
    assert (pickup["formatMinimum"], pickup["formatExclusiveMaximum"]) == ("2000-01-01T00:00:00", "2100-01-01T00:00:00")
    assert "2000-01-01" in pickup["description"] and "2100-01-01" in pickup["description"]
    assert {"minLength": 1, "maxLength": 128}.items() <= ride["id"]["anyOf"][0].items()
    rides = schemas["predict_batch__Input"]["properties"]["rides"]
    assert (rides["minItems"], rides["maxItems"]) == (1, MAX_BATCH_RIDES)
    duration = schemas["Feedback"]["properties"]["actual_duration"]
    assert (duration["exclusiveMinimum"], duration["maximum"]) == (0, 24 * 60)
    for path in ("/predict", "/predict_batch", "/feedback"):
        assert {"200", "400", "415", "500"} <= set(document["paths"][path]["post"]["responses"])


def test_the_swagger_page_shows_the_services_own_document(served: Served) -> None:
    page = requests.get(f"{served.url}/", timeout=5)
    assert page.status_code == 200 and "swagger-initializer.js" in page.text
    initializer = requests.get(f"{served.url}/static_content/swagger-initializer.js", timeout=5).text
    assert '"./docs.json"' in initializer  # the page renders /docs.json's title and description


def test_schemathesis_finds_no_server_error_and_no_off_schema_response(served: Served, tmp_path: Path) -> None:
    """Bounded: 50 examples per operation, the three POST operations, about 20 s."""
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{served.url}/docs.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--include-method",
        "POST",
        "--max-examples",
        "50",
        "--seed",
        "1",
        "--request-timeout",
        "10",
        "--report-dir",
        str(tmp_path),
    ]
    # In tmp_path: schemathesis keeps a cache directory where it runs.
    env = {**os.environ, "NO_COLOR": "1"}
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert "3 passed" in run.stdout or "passed" in run.stdout


def test_feedback_for_an_id_never_predicted_is_accepted_and_logged(served: Served) -> None:
    """The service cannot know every id ever predicted without a lookup per feedback: it logs the feedback, and
    the ingest keeps it without a prediction to join (documented)."""
    answer = served.post("/feedback", {"id": "never-predicted", "actual_duration": 7.0})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": "never-predicted", "recorded": True}
    logged = [r for r in _today_records(served.logs) if r["id"] == "never-predicted"]
    assert [(r["kind"], r["actual_duration"]) for r in logged] == [("feedback", 7.0)]


@pytest.fixture(scope="module")
def tlc_rows() -> list[dict]:
    """Raw green-taxi rows as the course's client posts them: every TLC column, NaN as null, ISO timestamps."""
    frame = pd.read_parquet(harness.TLC_DIR / "green_tripdata_2022-02.parquet").sample(200, random_state=5)
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{k: v.isoformat() if isinstance(v, pd.Timestamp) else v for k, v in row.items()} for row in rows]


def test_a_raw_tlc_row_is_a_ride(served: Served, pipeline, tlc_rows: list[dict]) -> None:
    assert {"VendorID", "fare_amount", "lpep_pickup_datetime", "ehail_fee"} <= tlc_rows[0].keys()
    assert "pickup_datetime" not in tlc_rows[0]
    features = pd.DataFrame(tlc_rows).rename(columns={"lpep_pickup_datetime": "pickup_datetime"})
    features["pickup_datetime"] = pd.to_datetime(features["pickup_datetime"])
    expected = pipeline.predict(features[FEATURE_FIELDS])
    for row, duration in list(zip(tlc_rows, expected, strict=True))[:20]:
        answer = served.post("/predict", row)
        assert answer.status_code == 200, answer.text
        assert answer.json()["duration_minutes"] == pytest.approx(duration, rel=1e-9)
    answer = served.post("/predict_batch", {"rides": tlc_rows})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose([p["duration_minutes"] for p in answer.json()["predictions"]], expected, rtol=1e-9)
    # Both names, agreeing (whatever the ISO spelling): accepted.
    row = tlc_rows[0]
    both = {**row, "pickup_datetime": row["lpep_pickup_datetime"].replace("T", " ")}
    assert served.post("/predict", both).json()["duration_minutes"] == pytest.approx(expected[0], rel=1e-9)


def test_the_openapi_document_states_the_tlc_alias(served: Served) -> None:
    ride = requests.get(f"{served.url}/docs.json", timeout=5).json()["components"]["schemas"]["Ride"]
    assert "instead of pickup_datetime" in ride["properties"]["lpep_pickup_datetime"]["description"]
    assert "other columns (VendorID" in ride["description"]
    assert ride["properties"]["id"]["anyOf"][0]["pattern"] == "^[^\\x00-\\x1f\\x7f]*$"


def _save_into(bentoml_home: Path, code: str) -> None:
    """Run `code` with bentoml imported and `BENTOML_HOME` set: BentoML fixes its home once per process."""
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home)}
    subprocess.run([sys.executable, "-c", f"import bentoml\n{code}"], env=env, check=True)


def test_a_newer_model_is_served_without_restart_or_failed_request(
    tmp_path: Path, bentoml_home: Path, rides_2022: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "bentoml"
    shutil.copytree(bentoml_home, home)
    monkeypatch.setenv("TAXI_MODEL_RELOAD_SECONDS", "1")
    port = free_port()
    process = harness.serve(home, tmp_path / "logs", port, tmp_path / "serve.log", workers=2)
    url = f"http://127.0.0.1:{port}"
    payloads = harness.ride_payloads(rides_2022.head(500))
    answers: list[tuple[float, str]] = []  # (time answered, model_tag)
    failures: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        for n in range(10**6):
            if stop.is_set():
                return
            try:
                if n % 4 == 0:
                    answer = requests.post(f"{url}/predict_batch", json={"rides": payloads[:50]}, timeout=10)
                    tags = {p["model_tag"] for p in answer.json()["predictions"]} if answer.ok else set()
                else:
                    answer = requests.post(f"{url}/predict", json=payloads[(n * 7 + worker) % 500], timeout=10)
                    tags = {answer.json()["model_tag"]} if answer.ok else set()
                if n % 10 == 0 and requests.get(f"{url}/readyz", timeout=10).status_code != 200:
                    failures.append("readyz")
            except requests.RequestException as error:
                failures.append(repr(error))
                continue
            if not answer.ok:
                failures.append(answer.text)
            assert len(tags) <= 1  # one model per batch
            answers.extend((time.monotonic(), tag) for tag in tags)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        (old_tag,) = {tag for _, tag in answers}
        # A model that cannot predict (never fitted) must not replace the working one.
        _save_into(
            home,
            "from sklearn.linear_model import LinearRegression\n"
            "bentoml.sklearn.save_model('taxi_duration_deployed', LinearRegression())",
        )
        time.sleep(4)
        assert {tag for _, tag in answers} == {old_tag}
        harness.save_deployed_model(home, month="2021-02", recipe="seed")
        saved = time.monotonic()
        new_tag = f"taxi_duration_deployed:{_latest_version(home)}"
        deadline = saved + 30
        while time.monotonic() < deadline and not (
            len(answers) > 200 and all(tag == new_tag for _, tag in answers[-100:])
        ):
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(30)
        metrics = requests.get(f"{url}/metrics", timeout=5).text
    finally:
        stop.set()
        harness.stop(process)

    assert not failures, failures[:5]
    assert {tag for _, tag in answers} == {old_tag, new_tag}
    assert all(tag == new_tag for _, tag in answers[-100:]), "both workers must serve the new model"
    first_new = min(at for at, tag in answers if tag == new_tag)
    print(f"swap gap: {max(first_new - saved, 0):.2f} s from the new model saved to its first answer")
    assert _metric(metrics, f'taxi_predictions_total{{model_tag="{new_tag}"}}') > 0
    assert _metric(metrics, "taxi_model_swaps_total") == 2  # each worker
    assert _metric(metrics, "taxi_model_refusals_total") == 2
    log = (tmp_path / "serve.log").read_text()
    assert log.count(f"now serving model {new_tag} (was {old_tag})") == 2
    assert "refused; still serving" in log


def _latest_version(bentoml_home: Path) -> str:
    return (bentoml_home / "models" / "taxi_duration_deployed" / "latest").read_text().strip()


def _outlier_counts(metrics: str) -> dict[str, float]:
    lines = [line for line in metrics.splitlines() if line.startswith("taxi_input_outliers_total{")]
    return {line.split('rule="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def test_the_course_client_runs_unchanged_on_real_rows(served: Served, tmp_path: Path) -> None:
    """The course's script itself, on rows of its month including the implausible ones it meets."""
    table = pq.read_table(harness.TLC_DIR / "green_tripdata_2022-01.parquet")
    distance = table["trip_distance"]
    implausible = table.filter(pc.or_(pc.greater_equal(distance, 500), pc.equal(distance, 0))).slice(0, 5)
    sample = pa.concat_tables([table.slice(0, 5), implausible])
    pq.write_table(sample, tmp_path / "green_tripdata_2022-01.parquet")
    run = subprocess.run(
        [sys.executable, "-m", "tests.support.course_client", str(tmp_path / "green_tripdata_2022-01.parquet")]
        + [f"{served.url}/predict", str(tmp_path / "t.csv"), "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=harness.REPO_ROOT,
    )
    assert run.returncode == 0, run.stderr
    printed = [line for line in run.stdout.splitlines() if line.startswith("prediction: ")]
    assert len(printed) == sample.num_rows and all(float(line.split()[1]) > 0 for line in printed)


@pytest.fixture
def own_served(tmp_path: Path, bentoml_home: Path) -> Iterator[Served]:
    """A service on a BentoML home of its own: BentoML keeps its Prometheus files in the home and a server
    starting on it clears them, so the other tests' servers on `bentoml_home` would hide this one's counters."""
    home = tmp_path / "bentoml"
    shutil.copytree(bentoml_home / "models", home / "models")
    port = free_port()
    process = harness.serve(home, tmp_path / "logs", port, tmp_path / "serve.log")
    yield Served(f"http://127.0.0.1:{port}", tmp_path / "logs", home, process)
    harness.stop(process)


def test_a_whole_real_month_from_the_course_client_is_answered_and_logged(own_served: Served, tmp_path: Path) -> None:
    """All 62,495 rows of 2022-01, as the course's client posts them (raw rows, its JSON encoding, its key), 32
    at a time: every one answered 200 with a `duration`, every answered one in the log, and the implausible ones
    counted as outliers."""
    served = own_served
    parquet = harness.TLC_DIR / "green_tripdata_2022-01.parquet"
    distance = pq.read_table(parquet, columns=["trip_distance"])["trip_distance"].to_numpy()
    before = _outlier_counts(requests.get(f"{served.url}/metrics", timeout=5).text)
    started = time.monotonic()
    answers = course_client.send_month(parquet, f"{served.url}/predict", tmp_path / "target.csv")
    seconds = time.monotonic() - started
    print(f"2022-01 through /predict as the course's client: {len(answers)} rows in {seconds:.0f} s")
    assert len(answers) == MANIFEST_ROWS["2022-01"]
    refused = [(status, body) for _, status, body in answers if status != 200]
    assert not refused, f"{len(refused)} rows not answered 200, e.g. {refused[:3]}"
    assert all(body["duration"] == body["duration_minutes"] and body["id"] == ride for ride, _, body in answers)
    logged = {
        r["id"]
        for day in sorted(p.name for p in served.logs.iterdir())
        for r in predlog.FileLogReader(served.logs).read_day(day)
        if r["kind"] == "prediction"
    }
    assert {ride for ride, _, _ in answers} <= logged
    after = _outlier_counts(requests.get(f"{served.url}/metrics", timeout=5).text)
    counted = {rule: after.get(rule, 0.0) - before.get(rule, 0.0) for rule in ("distance_above_max", "zero_distance")}
    assert counted == {
        "distance_above_max": float((distance > 100).sum()),
        "zero_distance": float((distance == 0).sum()),
    }
    assert counted["distance_above_max"] >= 62  # the rows of 500 miles and more that used to get a 400


def test_every_row_of_every_real_month_is_a_ride(served: Served) -> None:
    """Each real month's raw rows, in the course's encoding, in batches of 10,000: a batch is answered 200 only
    when every ride in it is valid, so one refused row fails its batch."""
    for month in sorted(MANIFEST_ROWS):
        rows = pq.read_table(harness.TLC_DIR / f"green_tripdata_{month}.parquet").to_pylist()
        for start in range(0, len(rows), MAX_BATCH_RIDES):
            body = json.dumps({"rides": rows[start : start + MAX_BATCH_RIDES]}, cls=course_client.DateTimeEncoder)
            answer = served.post("/predict_batch", body)
            assert answer.status_code == 200, (month, start, answer.text[:500])
            assert len(answer.json()["predictions"]) == len(rows[start : start + MAX_BATCH_RIDES])
