"""`python -m bento_service [bentoml serve options]`: serve TaxiDuration with the repository's defaults.

BentoML fixes its home when its CLI starts, before the service module is imported, so the embedded default
(BENTOML_HOME=data/bentoml under the repository root) has to be set here, ahead of `bentoml serve`.
"""

import os
import sys
from pathlib import Path


def main() -> None:
    os.environ.setdefault("BENTOML_HOME", str(Path(__file__).resolve().parent.parent / "data" / "bentoml"))
    command = [sys.executable, "-m", "bentoml", "serve", "bento_service.service:TaxiDuration", *sys.argv[1:]]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
