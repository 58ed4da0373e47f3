"""`python -m bento_service [bentoml serve options]`: serve TaxiDuration with the repository's defaults.

BentoML fixes its home when its CLI starts, before the service module is imported, so the setting's value
(`taxi_assets.settings`: BENTOML_HOME, by default data/bentoml under the repository root) has to be exported
here, ahead of `bentoml serve`.
"""

import os
import sys

from taxi_assets import settings


def main() -> None:
    os.environ["BENTOML_HOME"] = settings.current().bentoml_home
    command = [sys.executable, "-m", "bentoml", "serve", "bento_service.service:TaxiDuration", *sys.argv[1:]]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
