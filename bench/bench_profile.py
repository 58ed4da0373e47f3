"""How long a reference profile takes to build, the work of the `reference_profile` asset after each deployment
(prints figures; not a test).

    .venv/bin/python bench/bench_profile.py [--months 2021-01 2022-01] [--repeat 2]

For each month M: the model trained on M (the `hgb` recipe) scores M and M+1, then `calibration.build_profile`
builds M's profile, its thresholds calibrated on windows of both months, as the asset does; the build alone is
timed, `--repeat` times. Its peer is the build at another commit (check it out and run this again): the profile
JSON must be the same byte for byte, which the printed digest shows.
"""

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from taxi_assets.core import calibration  # noqa: E402
from tests.support.drift_data import next_month, scored  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", nargs="+", default=["2021-01", "2022-01"])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    for month in args.months:
        reference, validation = scored(month, month), scored(next_month(month), month)
        seconds = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            built = calibration.build_profile(
                reference,
                validation,
                model_tag=f"hgb-{month}",
                reference_month=month,
                validation_month=next_month(month),
            )
            seconds.append(time.perf_counter() - started)
        digest = hashlib.sha256(json.dumps(built.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
        runs = " ".join(f"{s:.2f}" for s in seconds)
        print(f"{month} profile: median {statistics.median(seconds):.2f} s (runs {runs}); JSON sha256 {digest}")


if __name__ == "__main__":
    main()
