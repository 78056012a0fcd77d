"""The host-side route filter in front of a real upstream server (aiohttp, loopback).

The filter runs as in production (:class:`ecluse.hub.routefilter.RouteFilter` on
a real socket, a real audit log on SQLite); the upstream stands for a
workspace server that answers everything — the worst case, a server with no
guard of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json

import aiohttp
import pytest
from aiohttp import web

from ecluse.audit import AuditLog
from ecluse.dev.ldapserver import free_port
from ecluse.hub.routefilter import (
    AUDIT_EVENT,
    Auditor,
    RouteFilter,
    derive_key,
    load_allow_list,
    load_answer_judge,
    open_route,
    sign_route,
)

KEY = derive_key("proxy-token-for-tests")
ROUTESPEC = "/user/alice/cardio-los/"


class AnswerEverything:
    """An upstream that answers every path (and websockets), recording what it saw."""

    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.rel_url.raw_path_qs))
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse(protocols=("v1.kernel.websocket.jupyter.org",))
            await ws.prepare(request)
            async for msg in ws:
                await ws.send_str("echo:" + msg.data)
            return ws
        if request.path.endswith("/gz"):
            return web.Response(body=gzip.compress(b"ROW-LEVEL" * 10),
                                headers={"Content-Encoding": "gzip",
                                         "Content-Type": "application/octet-stream"})
        body = await request.read()
        return web.json_response({"path": request.rel_url.raw_path_qs,
                                  "host": request.headers.get("Host"),
                                  "cookie": request.headers.get("Cookie"),
                                  "body": body.decode(errors="replace"),
                                  "content": "ROW-LEVEL canary 1957-03-02"})


@pytest.fixture
async def stack(tmp_path):
    """(filter base URL, upstream, audit log, signed prefix)."""
    upstream = AnswerEverything()
    runners = []
    up_port, f_port = free_port(), free_port()
    r = web.AppRunner(upstream.app())
    await r.setup()
    await web.TCPSite(r, "127.0.0.1", up_port).start()
    runners.append(r)
    audit = AuditLog(f"sqlite:///{tmp_path}/audit.sqlite")
    rf = RouteFilter(KEY, load_allow_list(), Auditor(audit, burst=5), load_answer_judge())
    r = web.AppRunner(rf.app())
    await r.setup()
    await web.TCPSite(r, "127.0.0.1", f_port).start()
    runners.append(r)
    segment = sign_route(KEY, target=f"http://127.0.0.1:{up_port}", routespec=ROUTESPEC,
                         user="alice", server="cardio-los")
    base = f"http://127.0.0.1:{f_port}/{segment}{ROUTESPEC}"
    try:
        yield base, upstream, audit, f"http://127.0.0.1:{f_port}/{segment}"
    finally:
        for r in reversed(runners):
            await r.cleanup()


async def get(url: str, method: str = "GET", **kw) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.request(method, url, allow_redirects=False, **kw) as r:
            return r.status, (await r.read()).decode(errors="replace"), dict(r.headers)


async def test_allowed_routes_are_forwarded_as_they_are(stack):
    base, upstream, audit, _ = stack
    status, body, _ = await get(base + "api/contents/notes.ipynb?type=notebook&content=1",
                                headers={"Cookie": "c=1", "Host": "hub.example:8000"})
    assert status == 200, body
    data = json.loads(body)
    assert data["path"] == ROUTESPEC + "api/contents/notes.ipynb?type=notebook&content=1"
    assert data["host"] == "hub.example:8000" and data["cookie"] == "c=1"
    status, body, _ = await get(base + "api/contents/a.py", "PUT", data=b'{"content": "x"}')
    assert status == 200 and json.loads(body)["body"] == '{"content": "x"}'
    # a compressed answer of a route that reads no file is passed on untouched...
    status, body, headers = await get(base + "static/gz")
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    # ... one of a route that reads files is refused (the content rule reads plain bytes)
    status, body, headers = await get(base + "api/contents/gz")
    assert status == 403 and "ROW-LEVEL" not in body
    assert [r.details["reason"] for r in audit.records(event=AUDIT_EVENT)] == [
        "content:encoded"]


@pytest.mark.parametrize("method,path", [
    ("GET", "files/data/stays/stays.csv"),
    ("GET", "view/stays.csv"),
    ("GET", "nbconvert/html/notes.ipynb?download=true"),
    ("GET", "dask/dashboard-check/http%3A%2F%2F127.0.0.1%3A8000%2Fstays.json"),
    ("GET", "dask/dashboard/127.0.0.1:8787/individual-plots.json"),
    ("GET", "proxy/8000/stays.csv"),
    ("GET", "some-new-extension/download/stays.csv"),
    ("GET", "api/contents/../../files/stays.csv"),
    ("GET", "api/contents/%2e%2e/%2e%2e/files/stays.csv"),
    ("GET", "api/contents/a%2F..%2F..%2Ffiles/x"),
    ("GET", "lab/api/extensions"),
    ("POST", "api/kernelspecs"),
    ("OPTIONS", "api/contents/"),
    ("TRACE", "api"),
])
async def test_routes_off_the_allow_list_never_reach_the_server(stack, method, path):
    base, upstream, audit, _ = stack
    status, body, _ = await get(base + path, method)
    assert status == 403, body
    assert "ROW-LEVEL" not in body
    assert upstream.seen == [], "the refused request reached the workspace server"
    assert "allow-list" in body or "not part of the workspace" in body
    rec = audit.records(event=AUDIT_EVENT)[-1]
    assert (rec.actor, rec.project, rec.outcome) == ("alice", "cardio-los", "denied")
    assert rec.details["method"] == method and rec.details["status"] == 403


async def test_browsers_get_a_page_that_says_why(stack):
    base, _, _, _ = stack
    status, body, headers = await get(base + "files/stays.csv",
                                      headers={"Accept": "text/html"})
    assert status == 403 and headers["Content-Type"].startswith("text/html")
    assert "raw file download" in body and "airlock" in body


async def test_only_targets_the_hub_signed_are_forwarded(stack):
    base, upstream, audit, signed = stack
    seg = signed.rsplit("/", 1)[1]
    forged = sign_route(b"x" * 32, target="http://127.0.0.1:1", routespec=ROUTESPEC,
                        user="alice", server="cardio-los")
    host = signed.rsplit("/", 1)[0]
    for bad in (forged, seg[:-1] + ("0" if seg[-1] != "0" else "1"), "nothing", ""):
        status, _, _ = await get(f"{host}/{bad}{ROUTESPEC}api/contents/")
        assert status == 404
    # a signed route serves its own workspace's paths only
    status, _, _ = await get(f"{signed}/user/bob/cardio-los/api/contents/")
    assert status == 403
    assert upstream.seen == []
    assert open_route(KEY, seg).user == "alice"


async def test_websockets_pass_with_their_subprotocol(stack):
    base, upstream, _, _ = stack
    url = base.replace("http://", "ws://") + "api/kernels/" + "0" * 8 + "-0000-0000-0000-" + \
        "0" * 12 + "/channels"
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url, protocols=("v1.kernel.websocket.jupyter.org",)) as ws:
            assert ws.protocol == "v1.kernel.websocket.jupyter.org"
            await ws.send_str("hello")
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.data == "echo:hello"
    # and a websocket on a route off the list is refused before the handshake
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        async with aiohttp.ClientSession() as s:
            await s.ws_connect(base.replace("http://", "ws://") + "dask/dashboard/x/status/ws")
    assert e.value.status == 403
    assert [p for _, p in upstream.seen if "dashboard" in p] == []


async def test_refusals_are_audited_within_a_bound(stack):
    """A researcher hammering refused routes cannot flood the audit log: 5 records a
    minute here (30 in production), the next one says how many were left out."""
    base, _, audit, _ = stack
    for i in range(12):
        status, _, _ = await get(base + f"files/{i}.csv")
        assert status == 403
    recs = audit.records(event=AUDIT_EVENT)
    assert len(recs) == 5
    auditor = Auditor(audit, burst=1, window=0.0)
    assert auditor.admit(("a", "p")) == (True, 0)


def test_the_proxy_sends_user_servers_through_the_filter_and_shows_the_hub_their_address():
    from ecluse.hub.proxy import TARGET_KEY, EcluseProxy

    proxy = EcluseProxy(auth_token="proxy-token-for-tests", route_filter_port=9999)
    data = {"user": "alice", "server_name": "cardio-los"}
    target = proxy.filtered_target(ROUTESPEC, "http://10.0.0.2:8888", data)
    assert target.startswith("http://127.0.0.1:9999/")
    route = open_route(KEY, target.rsplit("/", 1)[1])
    assert (route.target, route.user, route.server) == ("http://10.0.0.2:8888", "alice",
                                                         "cardio-los")
    chp = {"target": target, "jupyterhub": True, TARGET_KEY: "http://10.0.0.2:8888", **data}
    assert proxy._reformat_routespec(ROUTESPEC, dict(chp))["target"] == "http://10.0.0.2:8888"
    # a route whose proxy target is not the filter's (changed behind the hub's back) is
    # shown as it is, so the hub's route check puts the filter back
    tampered = {**chp, "target": "http://10.0.0.2:8888"}
    assert proxy._reformat_routespec(ROUTESPEC, tampered)["target"] == "http://10.0.0.2:8888"
    assert proxy._reformat_routespec(ROUTESPEC, {**chp, TARGET_KEY: "http://10.9.9.9:1"})[
        "target"] == target


def test_hubconfig_turns_the_filter_on_for_workspaces(make_config):
    from traitlets.config import Config

    from ecluse.config import load_settings
    from ecluse.hub.hubconfig import configure

    for spawner, expected in (("ecluse", "ecluse.hub.proxy.EcluseProxy"), ("simple", None)):
        # docker: no host network to set up for a configuration test
        settings = load_settings(make_config(**{"hub.spawner": spawner,
                                                "sandbox.backend": "docker",
                                                "hub.route_filter_port": 18002}))
        c = Config()
        configure(c, settings)
        if expected:
            assert c.JupyterHub.proxy_class == expected
            assert c.EcluseProxy.route_filter_port == 18002
            assert c.EcluseProxy.route_filter_pid_file.endswith("route-filter.pid")
        else:
            assert "proxy_class" not in c.JupyterHub


def test_the_filter_never_outlives_the_hub_that_started_it(tmp_path):
    """A hub that dies without cleaning up (SIGKILL, a failed start) takes its filter
    with it: the filter watches its parent."""
    import os
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    pidfile = tmp_path / "filter.pid"
    # the "hub": a shell that starts the filter as the proxy does, then waits
    hub = subprocess.Popen(
        ["/bin/sh", "-c", f'"$0" -m ecluse.hub.routefilter --ip 127.0.0.1 --port {port} '
         f'--parent-pid $$ --no-audit & echo $! > {pidfile}; wait', sys.executable],
        env={**os.environ, "ECLUSE_ROUTE_FILTER_KEY": KEY.hex()}, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                import urllib.request

                from ecluse.hub.routefilter import HEALTH_PATH

                with urllib.request.urlopen(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the filter did not start")
        filter_pid = int(pidfile.read_text())
        hub.send_signal(signal.SIGKILL)
        hub.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and os.path.exists(f"/proc/{filter_pid}"):
            with open(f"/proc/{filter_pid}/stat") as fh:
                if fh.read().split(")")[-1].split()[0] == "Z":
                    break
            time.sleep(0.2)
        assert not os.path.exists(f"/proc/{filter_pid}") or open(
            f"/proc/{filter_pid}/stat").read().split(")")[-1].split()[0] == "Z", \
            "the filter outlived its hub"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(hub.pid, signal.SIGKILL)
