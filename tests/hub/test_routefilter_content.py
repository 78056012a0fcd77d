"""The route filter alone against the canary: the content rule on the host.

The upstream is a workspace server with no guard at all (what a researcher
who killed and replaced the guarded server runs): it answers the contents,
settings and layout APIs exactly as an unguarded Jupyter server would, from
the canary files (``tests/support/canary.py``). Every route that reads files
is tried through the filter: no canary byte comes out — raw, base64 or hex —
and every refusal is audited.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

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
    sign_route,
)
from tests.support import canary

KEY = derive_key("proxy-token-for-tests")
ROUTESPEC = "/user/alice/cardio-los/"
HOME = "home/alice"
SETTINGS = ".jupyter/lab/user-settings/"
LAYOUTS = ".jupyter/lab/workspaces/"


class UnguardedServer:
    """Answers like a Jupyter server without any guard, from ``files`` (home-relative)."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rel = request.path[len(ROUTESPEC):]
        q = {k: v[-1] for k, v in parse_qs(request.query_string).items()}
        if rel.startswith("api/contents/"):
            return self.contents(rel[len("api/contents/"):], q)
        if rel.startswith("lab/api/settings"):
            return self.settings(rel[len("lab/api/settings"):].strip("/"))
        if rel.startswith("lab/api/workspaces"):
            return self.layouts(rel[len("lab/api/workspaces"):].strip("/"))
        if rel.startswith("kernelspecs/canary/"):
            return web.Response(body=self.files[".local/share/jupyter/kernels/canary/"
                                                + rel.rsplit("/", 1)[1]])
        return web.json_response({"ok": True})

    def contents(self, path: str, q: dict) -> web.Response:
        if path.endswith("/checkpoints"):
            return web.json_response([{"id": "c", "last_modified": "x"}])
        rel = path[len(HOME) + 1:] if path.startswith(HOME + "/") else path
        if rel not in self.files:
            prefix = rel.rstrip("/") + "/"
            names = sorted({k[len(prefix):].split("/")[0] for k in self.files
                            if k.startswith(prefix)})
            if not names:
                return web.json_response({"message": "No such file"}, status=404)
            return web.json_response({"type": "directory", "name": rel, "format": "json",
                                      "content": [{"name": n, "content": None}
                                                  for n in names]})
        data = self.files[rel]
        model = {"name": rel.rsplit("/", 1)[-1], "path": path, "type": "file"}
        if q.get("content") == "0":
            return web.json_response({**model, "content": None, "format": None})
        if q.get("type") == "notebook":
            try:
                return web.json_response({**model, "type": "notebook", "format": "json",
                                          "content": json.loads(data)})
            except ValueError:
                pass
        try:
            if q.get("format") == "base64":
                raise UnicodeDecodeError("x", b"", 0, 1, "asked")
            return web.json_response({**model, "format": "text", "content": data.decode()})
        except UnicodeDecodeError:
            return web.json_response({**model, "format": "base64",
                                      "content": base64.b64encode(data).decode()})

    def settings(self, plugin: str) -> web.Response:
        def item(key: str) -> dict:
            raw = self.files[key].decode()
            pid = key[len(SETTINGS):].replace(".jupyterlab-settings", "")
            pid = pid.rsplit("/", 1)[0] + ":" + pid.rsplit("/", 1)[1].split(".")[0]
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = {}
            return {"id": pid, "raw": raw, "settings": parsed, "schema": {}}

        keys = [k for k in self.files if k.startswith(SETTINGS)]
        if plugin:
            for k in keys:
                if item(k)["id"] == plugin:
                    return web.json_response(item(k))
            return web.json_response({"message": "no plugin"}, status=404)
        return web.json_response({"settings": [item(k) for k in keys]})

    def layouts(self, name: str) -> web.Response:
        docs = {json.loads(v)["metadata"]["id"]: json.loads(v)
                for k, v in self.files.items() if k.startswith(LAYOUTS)}
        if name:
            return web.json_response(docs.get(name, {"data": {}, "metadata": {"id": name}}))
        return web.json_response({"workspaces": {"ids": sorted(docs),
                                                 "values": list(docs.values())}})


@pytest.fixture(scope="module")
def files():
    return canary.canary_files()


@pytest.fixture
async def through_filter(tmp_path, files):
    runners = []
    up_port, f_port = free_port(), free_port()
    for app, port in ((UnguardedServer(files).app(), up_port), (None, f_port)):
        if app is None:
            audit = AuditLog(f"sqlite:///{tmp_path}/audit.sqlite")
            rf = RouteFilter(KEY, load_allow_list(), Auditor(audit, burst=10_000),
                             load_answer_judge())
            app = rf.app()
        r = web.AppRunner(app)
        await r.setup()
        await web.TCPSite(r, "127.0.0.1", port).start()
        runners.append(r)
    segment = sign_route(KEY, target=f"http://127.0.0.1:{up_port}", routespec=ROUTESPEC,
                         user="alice", server="cardio-los")
    try:
        yield f"http://127.0.0.1:{f_port}/{segment}{ROUTESPEC}", audit, \
            f"http://127.0.0.1:{up_port}{ROUTESPEC}"
    finally:
        for r in reversed(runners):
            await r.cleanup()


async def _get(session, url):
    async with session.get(url, allow_redirects=False) as r:
        return r.status, await r.read()


async def test_no_canary_byte_passes_the_filter_alone(through_filter, files):
    base, audit, direct = through_filter
    needles = canary.needles(files)
    leaked, answered, control = [], {}, 0
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        for _method, path in canary.probes(HOME, files):
            status, body = await _get(s, base + path)
            answered[path] = status
            found = canary.leaks(body, needles)
            if found:
                leaked.append((path, status, found[:3]))
        # control: the same server, without the filter, hands the canary out
        for path in (f"api/contents/{HOME}/canary/known/canary.csv",
                     f"api/contents/{HOME}/canary/parquet-as/notes.ipynb",
                     "lab/api/settings/@jupyterlab/apputils-extension:themes",
                     "lab/api/workspaces/default"):
            status, body = await _get(s, direct + path)
            control += bool(canary.leaks(body, needles))
    assert control == 4, "the unguarded server does not hand the canary out: no proof"
    assert not leaked, leaked
    # the routes answered; the refusals are the content rule's, and audited
    assert answered[f"api/contents/{HOME}/canary/known"] == 200
    refused = [p for p, st in answered.items() if st == 403]
    assert len(refused) > 100
    reasons = {r.details["reason"] for r in audit.records(event=AUDIT_EVENT)}
    assert any(r.startswith("content:") for r in reasons), reasons


async def test_normal_files_still_open_through_the_filter(through_filter):
    """Code, Markdown and a real notebook pass the content rule unchanged."""
    base, _, _ = through_filter
    async with aiohttp.ClientSession() as s:
        status, body = await _get(s, base + f"api/contents/{HOME}/canary")
        assert status == 200 and json.loads(body)["type"] == "directory"
