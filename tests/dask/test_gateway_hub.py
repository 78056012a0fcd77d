"""dask-gateway as a hub-managed service, authenticating users through JupyterHub.

The stack ``ecluse up`` builds (``ecluse.dev.stack.Stack``: JupyterHub +
configurable-http-proxy, the EcluseSpawner) with ``dask.gateway: true``: the
gateway service, its scopes and the workspaces' ports come from the real hub
configuration (``ecluse.hub.hubconfig.configure``), nothing added by hand;
users sign in with LDAP passwords and use hub API tokens with the gateway on
the sandbox host address, as workspaces do. The hub's public route to the
service is the authenticating front (``ecluse.dask.front``): dashboards for
their cluster's owner only, the API refused.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
import requests
import yaml

from ecluse.audit import AuditLog
from ecluse.dev.ldapserver import free_port
from ecluse.dev.testing import HubClient, write_config
from tests.dask.conftest import _projects, wait_port
from tests.support.hubstack import running_hub

pytestmark = pytest.mark.root
PORT = free_port()  # other test runs may share this host


@pytest.fixture(scope="module")
def gateway_hub(tmp_path_factory, slapd, warehouse):
    d = tmp_path_factory.mktemp("dask-hub")
    path = write_config(d, slapd, overrides={"hub.auth_refresh_age": 1,
                                             "hub.spawner": "ecluse",
                                             "dask.gateway": True,
                                             "dask.proxy_port": PORT,
                                             "dask.front_port": free_port(),
                                             "dask.api_port": free_port(),
                                             "dask.proxy_http_port": free_port()})
    (d / "projects.yaml").write_text(yaml.safe_dump(_projects(warehouse)))
    with running_hub(path) as stack:
        yield stack


def _token(hub, slapd, user: str, project: str | None = None) -> str:
    """A token as a workspace of ``project`` holds it (the gateway's scopes, one project)."""
    from ecluse.dask.hub import WORKSPACE_TOKEN_SCOPES
    from ecluse.hub.roles import project_scope

    client = HubClient(hub.url)
    assert client.login(user, slapd.passwords[user]).status_code == 302
    scopes = [*WORKSPACE_TOKEN_SCOPES, *([project_scope(project)] if project else [])]
    r = client.session.post(f"{hub.url}/hub/api/users/{user}/tokens",
                            json={"note": "test", "expires_in": 600, "scopes": scopes},
                            headers={"X-XSRFToken": client.session.cookies.get("_xsrf") or ""},
                            timeout=30)
    r.raise_for_status()
    return r.json()["token"]


def _gateway(hub, token: str | None):
    """A client as in a workspace: the API (the front's API listener) and the schedulers
    (the proxy's TLS listener) on the sandbox host address."""
    from dask_gateway import Gateway, JupyterHubAuth

    from ecluse.dask.gateway import host_address

    addr = host_address(hub.settings, ensure=False)
    api = hub.settings.dask.api_port
    return Gateway(address=f"http://{addr}:{api}/services/dask-gateway",
                   proxy_address=f"gateway://{addr}:{PORT}",
                   auth=JupyterHubAuth(api_token=token or "not-a-token"), asynchronous=True)


async def _ready(hub) -> None:
    from ecluse.dask.gateway import host_address

    await wait_port(host_address(hub.settings, ensure=False),
                    hub.settings.dask.api_port, timeout=60,
                    prefix="/services/dask-gateway")


async def test_gateway_authenticates_through_the_hub(gateway_hub, slapd):
    await _ready(gateway_hub)

    def gateway(token: str | None):
        return _gateway(gateway_hub, token)

    async with gateway(None) as g:  # no valid hub token: refused (the hub answers 403)
        with pytest.raises(Exception, match="401|Unauthorized|unauthorized|Permission failure"):
            await g.list_clusters()
    bob = _token(gateway_hub, slapd, "bob", "cardio-los")
    async with gateway(bob) as g:  # hub groups decide: bob is not in air-quality
        with pytest.raises(ValueError, match="not a member of project 'air-quality'"):
            await g.new_cluster(project="air-quality")
    alice = _token(gateway_hub, slapd, "alice", "air-quality")
    async with gateway(alice) as g:
        cluster = await g.new_cluster(project="air-quality")
        try:
            await cluster.scale(1)
            client = await cluster.get_client(set_as_default=False)
            await client.wait_for_workers(1, timeout=120)
            assert await client.submit(lambda: __import__("os").listdir("/data"),
                                       pure=False) is not None
            await client.close()
        finally:
            await cluster.shutdown()


# ------------------------------------------------------------------ the front


def _browser(hub, slapd, user: str) -> HubClient:
    client = HubClient(hub.url)
    assert client.login(user, slapd.passwords[user]).status_code == 302
    return client


def _get(session, url: str, **kw) -> requests.Response:
    kw.setdefault("headers", {"Accept": "text/html"})
    return session.get(url, timeout=30, **kw)


def _no_dashboard(r: requests.Response) -> None:
    body = r.text.lower()
    assert not any(m in body for m in ("bokeh", "render_items", "<script")), r.text[:500]


async def _bokeh_ack(url: str, cookies: str, origin: str, token: str) -> dict:
    """Open the dashboard's bokeh WebSocket and return the header of its first message."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(
        HTTPRequest(url, headers={"Cookie": cookies, "Origin": origin}, request_timeout=30),
        subprotocols=["bokeh", token])
    try:
        header = await asyncio.wait_for(conn.read_message(), 30)
        return json.loads(header)
    finally:
        conn.close()


def test_public_route_refuses_the_gateway_api(gateway_hub, slapd):
    """Workspaces use the API on the host address; the hub's public port does not serve it."""
    token = _token(gateway_hub, slapd, "alice")
    for path in ("api/v1/clusters/", "api/health", ""):
        r = requests.get(f"{gateway_hub.url}/services/dask-gateway/{path}",
                         headers={"Authorization": f"token {token}"}, timeout=30)
        assert r.status_code == 403, (path, r.status_code, r.text[:300])
        assert "not served on the hub's public address" in r.json()["message"]


async def test_dashboard_is_for_its_owner_only(gateway_hub, slapd):
    await _ready(gateway_hub)
    hub = gateway_hub
    alice = _browser(hub, slapd, "alice")
    bob = _browser(hub, slapd, "bob")  # cardio-los only
    bob_token = bob.new_token("bob")
    audit = AuditLog.from_settings(hub.settings)
    seen = {r.seq for r in audit.records(event="dask.dashboard")}
    base = f"{hub.url}/services/dask-gateway/clusters"
    async with _gateway(hub, _token(hub, slapd, "alice", "cardio-los")) as g, \
            _gateway(hub, _token(hub, slapd, "alice", "air-quality")) as g_air:
        cardio, air = await asyncio.gather(g.new_cluster(project="cardio-los"),
                                           g_air.new_cluster(project="air-quality"))
        try:
            status = f"{base}/{cardio.name}/status"
            # (c) the owner, signed in with a browser: OAuth through the hub, then the page
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                r = await asyncio.to_thread(_get, alice.session, status)
                if r.status_code == 200 or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert r.status_code == 200, (r.status_code, r.text[:500])
            assert "bokeh" in r.text.lower()
            assert any("oauth2/authorize" in h.headers.get("Location", "") for h in r.history)
            m = re.search(r'"token"\s*:\s*"([^"]+)"', r.text) or re.search(
                r'token&quot;:&quot;([^&]+)&quot;', r.text)
            assert m, "no bokeh session token in the status page"
            ws_url = status.replace("http://", "ws://") + "/ws"
            cookies = "; ".join(f"{c.name}={c.value}" for c in alice.session.cookies)
            header = await _bokeh_ack(ws_url, cookies, hub.url, m.group(1))
            assert header.get("msgtype") == "ACK", header
            with pytest.raises(Exception, match="403"):  # another site, alice's cookie
                await _bokeh_ack(ws_url, cookies, "http://elsewhere.example", m.group(1))

            for name in (cardio.name, air.name):
                url = f"{base}/{name}/status"
                # (a) not signed in: a browser goes to the hub's sign-in, an API client gets 403
                r = await asyncio.to_thread(_get, requests, url, allow_redirects=False)
                assert r.status_code == 302, r.status_code
                assert "/hub/api/oauth2/authorize" in r.headers["Location"]
                _no_dashboard(r)
                r = await asyncio.to_thread(_get, requests, url,
                                            headers={"Accept": "application/json"})
                assert r.status_code == 403 and "Sign in" in r.json()["message"]
                _no_dashboard(r)
                r = await asyncio.to_thread(_get, requests, url, headers={
                    "Authorization": "token not-a-token", "Accept": "application/json"})
                assert r.status_code == 403
                # (b) bob (same project for cardio-los, another for air-quality): 403,
                # signed in with the browser or with a token
                r = await asyncio.to_thread(_get, bob.session, url)
                assert r.status_code == 403, (r.status_code, r.text[:300])
                assert "not yours" in r.text
                _no_dashboard(r)
                r = await asyncio.to_thread(_get, requests, url, headers={
                    "Authorization": f"token {bob_token}", "Accept": "application/json"})
                assert r.status_code == 403 and "not yours" in r.json()["message"]
            # ... and no WebSocket either, anonymous or as bob
            bob_cookies = "; ".join(f"{c.name}={c.value}" for c in bob.session.cookies)
            for cookie in ("", bob_cookies):
                with pytest.raises(Exception, match="403"):
                    await _bokeh_ack(ws_url, cookie, hub.url, m.group(1))

            # (d) an unknown cluster: 404
            r = await asyncio.to_thread(_get, alice.session, f"{base}/{'0' * 32}/status")
            assert r.status_code == 404, r.status_code
            _no_dashboard(r)
        finally:
            await asyncio.gather(cardio.shutdown(), air.shutdown())
    refused = [r for r in audit.records(event="dask.dashboard") if r.seq not in seen]
    assert {(r.actor, r.details["reason"]) for r in refused} == {
        ("bob", "not-owner"), ("alice", "unknown-cluster")}
    assert all(r.outcome == "denied" for r in refused)
