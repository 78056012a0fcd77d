"""Fixtures of the end-to-end (browser) tests through the real stack.

* ``workspace_hub`` (module), ``workspace_extension`` (session) — see
  ``tests/workspace/conftest.py``: the hub with real sandboxed workspaces,
  the airlock service, and the installed workspace extension.
* ``browser_page`` — a page of headless Debian Chromium (``/usr/bin/chromium``)
  driven by Playwright, in a throw-away profile (removed afterwards);
  ``browser_page_fr`` the same in French (``Accept-Language: fr-FR``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.support.browser import CHROMIUM, chromium_page
from tests.workspace.helpers import workspace_extension, workspace_hub  # noqa: F401


def _browser_page(**context) -> Iterator:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is needed (apt-get install chromium)")
    downloads = tempfile.mkdtemp(prefix="ecluse-test-downloads-")
    try:
        with chromium_page(accept_downloads=True, downloads_path=downloads,
                           viewport={"width": 1400, "height": 900}, **context) as page:
            yield page
    finally:
        shutil.rmtree(downloads, ignore_errors=True)


@pytest.fixture
def browser_page() -> Iterator:
    yield from _browser_page()


@pytest.fixture
def browser_page_fr() -> Iterator:
    yield from _browser_page(locale="fr-FR")
