"""The whole loop in one command (`make demo`): on a running platform (`make up`), load months, train and deploy
a model, replay real rides of the training month against the service unchanged (the control: the online drift
verdict stays quiet), then the same rides with the drift scenario (distances x1.5: it drifts), printing each
phase's online verdict; let the automation score and report the months, then print where to look.

Every step goes through the platform as a user's would: backfills and runs through the Dagster webserver's
GraphQL API (they show in the UI), traffic through the service's HTTP API (`taxi-replay`), figures through the
Pushgateway and Prometheus. What runs by itself is left to run by itself: the batch scoring, drift and reports of
the loaded months (declarative automation), the ingest of the prediction log and the online windows (the
prediction-log sensor), the challenge of the deployed model (the promotion sensor).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from taxi_assets import settings
from taxi_assets.cli import ToolError, replay
from taxi_assets.cli.backfill import partitions
from taxi_assets.cli.dagster_client import FINISHED_RUN, DagsterClient, default_url
from taxi_assets.defs.automation import RETRIED_SENSORS, RETRY_DELAYS_SECONDS, RETRY_NUMBER_TAG
from taxi_assets.defs.online_monitoring.sensors import prediction_log_sensor

# An asset partition a wait needs: (asset, partition), partition None for an unpartitioned asset.
Need = tuple[str, "str | None"]

# How often a wait says what it still waits for, and looks whether something it needs has failed for good.
REPORT_EVERY_SECONDS = 30.0
CHECK_FAILED_EVERY_SECONDS = 10.0

DEFAULT_MONTHS = "2021-01..2021-02"


class Demo:
    def __init__(self, options: argparse.Namespace) -> None:
        current = settings.current()
        self.options = options
        self.dagster = DagsterClient(default_url())
        self.service = f"http://127.0.0.1:{current.service_port}"
        self.prometheus = f"http://127.0.0.1:{current.prometheus_port}"
        self.evidently = current.evidently_url
        self.started = time.monotonic()
        self.since = time.time()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f} s] demo: {text}", flush=True)

    def wait(
        self,
        what: str | Callable[[], str],
        done: Callable[[], bool],
        timeout: float,
        every: float = 2.0,
        needs: Callable[[], list[Need]] | None = None,
    ) -> None:
        """Wait until `done()`. With `needs` (the asset partitions the wait depends on, still missing), it says
        every REPORT_EVERY_SECONDS what it waits for and why that is not done (each one's latest run, its status
        and error), and stops as soon as one of them has failed for good (a failed run nothing will retry).
        `what` names the wait, or says what is still pending when called."""
        started = time.monotonic()
        deadline = started + timeout
        reported = checked = started
        while not done():
            now = time.monotonic()
            label = what() if callable(what) else what
            if needs is not None and (now >= checked + CHECK_FAILED_EVERY_SECONDS or now > deadline):
                checked = now
                states = [state for state in map(self.need_state, needs()) if state is not None]
                failed = [line for line, for_good in states if for_good]
                if failed:
                    raise ToolError(
                        f"{label}: stopped waiting after {now - started:.0f} s, a step it needs failed for good: "
                        f"{'; '.join(failed)}. Fix the cause and materialize it in {self.dagster.url}/assets "
                        "(what follows it then runs by itself)"
                    )
                waiting = "; ".join(line for line, _ in states) or "newer runs of what it needs (all succeeded)"
                if now > deadline:
                    raise ToolError(f"{label}: not done after {timeout:.0f} s; waiting for {waiting}")
                if now >= reported + REPORT_EVERY_SECONDS:
                    reported = now
                    self.say(f"{label}: still waiting ({now - started:.0f} s) for {waiting}")
            elif now > deadline:
                raise ToolError(f"{label}: not done after {timeout:.0f} s")
            time.sleep(every)

    def need_state(self, need: Need) -> tuple[str, bool] | None:
        """What the latest run of an asset partition says, and whether it failed for good: a failed run that is
        not the automation's, or whose retries (automation_retry_sensor) are exhausted. None once it succeeded."""
        asset, partition = need
        name = f"{asset}[{partition}]" if partition else asset
        run = self.dagster.latest_run(asset, partition)
        if run is None:
            return f"{name}: no run yet (its inputs are not all there, or the automation's next tick)", False
        line = f"{name}: last run {run['runId']} {run['status'].lower()}"
        if run["status"] == "SUCCESS":
            return None
        if run["status"] != "FAILURE":
            return line, False
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        sensor, retries = tags.get("dagster/sensor_name"), int(tags.get(RETRY_NUMBER_TAG, "0"))
        if sensor == prediction_log_sensor.name:  # it requests a failed ingest again, with backoff, until it lands
            return f"{line} (the prediction-log sensor retries it): {self.run_error(run['runId'])}", False
        for_good = sensor not in RETRIED_SENSORS or retries >= len(RETRY_DELAYS_SECONDS)
        retry = "no retry left" if for_good else f"retry {retries + 1} of {len(RETRY_DELAYS_SECONDS)} to come"
        return f"{line} ({retry}): {self.run_error(run['runId'])}", for_good

    def run_error(self, run_id: str) -> str:
        """The error of a failed run: its failed steps' innermost errors, else the run's failure message."""
        return " | ".join(self.dagster.run_errors(run_id)) or "no error recorded"

    def run_job(self, job: str, partition_keys: list[str] | None = None, run_config: dict | None = None) -> None:
        """One run of `job` per partition (or one run), launched at once and followed to the end. Runs rather than a
        backfill: the backfill daemon looks at new backfills every 30 s, the run queue every second."""
        found = self.dagster.job(job)
        if found is None:
            raise ToolError(f"no job {job} in the workspace at {self.dagster.url}")
        runs = {
            key: self.dagster.submit(found, run_config, tags={"dagster/partition": key} if key else None)
            for key in partition_keys or [""]
        }
        label = f"{job}[{', '.join(partition_keys)}]" if partition_keys else job
        self.say(f"{label}: {self.dagster.url}/runs")
        shown: dict[str, str] = {}

        def finished() -> bool:
            states = {key: self.dagster.run_status(run_id) for key, run_id in runs.items()}
            changed = {key: state for key, state in states.items() if shown.get(key) != state}
            if changed:
                self.say(
                    "; ".join(f"{job}{f'[{key}]' if key else ''} {state.lower()}" for key, state in changed.items())
                )
                shown.update(changed)
            return all(state in FINISHED_RUN for state in states.values())

        self.wait(label, finished, timeout=900, every=1.0)
        failed = {key: runs[key] for key, state in shown.items() if state != "SUCCESS"}
        if failed:
            # The reasons on the terminal, not only in the run's log or the daemon's.
            reasons = [
                f"  {key or job}: {line.strip()[:500]}"
                for key, run_id in failed.items()
                for line in (self.dagster.run_errors(run_id) or [f"run {run_id} {shown[key].lower()}"])[:3]
            ]
            raise ToolError(
                f"{label}: failed for {', '.join(key or job for key in failed)}; see {self.dagster.url}/runs\n"
                + "\n".join(reasons)
            )

    def materialized_since(self, asset: str, since: float, partition_keys: list[str] | None = None) -> set[str]:
        """Partitions of `asset` ("" for an unpartitioned one) materialized since the unix time `since`."""
        return {
            event.partition or ""
            for event in self.dagster.materializations(asset, partition_keys)
            if event.timestamp >= since
        }

    def latest(self, asset: str, partition: str | None = None) -> float:
        """Unix time of the latest materialization of `asset` (of `partition`), 0 when there is none."""
        latest = self.dagster.latest_materialization(asset, partition)
        return latest.timestamp if latest else 0.0

    def metadata(self, asset: str, partition: str | None) -> dict:
        """The text and number metadata of the latest materialization of `asset`'s `partition` (None: an
        unpartitioned asset)."""
        latest = self.dagster.latest_materialization(asset, partition)
        return latest.metadata if latest else {}

    def prometheus_page(self, page: str) -> str:
        """Debian's Prometheus 2 serves its pages under /classic; newer ones at the root."""
        try:
            with urllib.request.urlopen(f"{self.prometheus}/classic/{page}", timeout=2):
                return f"{self.prometheus}/classic/{page}"
        except (urllib.error.URLError, OSError):
            return f"{self.prometheus}/{page}"

    def ingested_after(self, since: float, days: list[str]) -> bool:
        """Whether every prediction-log day of `days` was last ingested by a run created after the unix time
        `since`. A run holds every record the store had when it was created (the rule the prediction-log sensor
        confirms its ingests by), so then everything logged before `since` is in DuckDB: no need to wait for the
        sensor's next tick to say so."""
        for day in days:
            latest = self.dagster.latest_materialization("prediction_logs", day)
            if latest is None or (self.dagster.run_created(latest.run_id) or 0.0) < since:
                return False
        return True

    def service_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.service}/readyz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def replay(self, label: str, phase: str, arguments: list[str]) -> int:
        """Replay `--rides` rides with `arguments` under the id prefix `demo-<phase>`; the rides predicted."""
        self.say(f"replay: {label}")
        common = ["--url", self.service, "--rate", str(self.options.rate), "--speed", "600"]
        with tempfile.TemporaryDirectory() as folder:
            summary = Path(folder) / "summary.json"
            own = ["--limit", str(self.options.rides), "--id-prefix", f"demo-{phase}", "--summary-json", str(summary)]
            status = replay.main([*arguments, *own, *common])
            if status != 0:
                raise ToolError(f"the replay ended with status {status}")
            return int(json.loads(summary.read_text())["predict"]["2xx"])

    def online_window(self, predicted: int, started: float, since: float) -> dict:
        """The latest `online_drift` figures of its `last_<n>` window, once every record logged from the unix time
        `started` to `since` (a replay) is ingested, online_drift ran after the last ingest and its window holds
        min(n, `predicted`) predictions: all the traffic replayed so far is judged."""
        figures: dict = {}
        # The prediction log's partitions are the UTC days the records were logged on.
        days = [
            str(day.date())
            for day in pd.date_range(pd.Timestamp(started, unit="s").normalize(), pd.Timestamp(since, unit="s"))
        ]

        def judged() -> bool:
            nonlocal figures
            # online_drift runs after prediction_logs in each ingest run: newer than the last ingest, it has seen it.
            if not self.ingested_after(since, days) or self.latest("online_drift") < self.latest("prediction_logs"):
                return False
            latest = self.metadata("online_drift", None)
            window = next((key.split("/")[0] for key in latest if key.startswith("last_")), None)
            if window is None:
                return False
            figures = {"window": window}
            figures.update((key.removeprefix(f"{window}/"), v) for key, v in latest.items() if key.startswith(window))
            expected = min(int(window.removeprefix("last_")), predicted)
            return figures.get("rows") == expected and "dataset_drift" in figures

        self.wait("the online window", judged, timeout=300)
        return figures

    def judge(self, label: str, figures: dict) -> None:
        verdict = "DRIFT" if figures["dataset_drift"] else "no drift"
        self.say(
            f"{label}: online window {figures['window']} over {figures['rows']} rides: dataset verdict {verdict} "
            f"(drifted features: {figures['drifted_features']}; trip_distance score "
            f"{float(figures.get('drift_score/trip_distance', float('nan'))):.2f}, above 1 is beyond its threshold)"
        )

    def run(self) -> int:
        months = partitions(self.options.months)
        newest = self.options.drift_month
        # The month before the newest too: the retraining loop's challenger trains on it and is validated on the
        # newest, the month after (a model validated on any other month is refused by its quality gate).
        loaded = sorted({*months, str(pd.Period(newest, freq="M") - 1), newest})
        self.say(f"the platform at {self.dagster.url}; months {', '.join(loaded)}")
        self.dagster.version()  # fails early, and clearly, when nothing runs

        self.say(f"loading the trips of {', '.join(loaded)}")
        self.run_job("trip_data_job", loaded)
        self.say(f"training on {months[0]} (validated on the next loaded month)")
        self.run_job("duration_model_job", months[:1])
        self.say(f"deploying the model of {months[0]}")
        self.run_job("deploy_job", run_config={"ops": {"deployed_model": {"config": {"training_month": months[0]}}}})
        self.say(
            "from here on, what happens runs by itself: every loaded month is scored, drift-checked and reported; "
            f"the retraining loop trains on {loaded[-2]} and challenges the deployed model on {newest}"
        )
        self.say("the service picks up the deployed model (make up started it waiting for one)")
        self.wait("the Bento service", self.service_ready, timeout=180)

        # The same rides twice: unchanged (the control: quiet), then with the scenario's distances, so that any
        # drift seen in the second phase is the scenario's alone. The rides are the training month's, the
        # distribution the reference profile describes, from an ordinary working day on (the month's first days
        # hold New Year; the first 3,000 rides of 2021-02, the day of a snowstorm, drifted on DOLocationID).
        month, scale = months[0], self.options.distance_scale
        rides = ["--month", month, "--start-day", str(self.options.start_day)]
        day = f"{month}-{self.options.start_day:02d}"
        control_started = time.time()
        predicted = self.replay(f"control: rides of {month} from {day}, unchanged", "control", rides)
        self.say("waiting for the ingest and the online window of the control phase (the sensor ticks every 30 s)")
        self.judge("control", self.online_window(predicted, control_started, time.time()))
        scenario_started = time.time()
        predicted += self.replay(
            f"drift scenario: the same rides of {month} from {day}, distances x{scale:g}",
            "scenario",
            [*rides, "--distance-scale", str(scale)],
        )
        self.say("waiting for the ingest and the online window of the drift scenario")
        self.judge(
            f"drift scenario (distances x{scale:g})", self.online_window(predicted, scenario_started, time.time())
        )

        self.say("waiting for the online dashboard, the monthly figures, reports, dashboards and the challenge")
        # Each thing waited for, with the asset partitions it needs: what a slow or failed wait names.
        monthly = [("taxi_zones", None)] + [
            (asset, month) for month in loaded for asset in ("batch_predictions", "drift_metrics", "monitoring_report")
        ]
        pending = {
            "online dashboard (online_dashboard, at most once a minute)": (
                lambda: self.latest("online_dashboard") > max(self.latest("online_drift"), scenario_started),
                [("online_drift", None), ("online_dashboard", None)],
            ),
            f"monthly reports of {', '.join(loaded)} (monitoring_report)": (
                lambda: set(loaded) <= self.materialized_since("monitoring_report", self.since, loaded),
                monthly,
            ),
            f"challenge of the deployed model on {newest} (model_challenge)": (
                lambda: self.latest("model_challenge", newest) >= self.since,
                [("model_challenge", newest)],
            ),
            "months dashboard, with the challenge (monitoring_dashboard)": (
                lambda: (
                    set(loaded) <= self.materialized_since("monitoring_dashboard", self.since, loaded)
                    and self.latest("monitoring_dashboard", newest) > max(self.latest("model_challenge", newest), 1.0)
                ),
                [*monthly, ("model_challenge", newest), *(("monitoring_dashboard", month) for month in loaded)],
            ),
        }

        def all_done() -> bool:
            for what, (done, _) in list(pending.items()):
                if done():
                    self.say(f"done: {what}")
                    del pending[what]
            return not pending

        def still_needed() -> list[Need]:
            return list(dict.fromkeys(need for _, needs in pending.values() for need in needs))

        self.wait(lambda: f"the automation ({'; '.join(pending)})", all_done, timeout=900, needs=still_needed)
        challenge = self.metadata("model_challenge", newest)
        elapsed = time.monotonic() - self.started
        print(
            f"""
demo: done in {elapsed // 60:.0f} min {elapsed % 60:.0f} s.
demo: challenge on {newest}: the model retrained on {challenge.get("challenger_month", "?")} has a gain of \
{float(challenge.get("gain", float("nan"))):.1%} over the deployed one; promotion: {challenge.get("promotion", "?")}
Where to look:
  Dagster            {self.dagster.url}/assets  (lineage: Global asset lineage; runs: {self.dagster.url}/runs;
                     what ran by itself: {self.dagster.url}/automation)
  Bento service      {self.service}/  (Swagger UI; /metrics)
  Evidently UI       {self.evidently}  (monthly reports and the dashboards by month and by online window)
  Prometheus alerts  {self.prometheus_page("alerts")}  (drift alerts after the drift scenario)
  Prometheus graph   {self.prometheus_page("graph")}?g0.expr=taxi_online_rmse  (online RMSE per window)
  stop everything    make down""",
            flush=True,
        )
        return 0


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(prog="taxi-demo", description=__doc__.split("\n\n")[0])
    arguments.add_argument(
        "--months", default=DEFAULT_MONTHS, help="months to load; the model trains on the first, the second is normal"
    )
    # Two online windows (last_5000): an alarm needs the window before the newest one, with no ride in common, to
    # agree, so the scenario's drift is confirmed once 10,000 of its rides are in.
    arguments.add_argument("--rides", type=int, default=10000, help="rides per replay phase")
    arguments.add_argument("--rate", default="max", help="rides per second, or max")
    arguments.add_argument(
        "--drift-month",
        default="2023-03",
        help="the newest month: loaded with the month before it, drift-checked against training, challenged",
    )
    arguments.add_argument(
        "--distance-scale", type=float, default=1.5, help="drift scenario: distance factor on the control's rides"
    )
    arguments.add_argument(
        "--start-day", type=int, default=11, help="the replayed rides start at this day of the training month"
    )
    try:
        return Demo(arguments.parse_args(argv)).run()
    except ToolError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted; the platform keeps running (make down stops it)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
