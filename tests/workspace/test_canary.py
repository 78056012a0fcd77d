"""Canary test (issue 12, item 4): row-level data planted everywhere never comes back.

The canary (``tests/support/canary.py``) is planted in a real sandboxed
workspace: in every data format the guard knows, renamed to innocent names,
compressed, base64- and hex-encoded, hidden in JSON5 comments of a
JupyterLab settings file and in workspace layouts, and in a user data
folder (kernelspecs, lab extensions, themes). Every allowed route that
reads files without running code is then tried with alice's token: no
answer carries any of the canary's bytes, raw, base64 or hex.
"""

from __future__ import annotations

import asyncio

import pytest

from ecluse.dev.testing import run_in_terminal
from tests.support import canary

from .helpers import past_the_filter

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

HOME = "home/alice"


@pytest.fixture(scope="module")
def planted(workspace_hub, ldap_passwords):
    from .helpers import start_workspace_now

    ws = start_workspace_now(workspace_hub, ldap_passwords, "alice", "cardio-los")
    files = canary.canary_files()
    canary.plant(ws, HOME, files)
    return ws, files


def test_the_canary_is_planted_and_detectable(planted):
    ws, files = planted
    # the detector sees the canary when it does come out: through the screen
    # channel (a terminal prints what it is asked to), which the guard leaves open
    out = asyncio.run(run_in_terminal(
        ws.url, ws.token, "cat ~/canary/known/canary.csv | head -3; "
        "ls ~/.jupyter/lab/user-settings/@jupyterlab/apputils-extension/ "
        "~/.jupyter/lab/workspaces ~/.local/share/jupyter/kernels/canary"))
    assert canary.leaks(out.encode(), {canary.TOKEN.encode(): "token"}) == ["token"]
    for name in ("themes.jupyterlab-settings", "default-37a8.jupyterlab-workspace",
                 "logo-64x64.png"):
        assert name in out, out[-2000:]
    listing = ws.get(f"api/contents/{HOME}/canary/known").json()
    assert {c["name"] for c in listing["content"]} >= {"canary.parquet", "canary.csv"}


@pytest.mark.parametrize("wall", ["both walls", "in-server guard alone"])
def test_no_canary_byte_leaves_through_any_file_reading_route(planted, workspace_hub, wall):
    """Through the proxy (host filter, then the in-server guard), and straight to the
    server past the filter: the in-server guard alone (the filter alone:
    tests/hub/test_routefilter_content.py)."""
    ws, files = planted
    if wall == "in-server guard alone":
        ws = past_the_filter(workspace_hub, ws)
    needles = canary.needles(files)
    leaked, answered = [], {}
    for method, path in canary.probes(HOME, files):
        r = ws.request(method, path, timeout=60)
        answered[path] = r.status_code
        found = canary.leaks(r.content, needles)
        if found:
            leaked.append((path, r.status_code, found[:3]))
    assert not leaked, leaked
    # the routes did answer (a dead server leaks nothing and proves nothing)
    assert answered["lab"] == 200
    assert answered["lab/api/settings"] == 200
    assert answered[f"api/contents/{HOME}/canary/known"] == 200
    assert sum(1 for s in answered.values() if s == 403) > 100


def test_settings_and_layouts_still_work_without_the_canary(planted):
    ws, _ = planted
    r = ws.get("lab/api/settings/@jupyterlab/apputils-extension:themes")
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    # the comments (where the canary hid) are gone; the settings are kept
    assert body["settings"] == {"theme": "JupyterLab Light"}
    assert canary.TOKEN not in body["raw"] and "JupyterLab Light" in body["raw"]
    layout = {"data": {"file-browser-filebrowser:cwd": {"path": HOME}},
              "metadata": {"id": "clean"}}
    assert ws.request("PUT", "lab/api/workspaces/clean", json=layout).status_code == 204
    r = ws.get("lab/api/workspaces/clean")
    assert r.status_code == 200 and r.json()["data"] == layout["data"]
    assert ws.get("lab/api/workspaces/default").status_code == 403
