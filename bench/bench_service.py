"""Throughput of the Bento service against an empty Bento service started the same way (prints figures; not a test).

    .venv/bin/python bench/bench_service.py [--duration 15] [--connections 32] [--workers 1] [--designs today native]
        [--rounds 1]

Trains the default model on 2021-01 into a temporary BentoML home (or uses --bentoml-home), then runs wrk against
(a) the two empty baselines: BentoML's stock empty service (`bench/stock_empty_service.py`, the baseline issue 21
names) and the stricter one with the real service's worker-process fixes (`bench/empty_service.py`); then for each
design (b) `/predict` with model and logging, posting real 2022-01 rides, and (c) `/predict_batch` with 1,000-ride
batches. Designs: `today` (bento_service, the served one) and
`native` (bench/native_service.py: BentoML's adaptive batching in a model service reached through
`bentoml.depends`). All of them in one invocation, so they share the machine's load and the empty baseline.
The peer of `/predict_batch` is the model alone: the deployed model predicting the same 1,000-ride batches in this
process as the model process does, right after the service's run, so both see the same load; beside it, the
pipeline's own scikit-learn predict on them. Each run also reports the CPU a request cost the service's request-
handling worker and its model process: the bound of either, whatever share of the shared cores the load leaves.
With --rounds N all of it is measured N times in turn, each ratio taken within its round (the same minutes' load),
and the medians are printed at the end: on a shared machine one busy minute moves one round, not the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import service_harness as harness  # noqa: E402
from tests.support.platform import free_port  # noqa: E402

DESIGNS = {
    "today": "bento_service.service:TaxiDuration",
    "native": "bench.native_service:NativeTaxi",
}

# The stock empty service first: the baseline issue 21 names; then the empty service with the fixes.
EMPTY_BASELINES = {
    "stock empty": "bench.stock_empty_service:StockEmpty",
    "fixed empty": "bench.empty_service:Empty",
}

LUA_TEMPLATE = """
local bodies = {%s}
local headers = {["Content-Type"] = "application/json"}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", nil, headers, bodies[i])
end
"""


def _lua_script(bodies: list[str], path: Path) -> Path:
    path.write_text(LUA_TEMPLATE % ",\n".join(f"[==[{body}]==]" for body in bodies))
    return path


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(url: str, script: Path, duration: int, connections: int) -> dict:
    """wrk's requests/s, p50/p99 latency (ms) and non-2xx count for `url`."""
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)\s*$", output, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)$", output, re.MULTILINE)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": _seconds(percentiles["50"]) * 1e3,
        "p99_ms": _seconds(percentiles["99"]) * 1e3,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "none",
    }


def bench(target: str, path: str, script: Path, args, work: Path, name: str) -> dict:
    port = free_port()
    process = harness.serve(
        args.bentoml_home, work / f"logs-{name}", port, work / f"{name}.log", workers=args.workers, target=target
    )
    try:
        url = f"http://127.0.0.1:{port}{path}"
        run_wrk(url, script, 3, args.connections)  # warm-up: connections, first-call costs
        before = _cpu_seconds(process)
        figures = run_wrk(url, script, args.duration, args.connections)
        requests = figures["rps"] * args.duration
        figures["cpu_ms"] = {
            role: (spent - before.get(role, 0.0)) / requests * 1e3 for role, spent in _cpu_seconds(process).items()
        }
        return figures
    finally:
        harness.stop(process)


def _cpu_seconds(server) -> dict[str, float]:
    """CPU seconds spent so far by the server's request-handling workers and by their model processes: what a
    request costs each, whatever share of the shared cores the load left them."""
    spent = {"request": 0.0, "model": 0.0}
    for process in psutil.Process(server.pid).children(recursive=True):
        command = " ".join(process.cmdline())
        role = "model" if "spawn_main" in command else "request" if "worker.service" in command else None
        if role:
            times = process.cpu_times()
            spent[role] += times.user + times.system
    return spent


def model_alone_rides_per_second(bentoml_home: Path, batches: list[bytes], seconds: float = 5.0) -> dict[str, float]:
    """Rides/s of the deployed model alone on `batches`, one call each: as the model process predicts them (the
    pipeline's feature steps, then its trees as boosted_trees) and by the pipeline's own scikit-learn predict."""
    import joblib

    from bento_service import model_process, service

    (path,) = bentoml_home.glob("models/taxi_duration_deployed/*/saved_model.pkl")
    pipeline = joblib.load(path)
    inputs = [service._model_input(service._parse_batch(body)) for body in batches]
    figures = {}
    for name, trees in (("served", model_process.served_trees(pipeline, inputs[0])), ("scikit-learn", None)):
        rides, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for columns in inputs:
                rides += len(model_process._predict(pipeline, trees, columns))
        figures[name] = rides / (time.perf_counter() - started)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--bentoml-home", type=Path)
    parser.add_argument("--designs", nargs="+", choices=sorted(DESIGNS), default=["today"])
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure everything this many times, alternating; print the medians"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    rounds = []
    try:
        if args.bentoml_home is None:
            args.bentoml_home = work / "bentoml"
            print("training the default model on 2021-01 …", flush=True)
            harness.save_deployed_model(args.bentoml_home)
        rides = harness.ride_payloads(harness.load_rides("2022-01"))
        single = _lua_script([json.dumps(ride) for ride in rides[:500]], work / "single.lua")
        batch_bodies = [json.dumps({"rides": rides[i : i + 1000]}) for i in range(0, 5000, 1000)]
        batch = _lua_script(batch_bodies, work / "batch.lua")

        for number in range(1, args.rounds + 1):
            empties = {
                name: bench(target, "/predict", single, args, work, name.replace(" ", "-"))
                for name, target in EMPTY_BASELINES.items()
            }
            results = {
                design: (
                    bench(DESIGNS[design], "/predict", single, args, work, f"{design}-predict"),
                    bench(DESIGNS[design], "/predict_batch", batch, args, work, f"{design}-batch"),
                    model_alone_rides_per_second(args.bentoml_home, [body.encode() for body in batch_bodies]),
                )
                for design in args.designs
            }
            print(
                f"\nround {number} of {args.rounds}: wrk, {args.connections} connections, {args.duration} s, "
                f"workers={args.workers}; load average {os.getloadavg()[0]:.1f}"
            )
            _print_round(empties, results)
            rounds.append((empties, results))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(rounds) > 1:
        _print_medians(rounds)


def _print_round(empties: dict, results: dict) -> None:
    for name, figures in empties.items():
        _print_line(f"{name:<14} /predict", figures)
    for design, (single_figures, batch_figures, model_alone) in results.items():
        _print_line(f"{design:<14} /predict", single_figures)
        for name, figures in empties.items():
            print(f"  ratio {design} / {name}: {single_figures['rps'] / figures['rps']:.2f}", end="")
            print(" (goal >= 1.0)" if name == "stock empty" else "")
        print("  p99 goal <= 50 ms")
        print(
            f"{design:<14} /predict_batch (1,000 rides): {batch_figures['rps'] * 1000:8.0f} rides/s"
            f"  p50 {batch_figures['p50_ms']:.1f} ms  p99 {batch_figures['p99_ms']:.1f} ms"
            f"  non-2xx {batch_figures['non_2xx']}  (goal >= 150,000 rides/s)"
        )
        print(f"  CPU per batch: {_cpu_line(batch_figures)}")
        print(
            f"  model alone on the same batches: {model_alone['served']:8.0f} rides/s as served"
            f" ({model_alone['scikit-learn']:.0f} by the pipeline's scikit-learn predict);"
            f" ratio /predict_batch / model alone: {batch_figures['rps'] * 1000 / model_alone['served']:.2f}"
        )


def _print_medians(rounds: list[tuple[dict, dict]]) -> None:
    """Each figure's median over the rounds: each round's ratio is taken within the round (the same minute's load),
    then the ratios' median, so that a busy minute moves one round and not the figure."""
    print(f"\nmedians of {len(rounds)} rounds")
    for design in rounds[0][1]:
        for name in rounds[0][0]:
            ratios = [results[design][0]["rps"] / empties[name]["rps"] for empties, results in rounds]
            print(
                f"  {design} /predict / {name}: median {statistics.median(ratios):.2f} "
                f"(rounds {', '.join(f'{ratio:.2f}' for ratio in ratios)})"
                + (" (goal >= 1.0)" if name == "stock empty" else "")
            )
        p99s = [results[design][0]["p99_ms"] for _, results in rounds]
        print(
            f"  {design} /predict p99: median {statistics.median(p99s):.1f} ms, max {max(p99s):.1f} ms (goal <= 50 ms)"
        )
        rides = [results[design][1]["rps"] * 1000 for _, results in rounds]
        print(
            f"  {design} /predict_batch: median {statistics.median(rides):,.0f} rides/s "
            f"(rounds {', '.join(f'{value:,.0f}' for value in rides)}) (goal >= 150,000)"
        )


def _print_line(name: str, figures: dict) -> None:
    print(
        f"{name}: {figures['rps']:8.0f} req/s  p50 {figures['p50_ms']:6.1f} ms  p99 {figures['p99_ms']:6.1f} ms"
        f"  non-2xx {figures['non_2xx']}  socket errors {figures['socket_errors']}"
    )
    print(f"  CPU per request: {_cpu_line(figures)}")


def _cpu_line(figures: dict) -> str:
    return ", ".join(f"{role} process {ms:.2f} ms" for role, ms in figures["cpu_ms"].items() if ms)


if __name__ == "__main__":
    main()
