"""The host-side route filter through the real hub, proxy and sandboxes.

alice's cardio-los workspace runs the guarded Jupyter server; her air-quality
workspace runs a server of her own on the workspace port (``tests/hub/rogue_hub_config.py``):
what she would have after patching or replacing the in-sandbox guard. The last
test does it for real: from a terminal, it kills the guarded server and starts
``python -m http.server`` on its port. In every case the filter on the host
refuses every route off the allow-list before it reaches the sandbox, and
records each refusal in the audit log.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from ecluse.audit import AuditLog
from ecluse.dev.testing import run_in_terminal, write_config
from ecluse.hub.routefilter import AUDIT_EVENT
from tests.hub.test_spawner import login, wait_ready
from tests.support.hubstack import HubStack

pytestmark = pytest.mark.root

HUB_CONFIG = Path(__file__).with_name("rogue_hub_config.py")

REFUSED = [
    "files/data/stays/stays.csv",
    "files/data/admissions/admissions.csv",
    "view/data/stays/stays.csv",
    "nbconvert/html/x.ipynb?download=true",
    "dask/dashboard-check/http%3A%2F%2F127.0.0.1%3A8000%2Fstays.json",
    "dask/dashboard/http%3A%2F%2F127.0.0.1%3A8787/individual-plots.json",
    "proxy/8000/stays.csv",
    "an-extension-added-later/download?path=/data/stays/stays.csv",
    "api/contents/../../files/data/stays/stays.csv",
]


class RogueStack(HubStack):
    """The Écluse stack with tests/hub/rogue_hub_config.py as the hub's config."""

    hub_config = HUB_CONFIG


@pytest.fixture(scope="module")
def rogue_hub(tmp_path_factory, slapd):
    if os.geteuid() != 0:
        pytest.fail("the route filter tests need root (real sandboxes)")
    d = tmp_path_factory.mktemp("route-filter-hub")
    path = write_config(d, slapd, overrides={"hub.spawner": "ecluse",
                                             "sandbox.stop_grace": 5,
                                             "sandbox.start_timeout": 60})
    stack = RogueStack(path, cleanup_servers=True)
    stack.start()  # stops what it started when it fails
    try:
        yield stack
    finally:
        stack.stop()
    assert not _filter_processes(stack), "the route filter outlived the hub"


def _filter_processes(stack) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            port = str(stack.settings.hub.route_filter_port).encode()
            if b"ecluse.hub.routefilter" in cmd and b"\0" + port + b"\0" in cmd:
                found.append(int(pid))
    return found


def _workspace(stack, passwords, server: str) -> tuple[str, dict]:
    c, token = login(stack, "alice", passwords)
    r = c.api("POST", f"/users/alice/servers/{server}", token)
    assert r.status_code in (201, 202, 400), r.text  # 400: already running
    wait_ready(c, token, "alice", server)
    return token, {"Authorization": f"token {token}"}


def _denials(stack, project: str) -> list:
    return [r for r in AuditLog.from_settings(stack.settings).records(
        user="alice", event=AUDIT_EVENT) if r.project == project]


async def test_a_guarded_workspace_works_through_the_filter(rogue_hub, ldap_passwords):
    """Normal work passes the filter: the file browser, saving, a terminal (websocket)."""
    token, headers = _workspace(rogue_hub, ldap_passwords, "cardio-los")
    url = f"{rogue_hub.url}/user/alice/cardio-los/"
    r = requests.get(url + "api/contents/", headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["type"] == "directory", r.text[:300]
    r = requests.put(url + "api/contents/home/alice/analysis.py", headers=headers, timeout=30,
                     json={"type": "file", "format": "text", "content": "print('hi')\n"})
    assert r.status_code in (200, 201), r.text[:300]
    out = await run_in_terminal(url, token, "echo through-the-filter-$((40+2))")
    assert "through-the-filter-42" in out
    # the hub still sees the workspace's own address (no route flapping)
    proxy_routes = requests.get(
        f"http://127.0.0.1:{rogue_hub.settings.hub.proxy_api_port}/api/routes",
        headers={"Authorization": "token " + _proxy_token(rogue_hub)}, timeout=10).json()
    route = proxy_routes["/user/alice/cardio-los"]
    assert route["target"].startswith(
        f"http://127.0.0.1:{rogue_hub.settings.hub.route_filter_port}/")
    assert route["ecluse_target"].startswith("http://10.")


def _proxy_token(stack) -> str:
    from ecluse.secrets import ensure_secrets

    return ensure_secrets(stack.state_dir)["proxy_token"]


@pytest.mark.parametrize("server", ["cardio-los", "air-quality"])
def test_routes_off_the_allow_list_are_refused_on_the_host(rogue_hub, ldap_passwords, server):
    """Guarded server or not (air-quality runs the researcher's own server, which would
    answer every one of these with file bytes), the host refuses, and audits."""
    _, headers = _workspace(rogue_hub, ldap_passwords, server)
    url = f"{rogue_hub.url}/user/alice/{server}/"
    before = len(_denials(rogue_hub, server))
    for path in REFUSED:
        r = requests.get(url + path, headers=headers, timeout=30, allow_redirects=False)
        assert r.status_code == 403, (path, r.status_code, r.text[:300])
        assert "patient_id" not in r.text and "-1,42" not in r.text, path
        assert "allow-list" in r.text, (path, r.text[:300])
    denials = _denials(rogue_hub, server)[before:]
    assert len(denials) == len(REFUSED)
    assert all(d.outcome == "denied" and d.details["status"] == 403 for d in denials)
    assert {d.details["path"].split("?")[0] for d in denials} >= {
        f"/user/alice/{server}/files/data/stays/stays.csv"}


def test_the_rogue_server_is_real(rogue_hub, ldap_passwords):
    """Control: the air-quality server does answer with file bytes where the filter lets
    a request through (so the refusals above are the filter's doing, not the server's)."""
    _, headers = _workspace(rogue_hub, ldap_passwords, "air-quality")
    r = requests.get(f"{rogue_hub.url}/user/alice/air-quality/api/status", headers=headers,
                     timeout=30)
    assert r.status_code == 200 and r.json()["rogue"] is True
    assert "air-quality-1,42" in r.json()["content"]


def test_the_filter_restarts_when_killed(rogue_hub, ldap_passwords):
    """Killing the filter closes the workspaces (the proxy gets no answer); the hub's
    proxy check starts it again within seconds, still refusing."""
    _, headers = _workspace(rogue_hub, ldap_passwords, "air-quality")
    url = f"{rogue_hub.url}/user/alice/air-quality/"
    pids = _filter_processes(rogue_hub)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    r = requests.get(url + "files/data/admissions/admissions.csv", headers=headers, timeout=30)
    assert r.status_code >= 400 and "air-quality-1,42" not in r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = _filter_processes(rogue_hub)
        if now and now != pids:
            r = requests.get(url + "api/status", headers=headers, timeout=30)
            if r.status_code == 200:
                break
        time.sleep(0.5)
    else:
        pytest.fail("the route filter was not restarted")
    r = requests.get(url + "files/data/admissions/admissions.csv", headers=headers, timeout=30)
    assert r.status_code == 403 and "air-quality-1,42" not in r.text


async def test_a_server_killed_and_replaced_inside_the_sandbox_is_still_filtered(
        rogue_hub, ldap_passwords):
    """The attack as a researcher does it, in a real guarded workspace: from a terminal,
    kill the workspace server and start `python -m http.server` on its port, serving a
    copy of the data under the paths of refused routes. The sandbox lives on and the hub
    keeps routing to the port; the filter on the host still refuses those routes (and
    audits), so the copy never comes out."""
    token, headers = _workspace(rogue_hub, ldap_passwords, "cardio-los")
    url = f"{rogue_hub.url}/user/alice/cardio-los/"
    before = len(_denials(rogue_hub, "cardio-los"))
    www = "$HOME/www/user/alice/cardio-los"
    await run_in_terminal(
        url, token,
        f"mkdir -p {www}/files {www}/dask/dashboard-check {www}/api/contents && "
        f"cp /data/stays/stays.csv {www}/files/ && cp /data/stays/stays.csv "
        f"{www}/dask/dashboard-check/x && cp /data/stays/stays.csv {www}/api/contents/ && "
        "setsid sh -c 'sleep 1; cd $HOME/www && exec "
        "python3 -m http.server 8888' >/dev/null 2>&1 < /dev/null & sleep 0.2; kill -9 $PPID",
        timeout=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the replacement answers an allowed route
        r = requests.get(url, headers=headers, timeout=10, allow_redirects=False)
        if "SimpleHTTP" in r.headers.get("Server", ""):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the replacement server never answered: {r.status_code} {r.headers}")
    for path in ("files/stays.csv", "dask/dashboard-check/x"):
        r = requests.get(url + path, headers=headers, timeout=10, allow_redirects=False)
        assert r.status_code == 403 and "allow-list" in r.text, (path, r.status_code)
        assert "cardio-los-1,42" not in r.text, path
    # an allowed route that reads files: the content rule on the host judges the answer
    r = requests.get(url + "api/contents/stays.csv", headers=headers, timeout=10)
    assert r.status_code == 403 and "cardio-los-1,42" not in r.text, r.text[:300]
    denials = _denials(rogue_hub, "cardio-los")[before:]
    assert {d.details["path"] for d in denials} >= {
        "/user/alice/cardio-los/files/stays.csv", "/user/alice/cardio-los/dask/dashboard-check/x"}
    c, tok = login(rogue_hub, "alice", ldap_passwords)
    c.api("DELETE", "/users/alice/servers/cardio-los", tok)
