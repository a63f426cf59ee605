"""A real headless Chromium for the web console's tests and bench: Debian's ``chromium`` package
driven by Playwright's Python API (``executable_path``), never a browser Playwright downloads.

``make browser-deps`` installs the package (``.ci/run`` calls it); :func:`chromium_missing` says
why a browser cannot run here, for :func:`~astara_actors.testing.services.unavailable`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["CHROMIUM_ENV", "chromium", "chromium_missing", "chromium_path"]

#: Names another Chromium (or Chrome) binary to use instead of Debian's.
CHROMIUM_ENV = "ASTARA_CHROMIUM"
_CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> Path | None:
    """The Chromium binary to drive: ``$ASTARA_CHROMIUM``, else Debian's, else one on PATH."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        return Path(named)
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


def chromium_missing() -> str:
    """Why no browser test can run here ("" when one can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (make venv installs test-requirements)"
    path = chromium_path()
    if path is None:
        return "Chromium is not installed (make browser-deps: apt-get install chromium)"
    if not os.access(path, os.X_OK):
        return f"{path} ({CHROMIUM_ENV}) is not an executable"
    return ""


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium for as long as the block runs."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError(chromium_missing())
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox; the pages are ours.
        browser = playwright.chromium.launch(
            executable_path=str(path),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            browser.close()
