"""Fixtures of the end-to-end (browser) tests through the real stack.

* ``workspace_hub`` (module), ``workspace_extension`` (session) — see
  ``tests/workspace/conftest.py``: the hub with real sandboxed workspaces,
  the airlock service, and the installed workspace extension.
* ``browser_page`` — a page of headless Debian Chromium (``/usr/bin/chromium``)
  driven by Playwright, in a throw-away profile (removed afterwards).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workspace.helpers import workspace_extension, workspace_hub  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser_page() -> Iterator:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is needed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="ecluse-test-chromium-")
    downloads = tempfile.mkdtemp(prefix="ecluse-test-downloads-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, accept_downloads=True,
            downloads_path=downloads, viewport={"width": 1400, "height": 900},
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            page = context.new_page()
            page.set_default_timeout(30000)
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
            shutil.rmtree(downloads, ignore_errors=True)
