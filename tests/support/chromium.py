"""Pages as a user sees them: headless Chromium renders a URL (scripts run, their requests answered) into its DOM
or a PNG."""

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.platform import REPO_ROOT

README_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _chromium() -> str:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run `make setup`"
    return chromium


def dom(url: str, profile: Path, budget_ms: int = 20000) -> str:
    """The page's DOM once its scripts have run for `budget_ms` of virtual time."""
    page = subprocess.run(
        [_chromium(), *FLAGS, f"--virtual-time-budget={budget_ms}", f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return page.stdout


def screenshot(url: str, path: Path, profile: Path, size: str = "1440,900", budget_ms: int = 20000) -> Path:
    """A PNG of the page as rendered in a `size` window."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [_chromium(), *FLAGS, f"--virtual-time-budget={budget_ms}", f"--user-data-dir={profile}"]
        + [f"--window-size={size}", f"--screenshot={path}", url],
        capture_output=True,
        timeout=180,
        check=True,
    )
    return path


def readme_screenshot(name: str, url: str, folder: Path, **kwargs) -> Path:
    """The page as a PNG in `folder`, or in docs/screenshots (the README's) with UPDATE_SCREENSHOTS=1."""
    target = README_SCREENSHOTS if os.getenv("UPDATE_SCREENSHOTS") else folder / "screenshots"
    path = screenshot(url, target / f"{name}.png", folder / f"chromium-{name}", **kwargs)
    assert 10_000 < path.stat().st_size < 1 << 20, f"{path}: {path.stat().st_size} bytes"
    return path
