"""The default-deny rule in a bare tornado application: whatever the handler's decorator.

An extension may register a handler with no authorization at all, or under
a path the allow-list allows: the guard refuses both before the handler
runs. (On a real workspace: ``test_guard.py::test_routes_outside_the_allow_list_are_refused``.)
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient

CALLED: list[str] = []


class OpenHandler(web.RequestHandler):
    """No decorator at all: it answers anyone."""

    def get(self, *args):
        CALLED.append(self.request.path)
        self.write("row-level data")


class ContentsLookalike(web.RequestHandler):
    def get(self, *args):
        CALLED.append(self.request.path)
        self.write({"content": "row-level data"})


async def _fetch(handlers, paths, guard=True):
    from ecluse_workspace.guard import install_route_guard

    app = web.Application(handlers, base_url="/user/a/p/")
    if guard:
        install_route_guard(app, logging.getLogger("test"))
    server = app.listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    try:
        client = AsyncHTTPClient()
        out = {}
        for p in paths:
            r = await client.fetch(f"http://127.0.0.1:{port}/user/a/p/{p}", raise_error=False)
            out[p] = (r.code, r.body)
        return out
    finally:
        server.stop()


HANDLERS = [
    (r"/user/a/p/dask/dashboard-check/(.*)", OpenHandler),
    (r"/user/a/p/newext/data", OpenHandler),
    (r"/user/a/p/api/contents/(.*)", ContentsLookalike),
    (r"/user/a/p/api/status", OpenHandler),
]
PATHS = ["dask/dashboard-check/http://127.0.0.1:9000/", "newext/data",
         "api/contents/project/x.csv", "api/status"]


def test_unlisted_routes_and_unlisted_handlers_never_run(workspace_extension):
    CALLED.clear()
    res = asyncio.run(_fetch(HANDLERS, PATHS))
    assert CALLED == []
    for p in PATHS:
        code, body = res[p]
        assert code == 403 and b"row-level" not in body, (p, code, body)
    body = json.loads(res["newext/data"][1])
    assert body["reason"] == "export-guard"
    assert "not one the Écluse workspace serves" in body["message"]


def test_without_the_guard_the_same_handlers_answer(workspace_extension):
    """Control: the handlers above do serve data when the guard is not installed."""
    CALLED.clear()
    res = asyncio.run(_fetch(HANDLERS, PATHS, guard=False))
    assert all(res[p][0] == 200 for p in PATHS) and len(CALLED) == len(PATHS)


@pytest.mark.parametrize("path", ["api/contents/../../etc/passwd",
                                  "api/contents/project%2F..%2Fsecret",
                                  "api/contents/%2e%2e/etc/passwd"])
def test_ambiguous_paths_are_refused(workspace_extension, path):
    CALLED.clear()
    res = asyncio.run(_fetch(HANDLERS, [path]))
    assert res[path][0] in (400, 403) and CALLED == []
