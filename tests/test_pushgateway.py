"""What reaches the Pushgateway tells the truth: one help text per metric, no series of a model no longer deployed,
no series left over from another run of the tests."""

import re
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
import requests

from taxi_assets.core.batch import BatchFigures
from taxi_assets.core.drift import DriftVerdict, FeatureDrift
from taxi_assets.core.evidently_report import SegmentError
from taxi_assets.core.metrics import (
    AUTOMATION_JOB,
    BATCH_JOB,
    CHALLENGE_JOB,
    HELP,
    INGEST_JOB,
    ONLINE_JOB,
    Sample,
    automation_samples,
    batch_samples,
    challenge_samples,
)
from taxi_assets.core.model import ErrorSummary
from taxi_assets.core.online import WindowFigures, ingest_samples, online_samples
from taxi_assets.defs.model.assets import deployed_model, duration_model
from taxi_assets.defs.resources import Pushgateway
from taxi_assets.defs.trip_data.assets import trip_months
from taxi_assets.supervise import PLATFORM_JOB
from tests.support.platform import REPO_ROOT, platform_resources
from tests.support.prometheus_harness import start_pushgateway

CONTRACTS = (REPO_ROOT / "docs" / "contracts.md").read_text()
# Debian's default, shared by every Pushgateway started without --persistence.file on this machine.
MACHINE_WIDE_FILE = Path("/var/lib/prometheus/pushgateway.data")


def every_push() -> list[tuple[str, dict[str, str], list[Sample]]]:
    """A push of every kind the platform makes (job, grouping key, samples), each metric present."""
    distance = FeatureDrift("trip_distance", "numerical", "ks", 0.3, 0.1, "ks", 0.3, 60000, True)
    zone = FeatureDrift(
        "PULocationID", "categorical", "chisquare_pooled", 2.0, 10.0, "jensenshannon", 0.02, 60000, False
    )
    verdict = DriftVerdict((distance, zone), alpha=0.01)
    figures = BatchFigures(
        rows=60000,
        since_training=verdict,
        month_over_month=verdict,
        previous_month="2021-01",
        prediction=distance,
        target=zone,
        errors=ErrorSummary(60000, 6.0, 4.0, 0.5),
        segments=[SegmentError("borough", "Bronx", 300, 7.0, 5.0), SegmentError("hour", "8", 900, 6.5, 4.5)],
        outliers={"any": 0.01, "distance": 0.005},
        outlier_examples={},
        ranking=[(distance, 0.4, 1.2)],
        weights_from="taxi_duration:v1",
    )
    window = WindowFigures(
        "last_1000",
        1000,
        400,
        "spread",
        verdict,
        distance,
        6.2,
        4.1,
        7.0,
        {"any": 0.02},
        rmse_cusum=0.3,
        slowdown_cusum=0.2,
        distance_cusum=0.1,
    )
    return [
        (BATCH_JOB, {"month": "2021-02"}, batch_samples(figures, 1.6e9)),
        (BATCH_JOB, {"month": "2021-03"}, batch_samples(figures, 1.61e9)),
        (ONLINE_JOB, {"window": "last_1000"}, online_samples(window, [window], "taxi_duration_deployed:v1", 5.9)),
        (INGEST_JOB, {}, ingest_samples(12, 30.0, 1.7e9)),
        (AUTOMATION_JOB, {}, automation_samples(2, 1)),
        # The supervisor pushes these with prometheus_client gauges named and documented from the same table.
        (
            PLATFORM_JOB,
            {},
            [
                Sample("taxi_platform_process_up", {"process": "bento"}, 1.0),
                Sample("taxi_platform_process_restarts", {"process": "bento"}, 0.0),
            ],
        ),
        (CHALLENGE_JOB, {}, challenge_samples("2021-03", "taxi_duration:a", "taxi_duration:b", 6.0, 5.5, 0.08, 0.05)),
    ]


@pytest.mark.unit
def test_every_pushed_metric_takes_its_one_help_text_from_the_table() -> None:
    help_texts: dict[str, set[str]] = {}
    for _, _, samples in every_push():
        for sample in samples:
            help_texts.setdefault(sample.name, set()).add(sample.documentation)
    assert {name: len(texts) for name, texts in help_texts.items()} == dict.fromkeys(HELP, 1)
    contract = set(re.findall(r"`(taxi_\w+)`", CONTRACTS))
    assert set(HELP) <= contract, f"not in docs/contracts.md: {set(HELP) - contract}"
    with pytest.raises(KeyError):
        _ = Sample("taxi_batch_drift_shares", {}, 1.0).documentation


@pytest.mark.unit
def test_tests_and_benchmarks_start_a_pushgateway_only_through_the_harness() -> None:
    """Debian's `prometheus-pushgateway` persists to one machine-wide file unless told otherwise: every test and
    benchmark starts its gateway with `start_pushgateway`, which keeps the series in memory."""
    starters = []
    for path in [*REPO_ROOT.glob("tests/**/*.py"), *REPO_ROOT.glob("bench/**/*.py")]:
        if path.name == "test_pushgateway.py":
            continue
        if re.search(r"""["']prometheus-pushgateway["']""", path.read_text()):
            starters.append(path.relative_to(REPO_ROOT).as_posix())
    assert starters == ["tests/support/prometheus_harness.py"]
    up = (REPO_ROOT / "scripts" / "up.sh").read_text()
    # make up keeps its file in the run folder ($TAXI_RUN_DIR, data/run by default)
    assert re.search(r"prometheus-pushgateway [^\n]*\\\n\s*--persistence\.file=\"\$run/", up), "make up: own file"


@pytest.mark.e2e
def test_the_harness_gateway_leaves_no_state_behind(tmp_path: Path) -> None:
    before = MACHINE_WIDE_FILE.stat().st_mtime_ns if MACHINE_WIDE_FILE.exists() else None
    with start_pushgateway(tmp_path) as url:
        assert Pushgateway(url=url).push(*every_push()[0])
        address = url.removeprefix("http://")
        (cmdline,) = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"]) if address in str(p.info["cmdline"])]
        assert "--persistence.file=" in cmdline
    after = MACHINE_WIDE_FILE.stat().st_mtime_ns if MACHINE_WIDE_FILE.exists() else None
    assert after == before, f"{MACHINE_WIDE_FILE} was written"
    with start_pushgateway(tmp_path / "second") as url:
        assert requests.get(f"{url}/api/v1/metrics", timeout=5).json()["data"] == []


@pytest.mark.e2e
def test_a_killed_pushgateway_fails_pushes_quickly_and_a_restarted_one_takes_them_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job, grouping_key, samples = every_push()[0]
    with start_pushgateway(tmp_path / "first") as url:
        gateway = Pushgateway(url=url, timeout_seconds=2)
        assert gateway.push(job, grouping_key, samples)
        address = url.removeprefix("http://")
        (process,) = [p for p in psutil.process_iter(["cmdline"]) if address in str(p.info["cmdline"])]
        process.kill()
        process.wait(10)

        started = time.monotonic()
        assert gateway.push(job, grouping_key, samples) is False  # the run goes on; the figures wait for the next push
        assert time.monotonic() - started < 5
        assert "failed" in caplog.text
        port = int(address.rsplit(":", 1)[1])
    with start_pushgateway(tmp_path / "second", port=port) as restarted:
        assert restarted == url
        assert gateway.push(job, grouping_key, samples)  # the same resource, no state left from the failure
        assert [group["month"] for group in groups(url)] == [grouping_key["month"]]


def groups(url: str) -> list[dict[str, str]]:
    return [group["labels"] for group in requests.get(f"{url}/api/v1/metrics", timeout=5).json()["data"]]


@pytest.mark.e2e
def test_delete_groups_removes_every_group_of_one_job_and_the_log_has_no_help_conflict(tmp_path: Path) -> None:
    with start_pushgateway(tmp_path) as url:
        gateway = Pushgateway(url=url)
        for job, grouping_key, samples in every_push():
            assert gateway.push(job, grouping_key, samples)
        gateway.push(BATCH_JOB, {"month": "odd/value"}, [Sample("taxi_batch_rows", {}, 1.0)])

        deleted = gateway.delete_groups(BATCH_JOB)

        assert sorted(group["month"] for group in deleted) == ["2021-02", "2021-03", "odd/value"]
        assert sorted(group["job"] for group in groups(url)) == sorted(
            [INGEST_JOB, ONLINE_JOB, AUTOMATION_JOB, PLATFORM_JOB, CHALLENGE_JOB]
        )
        assert gateway.delete_groups(BATCH_JOB) == []
        # Pushed again, as the platform does on every run: the Pushgateway compares help strings on each push.
        for job, grouping_key, samples in every_push():
            assert gateway.push(job, grouping_key, samples)
    log = (tmp_path / "pushgateway.log").read_text()
    assert "inconsistent help strings" not in log


@pytest.mark.e2e
def test_delete_groups_of_an_unreachable_gateway_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    assert Pushgateway(url="http://127.0.0.1:9", timeout_seconds=1).delete_groups(BATCH_JOB) == []
    assert "deleting the groups of taxi_batch_monitoring" in caplog.text


@pytest.mark.integration
@pytest.mark.forked
def test_deploying_another_model_deletes_the_batch_figures_of_the_previous_one(
    instance: dg.DagsterInstance, pushgateway: str
) -> None:
    resources = {**platform_resources(), "pushgateway": Pushgateway(url=pushgateway)}
    for month in ("2021-01", "2021-02", "2021-03"):
        assert dg.materialize([trip_months], partition_key=month, instance=instance, resources=resources)
    seed = {"ops": {"duration_model": {"config": {"recipe": "seed"}}}}
    for month in ("2021-01", "2021-02"):  # each validated on the month after
        assert dg.materialize(
            [duration_model], partition_key=month, instance=instance, resources=resources, run_config=seed
        )

    def deploy(month: str) -> dict:
        config = {"ops": {"deployed_model": {"config": {"training_month": month, "recipe": "seed"}}}}
        result = dg.materialize([deployed_model], instance=instance, resources=resources, run_config=config)
        metadata = result.asset_materializations_for_node("deployed_model")[0].metadata
        messages = [record.user_message for record in instance.all_logs(result.run_id)]
        return {"log": "\n".join(messages), **{name: value.value for name, value in metadata.items()}}

    assert deploy("2021-01")["stale_batch_months_deleted"] == 0
    gateway = Pushgateway(url=pushgateway)
    for job, grouping_key, samples in every_push():
        gateway.push(job, grouping_key, samples)

    # The same model again: its figures stay.
    assert deploy("2021-01")["stale_batch_months_deleted"] == 0
    assert sum(group["job"] == BATCH_JOB for group in groups(pushgateway)) == 2

    replaced = deploy("2021-02")

    assert replaced["stale_batch_months_deleted"] == 2
    assert replaced["replaced_source_tag"].startswith("taxi_duration:")
    assert BATCH_JOB not in {group["job"] for group in groups(pushgateway)}
    assert {group["job"] for group in groups(pushgateway)} == {
        ONLINE_JOB,
        INGEST_JOB,
        AUTOMATION_JOB,
        PLATFORM_JOB,
        CHALLENGE_JOB,
    }
    assert "the batch monitoring figures of months ['2021-02', '2021-03'] are deleted" in replaced["log"]
