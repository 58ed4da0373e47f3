"""The command-line tools, each a console script of pyproject.toml (`python -m taxi_assets.cli.<tool>` is the same):

- `taxi-replay`: real TLC rides against the Bento service, with feedback (replay.py);
- `taxi-backfill`: a partition backfill launched and followed through the Dagster webserver (backfill.py);
- `taxi-demo`: the whole loop on a running platform, `make demo` (demo.py);
- `taxi-rollback`: the model deployed before the current one deployed again (rollback.py);
- `taxi-settings`: the settings in effect (settings.py).

The Dagster tools talk to the webserver through `dagster_client`, the one module that does; they print one clear
line, never a traceback, when they cannot do what was asked (`ToolError`).
"""

import sys
from collections.abc import Callable


class ToolError(Exception):
    """A tool cannot do what was asked: the message, printed as is, says why and what to do."""


def answer(tool: str, action: Callable[[], str], refusals: tuple[type[Exception], ...] = (ToolError,)) -> int:
    """Print what `action` returns (exit status 0), or why it could not, one line `tool: why` on stderr (1)."""
    try:
        print(action())
    except refusals as error:
        print(f"{tool}: {error}", file=sys.stderr)
        return 1
    return 0
