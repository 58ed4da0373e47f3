"""Print the settings in effect: each variable, its value (credentials redacted) and whether it is the default.

taxi-settings                # the table
taxi-settings --shell        # shell assignments, unredacted: how scripts/*.sh read their configuration
taxi-settings --trip-data    # which trip-data source, in words
"""

import argparse
import sys

from taxi_assets import settings
from taxi_assets.cli import answer


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(
        prog="taxi-settings",
        description="Print the settings in effect (the environment's values, else the embedded defaults).",
    )
    form = arguments.add_mutually_exclusive_group()
    form.add_argument("--shell", action="store_true", help="as shell assignments, unredacted (for scripts/*.sh)")
    form.add_argument("--trip-data", action="store_true", help="only the trip-data source, in words")
    options = arguments.parse_args(argv)
    shown = settings.shell_assignments if options.shell else settings.trip_data_line if options.trip_data else None
    return answer("settings", shown or settings.table, (ValueError,))


if __name__ == "__main__":
    sys.exit(main())
