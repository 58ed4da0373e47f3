"""Where the embedded defaults live: everything under `data/` at the repository root."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"


def resolve(path: str) -> str:
    """A relative path is relative to the repository root, whatever directory a Dagster run starts in."""
    return str(PROJECT_ROOT / path) if not Path(path).is_absolute() else path


def env_path(variable: str, default: str) -> str:
    """The path in `variable`, or `default` under the repository's `data/` folder."""
    value = os.getenv(variable)
    return resolve(value) if value else str(DATA_DIR / default)
