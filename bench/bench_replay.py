"""Throughput of `taxi-replay` at full speed against the real service (prints figures; not a test).

    .venv/bin/python bench/bench_replay.py [--rides 20000] [--concurrency 16 64] [--workers 1]

Trains the default model on 2021-01 into a temporary BentoML home, serves it with `bentoml serve` (the service as
`make up` runs it), then replays real 2022-02 rides with `--rate max --speed inf` (every ride's feedback right after
its prediction) once per concurrency, and prints predictions/s, feedback/s, latency percentiles and the client's
CPU time: the client's share says whether the tool or the service is the limit. The load average is printed
with each run, as the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import service_harness as harness  # noqa: E402
from tests.support.platform import REPO_ROOT, TLC_DIR, free_port  # noqa: E402

TAXI_REPLAY = REPO_ROOT / ".venv" / "bin" / "taxi-replay"


def replay(url: str, rides: int, concurrency: int, summary: Path) -> tuple[dict, float]:
    """The replay's summary and the client's CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [str(TAXI_REPLAY), "--url", url, "--source", str(TLC_DIR), "--month", "2022-02", "--rate", "max"]
        + ["--speed", "inf", "--limit", str(rides), "--concurrency", str(concurrency), "--no-progress"]
        + ["--id-prefix", f"bench{concurrency}", "--summary-json", str(summary)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(summary.read_text()), cpu


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--rides", type=int, default=20000)
    arguments.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    arguments.add_argument("--workers", type=int, default=1)
    options = arguments.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        harness.save_deployed_model(work / "bentoml")
        port = free_port()
        service = harness.serve(work / "bentoml", work / "logs", port, work / "serve.log", workers=options.workers)
        try:
            url = f"http://127.0.0.1:{port}"
            for concurrency in options.concurrency:
                summary, cpu = replay(url, options.rides, concurrency, work / f"summary{concurrency}.json")
                predict, feedback = summary["predict"], summary["feedback"]
                print(
                    f"concurrency {concurrency:3d}, service workers {options.workers}, load {os.getloadavg()[0]:.1f}: "
                    f"{predict['2xx']} predictions in {summary['seconds']:.1f} s = {predict['per_second']:.0f}/s, "
                    f"feedback {feedback['per_second']:.0f}/s; /predict p50 {predict['latency_ms']['p50']:.0f} ms "
                    f"p99 {predict['latency_ms']['p99']:.0f} ms; client CPU {cpu:.1f} s "
                    f"({cpu / summary['seconds']:.0%} of one core)",
                    flush=True,
                )
        finally:
            harness.stop(service)


if __name__ == "__main__":
    main()
