"""Shared by tests/workspace and tests/functional: a hub with real workspaces."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ecluse.dev.ldapserver import free_port
from ecluse.dev.testing import HubClient, project_token_scopes, write_config
from tests.support.hubstack import HubStack, running_hub

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "extensions" / "build.sh"


@pytest.fixture(scope="session")
def workspace_extension() -> None:
    r = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail(f"extensions/build.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


@pytest.fixture(scope="module")
def workspace_hub(tmp_path_factory, slapd, workspace_extension):
    if os.geteuid() != 0:
        pytest.fail("the workspace tests need root (bubblewrap, network namespaces, cgroups)")
    directory = tmp_path_factory.mktemp("wshub")
    path = write_config(
        directory, slapd,
        overrides={"hub.spawner": "ecluse", "sandbox.stop_grace": 2,
                   "sandbox.start_timeout": 60, "airlock.port": free_port(),
                   "airlock.check_processes": 0},
    )
    with running_hub(path, cleanup_servers=True, wait_for=("airlock",)) as stack:
        yield stack


@dataclass
class Workspace:
    client: HubClient
    token: str
    url: str  # .../user/<name>/<project>/
    user: str

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 30)
        kw.setdefault("allow_redirects", False)
        return requests.get(self.url + path, headers={"Authorization": f"token {self.token}"},
                            **kw)

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 120)
        kw.setdefault("allow_redirects", False)
        return requests.request(method, self.url + path,
                                headers={"Authorization": f"token {self.token}"}, **kw)


def past_the_filter(hub: HubStack, ws: Workspace) -> Workspace:
    """The same workspace reached directly, past the host's route filter: what the
    in-server guard alone answers (the proxy's route names the real server, signed)."""
    from ecluse.hub.routefilter import derive_key, open_route
    from ecluse.secrets import ensure_secrets

    proxy_token = ensure_secrets(hub.state_dir)["proxy_token"]
    routes = requests.get(f"http://127.0.0.1:{hub.settings.hub.proxy_api_port}/api/routes",
                          headers={"Authorization": f"token {proxy_token}"}, timeout=10).json()
    prefix = "/" + ws.url.split("/", 3)[3]  # /user/<name>/<project>/
    target = routes[prefix.rstrip("/")]["target"] if prefix.rstrip("/") in routes \
        else routes[prefix]["target"]
    segment = target.split("/", 3)[3].split("/", 1)[0]
    route = open_route(derive_key(proxy_token), segment)
    assert route is not None, f"the proxy's target for {prefix} is not a filtered one: {target}"
    return Workspace(ws.client, ws.token, route.target + prefix, ws.user)


def start_workspace_now(hub: HubStack, passwords: dict[str, str], user: str,
                        project: str) -> Workspace:
    """Sign ``user`` in, start their ``project`` workspace, wait until it is ready."""
    c = HubClient(hub.url)
    assert c.login(user, passwords[user]).status_code == 302
    token = c.new_token(user, project_token_scopes(project))
    r = c.api("POST", f"/users/{user}/servers/{project}", token)
    assert r.status_code in (201, 202, 400), r.text
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        s = c.api("GET", f"/users/{user}", token).json()["servers"].get(project)
        if s and s["ready"]:
            return Workspace(c, token, f"{hub.url}{s['url']}", user)
        time.sleep(0.3)
    raise AssertionError(f"{user}/{project} did not become ready")


@pytest.fixture
def start_workspace(workspace_hub, ldap_passwords):
    def start(user: str, project: str) -> Workspace:
        return start_workspace_now(workspace_hub, ldap_passwords, user, project)

    return start
