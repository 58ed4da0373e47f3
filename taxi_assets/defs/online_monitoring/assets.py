"""Online monitoring: the Bento service's prediction log in DuckDB, and the drift of recent windows of it.

Feedback is stored on the UTC day it arrived, not on the day of its prediction, so a day that is ingested never
changes again when feedback for its rides arrives later; the view `online_predictions` joins every prediction
with the latest feedback for its ride id, whichever day that feedback landed on.
"""

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

import dagster as dg
import duckdb
from pydantic import Field

from taxi_assets.core import profile
from taxi_assets.core.drift import CALIBRATION_SIZES, DEFAULT_WINDOW
from taxi_assets.core.metrics import ONLINE_JOB
from taxi_assets.core.online import (
    DISTANCE_CUSUM_LIMIT,
    HOUR_WINDOW,
    RMSE_CHUNK,
    RMSE_CUSUM_CHUNKS,
    RMSE_CUSUM_LIMIT,
    SLOWDOWN_CUSUM_LIMIT,
    agreeing_windows,
    confirmed,
    last_complete_hour,
    online_samples,
    window_figures,
)
from taxi_assets.core.warehouse import PREDICTION_LOG_DAY_SELECTS, PREDICTION_LOG_SCHEMA, replace_partition
from taxi_assets.defs.model.profile import reference_profile
from taxi_assets.defs.online_monitoring.resources import PredictionLogStore
from taxi_assets.defs.partitions import prediction_days
from taxi_assets.defs.resources import DUCKDB_POOL, ModelRegistry, Pushgateway, Warehouse

if TYPE_CHECKING:
    import pandas as pd


@dg.asset(partitions_def=prediction_days, pool=DUCKDB_POOL, kinds={"duckdb"}, group_name="online_monitoring")
def prediction_logs(
    context: dg.AssetExecutionContext, warehouse: Warehouse, prediction_log: PredictionLogStore
) -> dg.MaterializeResult:
    """The Bento service's prediction log of one UTC day in DuckDB: predictions and the feedback that arrived.

    Predictions go to table `prediction_log`, feedback to `prediction_feedback`, each under the UTC day it was
    logged; view `online_predictions` joins every prediction with its actual duration and error once feedback
    for it has arrived, also days later. The day is read whole from the store and replaced in one transaction,
    so re-running it (the sensor does, while the day grows) never duplicates or drops a record.
    """
    day = context.partition_key
    with warehouse.get_connection() as conn:
        for statement in PREDICTION_LOG_SCHEMA:
            conn.execute(statement)
        prediction_log.reader().stage_day(conn, day)
        rows = replace_partition(conn, "day", day, PREDICTION_LOG_DAY_SELECTS)
        joined, late = conn.execute(
            """SELECT
                (SELECT count(*) FROM online_predictions WHERE day = $day AND actual_duration IS NOT NULL),
                (SELECT count(*) FROM prediction_feedback f JOIN prediction_log p ON p.id = f.id
                 WHERE f.day = $day AND p.day < $day)""",
            {"day": day},
        ).fetchone()
    prediction_rows = rows["prediction_log"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": prediction_rows,
            "prediction_rows": prediction_rows,
            "feedback_rows": rows["prediction_feedback"],
            "predictions_with_feedback": joined,
            "joined_share": joined / prediction_rows if prediction_rows else 0.0,
            "late_feedback_rows": late,
        }
    )


class OnlineDriftConfig(dg.Config):
    last_n: int = Field(
        DEFAULT_WINDOW,
        ge=CALIBRATION_SIZES[0],
        le=CALIBRATION_SIZES[-1],
        description=(
            f"Size of the `last_<n>` window (dashboards show last_{DEFAULT_WINDOW}), between the smallest and the "
            "largest calibrated size: beyond the largest no threshold was measured (bench_drift_calibration)."
        ),
    )
    as_of: str = Field("", description="ISO time whose last complete UTC hour is the `hour` window; empty: now.")


def recent_predictions(conn: duckdb.DuckDBPyConnection, model_tag: str, n: int, skip: int = 0) -> "pd.DataFrame":
    """The last `n` predictions of `model_tag` before the newest `skip` ones."""
    return conn.execute(
        "SELECT * FROM online_predictions WHERE model_tag = $tag ORDER BY ts DESC, id LIMIT $n OFFSET $skip",
        {"tag": model_tag, "n": n, "skip": skip},
    ).df()


def cusum_rides(conn: duckdb.DuckDBPyConnection, model_tag: str, columns: str, fed: bool) -> "pd.DataFrame":
    """`columns` of the newest predictions of `model_tag` (only those whose feedback arrived when `fed`), oldest
    first, as many as the CUSUMs look back over: with `fed`, prediction and actual duration for the RMSE alarm's
    (`online.feedback_cusums`); all rides' pickup time and distance for the dataset alarm's
    (`online.distance_cusum`)."""
    feedback = "AND error IS NOT NULL" if fed else ""
    newest_first = conn.execute(
        f"SELECT {columns} FROM online_predictions WHERE model_tag = $tag {feedback} ORDER BY ts DESC, id LIMIT $n",
        {"tag": model_tag, "n": RMSE_CHUNK * RMSE_CUSUM_CHUNKS},
    ).df()
    return newest_first.iloc[::-1].reset_index(drop=True)


def hour_predictions(
    conn: duckdb.DuckDBPyConnection, model_tag: str, start: dt.datetime, end: dt.datetime
) -> "pd.DataFrame":
    """Predictions of `model_tag` logged in [start, end): the newest CALIBRATION_SIZES[-1] of them in a busier hour
    (no threshold was measured beyond that size)."""
    return conn.execute(
        "SELECT * FROM online_predictions WHERE model_tag = $tag AND ts >= $start AND ts < $end "
        "ORDER BY ts DESC, id LIMIT $n",
        {"tag": model_tag, "start": start, "end": end, "n": CALIBRATION_SIZES[-1]},
    ).df()


def _utc_naive(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value) if value else dt.datetime.now(dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


# Runs that have not ended: one of them building reference_profile will have it stored soon.
_UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _profile_on_its_way(instance: dg.DagsterInstance) -> bool:
    """Whether a run that has not ended materializes reference_profile: right after a deployment, the automation's
    run builds the new model's profile while the first predictions of that model are ingested (the ingest's
    priority lets it go first)."""
    runs = instance.get_runs(dg.RunsFilter(statuses=_UNFINISHED))
    return any(run.asset_selection and reference_profile.key in run.asset_selection for run in runs)


@dg.asset(
    deps=[prediction_logs, reference_profile],
    pool=DUCKDB_POOL,
    kinds={"duckdb", "prometheus"},
    group_name="online_monitoring",
    output_required=False,  # not while the deployed model's profile is being built: see below
)
def online_drift(
    context: dg.AssetExecutionContext,
    config: OnlineDriftConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
    pushgateway: Pushgateway,
) -> Iterator[dg.MaterializeResult]:
    """Drift of the live requests and predictions against the deployed model's reference profile, and online error.

    Two windows of the deployed model's logged predictions: the last `last_n` (`last_<n>`) and the last complete
    UTC hour (`hour`). Each feature is tested against the profile re-weighted to the window's (day type, hour) mix,
    with the threshold calibrated for the window's size and kind (spread over a week or more, or consecutive rides)
    and the profile's effect floor; the window drifted when any feature did. RMSE and MAE cover the rows whose
    feedback arrived, against the RMSE bound of the model's validation residuals at that many rows; the share of
    outlier rides against its calibrated threshold. The windows before each one are judged too (the `last_n` rides
    before the newest `last_n`; the two hours before the hour): `taxi_online_alarm` is 1 only where they all agree
    (`online.confirmed`), which the alert rules page on. A consecutive `last_n` window's RMSE alarm is two CUSUMs of
    the newest feedback, chunk by chunk, instead (`online.rmse_cusum`, `online.slowdown_cusum`): a small lasting
    excess of the RMSE, or of rides taking longer than predicted, adds up, a bad day does not. Its dataset alarm is
    also raised by a CUSUM of the newest rides' distances against the profile's (`online.distance_cusum`). A window
    of fewer than 100 rides is "insufficient data".
    Pushed to the Pushgateway (job `taxi_online_monitoring`, grouping key `window`). Right after a deployment, while
    a run builds the new model's profile, it is skipped (the next ingest judges the windows; with no more traffic,
    the prediction-log sensor asks for the day once more when the profile is stored); with no profile and none on
    its way it fails.
    """
    model = model_registry.deployed()
    start, end = last_complete_hour(_utc_naive(config.as_of))
    with warehouse.get_connection() as conn:
        if not conn.execute("SELECT 1 FROM duckdb_views() WHERE view_name = 'online_predictions'").fetchall():
            raise dg.Failure("DuckDB has no prediction log yet; materialize prediction_logs first")
        # Each window with those before it (no ride in common), which must agree before an alarm is raised.
        hour = dt.timedelta(hours=1)
        # A consecutive sliding window's RMSE alarm is the CUSUMs of the newest feedback (`online.feedback_cusums`),
        # and its dataset alarm also the distance CUSUM of the newest rides (`online.distance_cusum`).
        windows = {
            f"last_{config.last_n}": (
                recent_predictions(conn, model["tag"], config.last_n),
                [recent_predictions(conn, model["tag"], config.last_n, config.last_n)],
                cusum_rides(conn, model["tag"], "prediction, actual_duration", fed=True),
                cusum_rides(conn, model["tag"], "pickup_datetime, trip_distance", fed=False),
            ),
            HOUR_WINDOW: (
                hour_predictions(conn, model["tag"], start, end),
                [
                    hour_predictions(conn, model["tag"], start - back * hour, start - (back - 1) * hour)
                    for back in range(1, agreeing_windows(HOUR_WINDOW) + 1)
                ],
                None,
                None,
            ),
        }
        prof = profile.load(conn, model["tag"])
    if prof is None:
        if _profile_on_its_way(context.instance):
            # Not a failure: the windows are judged at the next ingest, against the profile then stored.
            context.log.warning(f"no reference profile for {model['tag']} yet, and a run is building it: skipped")
            return
        raise dg.Failure(f"no reference profile for {model['tag']}; materialize reference_profile first")
    reference = prof.arrays()

    metadata: dict[str, object] = {
        "model_tag": model["tag"],
        "reference_month": prof.reference_month,
        "validation_rmse": float(model["validation_rmse"]),
        "hour_window": f"{start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC",
    }
    for name, (current, before, feedback, rides) in windows.items():
        figures = window_figures(name, current, prof, reference, feedback, rides)
        previous = [window_figures(name, rides, prof, reference) for rides in before]
        samples = online_samples(figures, previous, model["tag"], float(model["validation_rmse"]))
        pushed = pushgateway.push(ONLINE_JOB, {"window": name}, samples, context.log)
        metadata |= {f"{name}/rows": figures.rows, f"{name}/feedback_rows": figures.feedback_rows}
        # The windows that must agree before an alarm is raised, for a user reading why one was or was not: the
        # one just before, and the fewest rides among them.
        metadata[f"{name}/previous_window_rows"] = previous[0].rows
        metadata[f"{name}/agreeing_windows_min_rows"] = min(window.rows for window in previous)
        metadata[f"{name}/pushed_to_pushgateway"] = pushed
        if not figures.sufficient:
            metadata[f"{name}/verdict"] = f"insufficient data: {figures.rows} rides, fewer than {CALIBRATION_SIZES[0]}"
            continue
        metadata[f"{name}/alarms"] = ", ".join(a for a, on in confirmed(figures, previous).items() if on) or "none"
        if figures.features is not None and figures.prediction is not None:
            metadata |= {
                f"{name}/kind": figures.kind,
                f"{name}/drift_share": float(figures.features.share_drifted),
                f"{name}/dataset_drift": float(figures.features.dataset_drift),
                f"{name}/drifted_features": ", ".join(f.feature for f in figures.features.features if f.drifted)
                or "none",
                f"{name}/prediction_drift_score": figures.prediction.score,
                **{f"{name}/drift_score/{f.feature}": f.score for f in figures.features.features},
                **{f"{name}/drift_effect/{f.feature}": f.effect for f in figures.features.features},
                **{f"{name}/effect_floor/{f.feature}": f.floor for f in figures.features.features},
                **{f"{name}/outlier_share/{rule}": share for rule, share in figures.outliers.items()},
            }
        if figures.rmse_cusum is not None:
            metadata |= {f"{name}/rmse_cusum": figures.rmse_cusum, f"{name}/rmse_cusum_limit": RMSE_CUSUM_LIMIT}
        if figures.distance_cusum is not None:
            metadata |= {
                f"{name}/distance_cusum": figures.distance_cusum,
                f"{name}/distance_cusum_limit": DISTANCE_CUSUM_LIMIT,
            }
        if figures.slowdown_cusum is not None:
            metadata |= {
                f"{name}/slowdown_cusum": figures.slowdown_cusum,
                f"{name}/slowdown_cusum_limit": SLOWDOWN_CUSUM_LIMIT,
            }
        if figures.rmse is not None:
            metadata |= {
                f"{name}/rmse": figures.rmse,
                f"{name}/mae": figures.mae,
                f"{name}/rmse_bound": figures.rmse_bound,
                f"{name}/mean_log_ratio": figures.mean_log_ratio,
            }
        if figures.slowdown_bound is not None:
            metadata[f"{name}/slowdown_bound"] = figures.slowdown_bound
    yield dg.MaterializeResult(metadata=metadata)
