"""Print the settings in effect: each variable, its value (credentials redacted) and whether it is the default.

taxi-settings                # the table
taxi-settings --shell        # shell assignments, unredacted: how scripts/*.sh read their configuration
taxi-settings --trip-data    # which trip-data source, in words
"""

import argparse
import sys

from taxi_assets import settings


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(
        prog="taxi-settings",
        description="Print the settings in effect (the environment's values, else the embedded defaults).",
    )
    form = arguments.add_mutually_exclusive_group()
    form.add_argument("--shell", action="store_true", help="as shell assignments, unredacted (for scripts/*.sh)")
    form.add_argument("--trip-data", action="store_true", help="only the trip-data source, in words")
    options = arguments.parse_args(argv)
    try:
        if options.shell:
            print(settings.shell_assignments())
        else:
            print(settings.trip_data_line() if options.trip_data else settings.table())
    except ValueError as error:
        print(f"settings: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
