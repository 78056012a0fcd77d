"""The host-side route filter: a second wall in front of every workspace server.

The workspace server runs inside the sandbox, as the researcher's uid, next
to their kernels: whatever guard it carries, the researcher may kill it and
start a server of their own on the same port. This filter runs on the host,
as the hub's user, where no researcher process reaches it. The proxy
(configurable-http-proxy) sends each workspace route here instead of to the
sandbox; the filter answers ``403`` to every request whose route is not on
the workspace's allow-list (:mod:`ecluse_workspace.routes`, the same table
the in-server guard enforces) and forwards the others — HTTP and WebSocket —
to the sandbox. Answers of the routes that read files (``reads_files``) are
judged whole by the workspace's content rule (``judge_response``, the same
code as the in-server guard) before any byte leaves the host.

A proxy target names its sandbox in its first path segment, signed with a key
derived from the proxy's token (:func:`sign_route`): the filter forwards only
to targets the hub registered, so it is never an open relay, even for a
local process that connects to it directly.

Each refusal is logged and recorded in the audit log as
``workspace.route_denied`` (at most :data:`AUDIT_BURST` records per workspace
and minute; the next record counts the ones it left out).

Run by :class:`ecluse.hub.proxy.EcluseProxy`: ``python -m ecluse.hub.routefilter
--ip 127.0.0.1 --port N``, the key in ``$ECLUSE_ROUTE_FILTER_KEY``, the
deployment in ``$ECLUSE_CONFIG`` / ``$ECLUSE_STATE_DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import ClientError, ClientSession, ClientTimeout, WSMsgType, web

from ..auditevents import AuditEvent
from ..config import load_settings
from ..sandbox.remote import audit_for
from .hubconfig import ENV_CONFIG, ENV_STATE_DIR

log = logging.getLogger("ecluse.hub.routefilter")

ENV_KEY = "ECLUSE_ROUTE_FILTER_KEY"
ENV_ROUTES = "ECLUSE_WORKSPACE_ROUTES"
AUDIT_EVENT = AuditEvent.WORKSPACE_ROUTE_DENIED
#: refusals recorded per workspace and minute; the rest are counted in the next record
AUDIT_BURST = 30
HEALTH_PATH = "/_ecluse_route_filter/health"
#: the most a judged answer may hold (the largest cap of the content rule is 32 MiB)
MAX_JUDGED_BYTES = 48 * 1024 * 1024
#: error and redirect answers of routes that read files: a message, no more
MAX_ERROR_BYTES = 4096
#: headers kept on a judged answer (its body may have changed)
_JUDGED_HEADERS = frozenset({"content-type", "location", "cache-control", "set-cookie",
                             "x-content-type-options", "content-security-policy",
                             "x-frame-options", "www-authenticate", "date", "server"})
_ENCODED_SEPARATOR = re.compile(r"%(?:2[fF]|5[cC])")

#: headers that belong to one connection, never forwarded (RFC 9110 7.6.1)
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "proxy-connection",
})
_WS_HANDSHAKE = frozenset({
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol", "sec-websocket-accept",
})


def derive_key(proxy_token: str) -> bytes:
    """The signing key of proxy targets, from the proxy's auth token."""
    return hmac.new(proxy_token.encode(), b"ecluse route filter v1", hashlib.sha256).digest()


def sign_route(key: bytes, *, target: str, routespec: str, user: str, server: str) -> str:
    """The first path segment of a filtered proxy target: what to forward, signed."""
    blob = json.dumps({"t": target.rstrip("/"), "r": routespec, "u": user, "s": server},
                      sort_keys=True, separators=(",", ":")).encode()
    body = base64.urlsafe_b64encode(blob).decode().rstrip("=")
    mac = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


@dataclass(frozen=True)
class FilteredRoute:
    target: str
    routespec: str
    user: str
    server: str


def open_route(key: bytes, segment: str) -> FilteredRoute | None:
    """The route a signed segment names, or None when it is not ours."""
    body, _, mac = segment.partition(".")
    good = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    if not mac or not hmac.compare_digest(mac, good):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return FilteredRoute(data["t"], data["r"], data["u"], data["s"])
    except (ValueError, KeyError, TypeError):
        return None


class Refusal(Exception):
    def __init__(self, status: int, message: str, reason: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def relative_path(route: FilteredRoute, raw_path: str) -> str:
    """The request path relative to the workspace's base URL, as the allow-list wants it:
    no leading slash, percent-decoded once.

    ``raw_path`` is the path as received. A percent-encoded slash or backslash
    is kept encoded (the allow-list refuses it), so that the filter and the
    workspace server's router never disagree on which route a path names.
    """
    prefix = route.routespec if route.routespec.endswith("/") else route.routespec + "/"
    if raw_path == prefix.rstrip("/"):
        return ""
    if not raw_path.startswith(prefix):
        raise Refusal(403, "This address is not part of the workspace.", "outside-route")
    rel = raw_path[len(prefix):]
    if _ENCODED_SEPARATOR.search(rel):
        return rel
    return unquote(rel, errors="strict")


def load_allow_list() -> tuple[Callable[[str, str], Any], Callable[[str, str], str]]:
    """The workspace route allow-list (``match``, ``refusal``): the file named by
    ``$ECLUSE_WORKSPACE_ROUTES`` (a hub image without the workspace extension), or
    the installed ``ecluse_workspace.routes``. The filter does not start without it."""
    path = os.environ.get(ENV_ROUTES)
    try:
        if path:
            import importlib.util

            spec = importlib.util.spec_from_file_location("ecluse_workspace_routes", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"{path} is not a Python file")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            import ecluse_workspace.routes as module
        return module.match, module.refusal
    except (ImportError, OSError, AttributeError) as e:
        raise SystemExit(
            "ecluse route filter: the workspace route allow-list (ecluse_workspace.routes, "
            f"or ${ENV_ROUTES}) cannot be loaded ({e}); install the ecluse-workspace "
            "package in the hub's environment. Without it no workspace request is forwarded."
        ) from e


def load_answer_judge() -> Callable[[str, bytes, str], bytes | None]:
    """The workspace's content rule for answers of routes that read files
    (``ecluse_workspace.guard.judge_response``), as ``judge(route, body, path)``.

    Returns new bytes when the answer may go changed, ``None`` when it may go as
    it is, or raises :class:`AnswerRefused`. The filter does not start without it.
    """
    try:
        from ecluse_workspace.content import ContentRefused, Limits
        try:
            from ecluse_workspace.content import judge_response  # type: ignore[attr-defined]
        except ImportError:
            from ecluse_workspace.guard import judge_response
    except ImportError as e:
        raise SystemExit(
            "ecluse route filter: the workspace content rule (ecluse_workspace.content / "
            f"judge_response) cannot be loaded ({e}); install the ecluse-workspace package "
            "in the hub's environment. Without it no workspace request is forwarded."
        ) from e
    limits = Limits()

    def judge(route: str, body: bytes, path: str) -> bytes | None:
        try:
            return judge_response(route, body, True, limits, path, total=len(body))
        except ContentRefused as e:
            raise AnswerRefused(e.code, e.message) from None

    return judge


class AnswerRefused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Auditor:
    """Records refusals, at most AUDIT_BURST per workspace and minute."""

    def __init__(self, audit: Any, burst: int = AUDIT_BURST, window: float = 60.0):
        self.audit = audit
        self.burst = burst
        self.window = window
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}

    def admit(self, key: tuple[str, str]) -> tuple[bool, int]:
        """(record this one?, how many were left out before it)."""
        now = time.monotonic()
        start, count, dropped = self._seen.get(key, (now, 0, 0))
        if now - start >= self.window:
            start, count = now, 0
        if count >= self.burst:
            self._seen[key] = (start, count, dropped + 1)
            return False, 0
        self._seen[key] = (start, count + 1, 0)
        return True, dropped

    async def record(self, route: FilteredRoute, **details: Any) -> None:
        ok, dropped = self.admit((route.user, route.server))
        if not ok:
            return
        if dropped:
            details["not_recorded_before"] = dropped
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.audit.record(
            AUDIT_EVENT, actor=route.user, project=route.server or None, outcome="denied",
            **details))


class RouteFilter:
    """The aiohttp application: check, refuse or forward."""

    def __init__(self, key: bytes, allow_list: tuple[Callable[[str, str], Any],
                                                     Callable[[str, str], str]],
                 auditor: Auditor | None,
                 judge: Callable[[str, bytes, str], bytes | None] | None = None,
                 *, connect_timeout: float = 10.0):
        self.key = key
        self.match, self.why_refused = allow_list
        self.judge = judge
        self.auditor = auditor
        self.timeout = ClientTimeout(total=None, sock_connect=connect_timeout)
        self.session: ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=0)
        app.router.add_get(HEALTH_PATH, self.health)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _app: web.Application) -> None:
        self.session = ClientSession(auto_decompress=False, timeout=self.timeout,
                                     cookie_jar=_NoCookies())

    async def _close(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    # ----------------------------------------------------------- deciding

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        segment, _, rest = raw.lstrip("/").partition("/")
        route = open_route(self.key, segment)
        if route is None:
            log.warning("request without a valid route signature from %s refused",
                        request.remote)
            return self._refusal_response(request, Refusal(
                404, "Unknown route.", "unsigned"))
        path = "/" + rest
        try:
            rel = relative_path(route, path)
            allowed = self.match(request.method, rel)
            if allowed is None:
                why = self.why_refused(request.method, rel)
                raise Refusal(403, f"Refused by the workspace's route allow-list ({why}). "
                              "Files leave a workspace only through the airlock "
                              "(\"Request export…\").", why)
        except UnicodeDecodeError:
            refusal = Refusal(403, "The path is not valid UTF-8.", "bad-encoding")
            await self._refused(request, route, path, refusal)
            return self._refusal_response(request, refusal)
        except Refusal as refusal:
            await self._refused(request, route, path, refusal)
            return self._refusal_response(request, refusal)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.forward_websocket(request, route, path)
        if allowed.reads_files:
            return await self.forward_judged(request, route, path, allowed.name)
        return await self.forward(request, route, path)

    async def _refused(self, request: web.Request, route: FilteredRoute, path: str,
                       refusal: Refusal) -> None:
        remote = request.headers.get("X-Forwarded-For", request.remote or "")
        log.warning("refused %s %s for %s/%s from %s: %s", request.method, path, route.user,
                    route.server, remote, refusal.reason)
        if self.auditor is None:
            return
        try:
            await self.auditor.record(route, method=request.method, path=path[:1000],
                                      reason=refusal.reason, status=refusal.status,
                                      remote_ip=remote.split(",")[0].strip())
        except Exception:  # noqa: BLE001 - the refusal stands; the log keeps the error
            log.exception("audit record of a refused workspace request failed")

    @staticmethod
    def _refusal_response(request: web.Request, refusal: Refusal) -> web.Response:
        if "text/html" in request.headers.get("Accept", ""):
            body = (f"<!doctype html><title>Refused</title><h1>{refusal.status} refused</h1>"
                    f"<p>{html.escape(refusal.message)}</p>")
            return web.Response(status=refusal.status, text=body, content_type="text/html")
        return web.json_response({"message": refusal.message, "reason": refusal.reason},
                                 status=refusal.status)

    # ---------------------------------------------------------- forwarding

    @staticmethod
    def _headers(request: web.Request, drop: frozenset[str] = frozenset()) -> dict[str, str]:
        connection = {h.strip().lower() for h in request.headers.get("Connection", "").split(",")}
        return {k: v for k, v in request.headers.items()
                if k.lower() not in HOP_BY_HOP and k.lower() not in connection
                and k.lower() not in drop}

    def _url(self, route: FilteredRoute, path: str, request: web.Request) -> str:
        query = request.rel_url.raw_query_string
        return route.target + path + (f"?{query}" if query else "")

    async def forward(self, request: web.Request, route: FilteredRoute,
                      path: str) -> web.StreamResponse:
        assert self.session is not None
        headers = self._headers(request)
        body = request.content if request.body_exists else None
        try:
            upstream = await self.session.request(
                request.method, self._url(route, path, request), headers=headers, data=body,
                allow_redirects=False, skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        except (TimeoutError, OSError, ClientError) as e:
            log.warning("workspace %s/%s unreachable: %s", route.user, route.server, e)
            return web.json_response({"message": "The workspace is not answering."},
                                     status=503)
        async with upstream:
            connection = {h.strip().lower()
                          for h in upstream.headers.get("Connection", "").split(",")}
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_BY_HOP and k.lower() not in connection:
                    response.headers.add(k, v)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def forward_judged(self, request: web.Request, route: FilteredRoute, path: str,
                             route_name: str) -> web.StreamResponse:
        """Forward, then let the content rule decide on the whole answer before any of
        it leaves the host (routes that may return bytes of user-writable files)."""
        assert self.session is not None
        headers = self._headers(request)
        headers["Accept-Encoding"] = "identity"  # the rule reads the bytes as they are
        body = request.content if request.body_exists else None
        try:
            upstream = await self.session.request(
                request.method, self._url(route, path, request), headers=headers, data=body,
                allow_redirects=False, skip_auto_headers=("User-Agent",),
            )
        except (TimeoutError, OSError, ClientError) as e:
            log.warning("workspace %s/%s unreachable: %s", route.user, route.server, e)
            return web.json_response({"message": "The workspace is not answering."},
                                     status=503)
        async with upstream:
            try:
                answer = await self._judged_answer(upstream, route_name, path)
            except AnswerRefused as e:
                refusal = Refusal(403, f"{e.message} Files leave a workspace only through "
                                  "the airlock (\"Request export…\").", f"content:{e.code}")
                await self._refused(request, route, path, refusal)
                return self._refusal_response(request, refusal)
        response = web.Response(status=upstream.status, reason=upstream.reason, body=answer)
        for k, v in upstream.headers.items():
            if k.lower() in _JUDGED_HEADERS:
                response.headers[k] = v
        return response

    async def _judged_answer(self, upstream: Any, route_name: str, path: str) -> bytes:
        encoding = upstream.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise AnswerRefused("encoded", "The workspace sent a compressed answer.")
        chunks, size = [], 0
        async for chunk in upstream.content.iter_any():
            size += len(chunk)
            if size > MAX_JUDGED_BYTES:
                raise AnswerRefused("too_large", "The answer is too large to be sent to the "
                                    "browser.")
            chunks.append(chunk)
        body = b"".join(chunks)
        if not body or upstream.status in (204, 304):
            return body
        if upstream.status in (200, 201):
            new = await asyncio.get_running_loop().run_in_executor(
                None, self.judge or _no_judge, route_name, body, path)
            return body if new is None else new
        if upstream.status == 206:
            raise AnswerRefused("partial", "Partial answers are not served.")
        # errors and redirects: a short message at most, never file bytes
        if len(body) > MAX_ERROR_BYTES:
            raise AnswerRefused("too_large", "The workspace's error answer was too long.")
        return body

    async def forward_websocket(self, request: web.Request, route: FilteredRoute,
                                path: str) -> web.StreamResponse:
        assert self.session is not None
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "")
                     .split(",") if p.strip()]
        headers = self._headers(request, drop=_WS_HANDSHAKE)
        url = "ws" + self._url(route, path, request)[len("http"):]
        try:
            upstream = await self.session.ws_connect(url, headers=headers, protocols=protocols,
                                                     max_msg_size=0, autoping=True)
        except Exception as e:  # noqa: BLE001 - the handshake failure goes back as a status
            status = getattr(e, "status", 502)
            log.warning("websocket to %s/%s failed: %s", route.user, route.server, e)
            return web.json_response({"message": "The workspace refused the connection."},
                                     status=status if 400 <= status < 600 else 502)
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (), max_msg_size=0,
            autoping=True)
        await client.prepare(request)

        async def pump(src: Any, dst: Any) -> None:
            async for msg in src:
                if msg.type == WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                else:
                    break

        tasks = [asyncio.ensure_future(pump(client, upstream)),
                 asyncio.ensure_future(pump(upstream, client))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(Exception):
                await upstream.close()
            with contextlib.suppress(Exception):
                await client.close()
        return client


def _no_judge(route: str, body: bytes, path: str) -> bytes | None:
    raise AnswerRefused("no_rule", "No content rule is loaded.")


class _NoCookies:
    """A cookie jar that keeps nothing: the filter serves many users."""

    def __new__(cls):
        from aiohttp import DummyCookieJar

        return DummyCookieJar()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ecluse.hub.routefilter",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="Exit when this process (the hub) is no longer the parent: the "
                        "filter never outlives the hub that started it.")
    parser.add_argument("--no-audit", action="store_true",
                        help="Do not record refusals in the audit log (tests of the filter "
                        "alone); refusals are still logged.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="[%(levelname).1s %(asctime)s ecluse.hub.routefilter] %(message)s")
    key_hex = os.environ.pop(ENV_KEY, "")
    if not key_hex:
        raise SystemExit(f"ecluse route filter: ${ENV_KEY} is not set")
    allow_list = load_allow_list()
    judge = load_answer_judge()
    auditor = None
    if not args.no_audit:
        settings = load_settings(os.environ.get(ENV_CONFIG) or None,
                                 state_dir=os.environ.get(ENV_STATE_DIR) or None)
        auditor = Auditor(audit_for(settings, "hub"))
    rf = RouteFilter(bytes.fromhex(key_hex), allow_list, auditor, judge)
    app = rf.app()
    if args.parent_pid:
        app.on_startup.append(lambda _app: _watch_parent(args.parent_pid))
    log.info("filtering workspace routes on %s:%s", args.ip, args.port)
    web.run_app(app, host=args.ip, port=args.port, print=None, access_log=None,
                handle_signals=True)


async def _watch_parent(parent_pid: int, interval: float = 1.0) -> None:
    async def watch() -> None:
        while os.getppid() == parent_pid:
            await asyncio.sleep(interval)
        log.warning("the hub (pid %s) is gone: the route filter stops", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    _watchers.append(asyncio.get_running_loop().create_task(watch()))


_watchers: list[asyncio.Task] = []


if __name__ == "__main__":
    main()
