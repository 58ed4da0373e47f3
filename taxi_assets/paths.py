"""Where the embedded defaults live: everything under `data/` at the repository root."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"


def env_path(variable: str, default: str) -> str:
    """The path in `variable`, or `default` under the repository's `data/` folder."""
    return os.getenv(variable) or str(DATA_DIR / default)
