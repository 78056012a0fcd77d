"""A page of headless Debian Chromium (``/usr/bin/chromium``) driven by Playwright,
in a throw-away profile removed afterwards: the browser tests' one way to start it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def chromium_page(*, prefix: str = "ecluse-test-", timeout_ms: int = 30000,
                  chromium: Path = CHROMIUM, **context: Any) -> Iterator[Any]:
    """A new page; ``context`` goes to ``launch_persistent_context`` (downloads, viewport)."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix=prefix + "chromium-")
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=str(chromium), headless=True, args=ARGS, **context)
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()
            shutil.rmtree(profile, ignore_errors=True)
