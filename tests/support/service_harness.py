"""Real rides, a real deployed model and a real `bentoml serve` process, shared by the service tests and the bench.

Run as a module (`python -m tests.support.service_harness <BENTOML_HOME>`) it trains the default recipe on 2021-01 and
saves it as `taxi_duration_deployed`: in a process of its own, because BentoML fixes its home on first use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq
import requests

from taxi_assets.core.model import DEFAULT_RECIPE, FEATURE_FIELDS
from tests.support.platform import REPO_ROOT, TLC_DIR


def load_rides(month: str, tlc_dir: Path = TLC_DIR) -> pd.DataFrame:
    """FEATURE_FIELDS plus `duration` (minutes) of a month's rides, with the seed filter (1 to 60 minutes)."""
    columns = ["lpep_pickup_datetime", "lpep_dropoff_datetime", "PULocationID", "DOLocationID", "trip_distance"]
    frame = pq.read_table(tlc_dir / f"green_tripdata_{month}.parquet", columns=columns).to_pandas()
    frame["duration"] = (frame.lpep_dropoff_datetime - frame.lpep_pickup_datetime).dt.total_seconds() / 60
    frame = frame[frame.duration.between(1, 60)].rename(columns={"lpep_pickup_datetime": "pickup_datetime"})
    return frame[[*FEATURE_FIELDS, "duration"]].reset_index(drop=True)


def ride_payloads(frame: pd.DataFrame) -> list[dict]:
    """Request bodies for `/predict`, as a client would send them (ISO datetimes)."""
    return [
        {
            "PULocationID": int(row.PULocationID),
            "DOLocationID": int(row.DOLocationID),
            "trip_distance": float(row.trip_distance),
            "pickup_datetime": row.pickup_datetime.isoformat(),
        }
        for row in frame.itertuples()
    ]


def save_deployed_model(bentoml_home: Path, month: str = "2021-01", recipe: str = DEFAULT_RECIPE) -> None:
    """Train on `month` and save the pipeline as `taxi_duration_deployed` into `bentoml_home`."""
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home)}
    subprocess.run(
        [sys.executable, "-m", "tests.support.service_harness", str(bentoml_home), month, recipe],
        env=env,
        cwd=REPO_ROOT,
        check=True,
    )


def serve(
    bentoml_home: Path,
    predlog_uri: Path | str,
    port: int,
    log_path: Path,
    workers: int = 1,
    target: str = "bento_service.service:TaxiDuration",
    timeout: float = 60.0,
) -> subprocess.Popen:
    """`bentoml serve`, returned once /readyz answers."""
    env = {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home),
        "TAXI_PREDLOG_URI": str(predlog_uri),
        "TAXI_SERVICE_WORKERS": str(workers),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    args = [str(Path(sys.executable).parent / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited: {log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.2)
    kill_tree(process)
    raise TimeoutError(f"service not ready within {timeout} s: {log_path.read_text()[-3000:]}")


def kill_tree(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal `bentoml serve` and all its workers at once. Circus starts each worker in a session of its own,
    so signalling the server's process group would leave the workers running, still accepting requests."""
    try:
        parent = psutil.Process(process.pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)
    psutil.wait_procs(processes, timeout=20)
    process.wait()


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (graceful: workers flush their logs), SIGKILL to the whole tree after 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        kill_tree(process)


if __name__ == "__main__":
    import bentoml

    from taxi_assets.core.model import train

    _, month, recipe = sys.argv[1:4]
    pipeline = train(load_rides(month), recipe)
    bentoml.sklearn.save_model("taxi_duration_deployed", pipeline, labels={"training_month": month, "recipe": recipe})
