"""Authenticating front of the dask-gateway service's public route.

dask-gateway does not authenticate dashboard requests: its proxy serves
``/services/dask-gateway/clusters/<name>/…`` to anyone who knows the cluster
name. configurable-http-proxy routes the hub's public port to the service's
``url``, so the service's ``url`` is this front (loopback only), never the
gateway proxy. The front is a tornado app in the gateway's own process
(:func:`ecluse.dask.gateway.main` starts both on one event loop):

* ``/services/dask-gateway/oauth_callback`` — JupyterHub OAuth
  (``HubOAuthCallbackHandler``); the hub service spec carries the client id
  and redirect URI, and no scope beyond identifying the user.
* ``/services/dask-gateway/clusters/<name>/…`` (HTTP and WebSocket) —
  forwarded to the gateway proxy only when the request is signed in to
  JupyterHub (OAuth cookie, or a hub token in ``Authorization``) with
  ``access:services!service=dask-gateway`` **and** the user owns the cluster
  (dask-gateway's own rule: users see only their own clusters). Not signed
  in: a browser ``GET`` is redirected to the hub's sign-in, anything else gets
  403. Unknown cluster: 404; another user's cluster: 403; both audited
  (``dask.dashboard`` events, outcome ``denied``). Any error while finding
  the owner: 503, nothing forwarded (fail closed).
* everything else (the gateway REST API ``/api/…``): 403 with a message.
  Workspaces use the API on the sandbox host address
  (``DASK_GATEWAY__ADDRESS``, :func:`ecluse.dask.hub.gateway_client_env`),
  never through the hub's public port; outside the TRE it is of no use
  (schedulers are reachable on the sandbox host address only) and is one less
  surface.

The gateway proxy's HTTP listener (API and dashboards, unauthenticated) is on
loopback only. Sandboxes reach the API through the front's second listener,
on the sandbox host address (:func:`make_api_app`, :func:`serve_api`):

* ``<prefix>/api/…`` — forwarded as is (cookies and ``Authorization``
  included, ``Set-Cookie`` returned): the gateway authenticates it itself
  (users' hub tokens; a cluster's own token for its heartbeats, ``api_url``);
* ``<prefix>/clusters/…`` — 403 (*dashboards are shown through JupyterHub,
  to their cluster's owner only*), audited (``dask.dashboard``, reason
  ``sandbox-address``); anything else 404. Paths with dot segments or encoded
  dots, slashes or backslashes are refused (400) before forwarding, so that
  nothing under ``api/`` resolves to a dashboard in the proxy.

**How the owner is found.** :func:`backend_owner` reads the gateway
backend's in-memory cluster table (``DBBackendBase.db.get_cluster``), in the
same process. It is the record the gateway itself uses to answer and to
authorise its API (it is what decides that a user sees only their own
clusters), it is current the moment a cluster is created, and asking it
needs no credential and no network hop. The alternatives are worse: the
gateway's database is in-memory SQLite by default (another process cannot
read it), and its REST API has no administrator view (a user sees only their
own clusters), so asking it would need a privileged path added to the gateway.

Forwarded requests lose the hub's cookies and ``Authorization`` header (the
dashboard is the user's own process: it gets no hub credential) and
responses lose ``Set-Cookie`` (a dashboard cannot set cookies on the hub's
origin). WebSockets keep the default same-origin check (tornado
``check_origin``), so another site cannot open one with the user's cookie.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from jupyterhub.services.auth import (
    HubOAuth,
    HubOAuthCallbackHandler,
    HubOAuthenticated,
    UserNotAllowed,
)
from tornado import httpclient, web, websocket
from tornado.httpserver import HTTPServer

from ..auditevents import AuditEvent

log = logging.getLogger("ecluse.dask.front")

#: audit event of refused dashboard requests
AUDIT_EVENT = AuditEvent.DASK_DASHBOARD

#: headers never forwarded either way (hop-by-hop, hub credentials, framing)
REQUEST_DROP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                "te", "trailer", "transfer-encoding", "upgrade", "host", "cookie",
                "authorization", "content-length"}
RESPONSE_DROP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                 "te", "trailer", "transfer-encoding", "upgrade", "content-length",
                 "set-cookie"}
MAX_BODY = 256 * 1024 * 1024

API_REFUSED = ("The dask-gateway API is not served on the hub's public address. "
               "Use it from a workspace of your project: Gateway() needs no arguments there "
               "(its address is set in the environment).")
SIGN_IN = "Sign in to JupyterHub: a Dask dashboard is shown to its cluster's owner only."
DASHBOARD_REFUSED = ("Dask dashboards are not served on the sandbox host address. Open yours "
                     "through JupyterHub: /services/dask-gateway/clusters/<name>/status "
                     "(shown to the cluster's owner only).")
API_ONLY = "Only the dask-gateway API (<prefix>/api/…) is served on this address."


class DashboardDenied(Exception):
    """A dashboard request that must not be forwarded: ``status``, user-safe message,
    audit ``reason`` (None: not audited)."""

    def __init__(self, status: int, message: str, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


OwnerLookup = Callable[[str], "str | None"]


def backend_owner(backend: Any) -> OwnerLookup:
    """The owner of a cluster by name from a ``DBBackendBase`` (None: no such cluster)."""

    def owner(name: str) -> str | None:
        cluster = backend.db.get_cluster(name)
        if cluster is None:
            return None
        username = cluster.username
        if not isinstance(username, str) or not username:
            raise ValueError(f"cluster {name!r} has no owner")
        return username

    return owner


#: dask-gateway cluster names: uuid hex, or ``<namespace>.<hex>`` on Kubernetes
CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_ENCODED = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


def ambiguous_path(path: str) -> bool:
    """A path the gateway proxy might resolve elsewhere than it reads: dot segments,
    encoded dots, slashes, backslashes or NULs."""
    return bool(_ENCODED.search(path) or "\\" in path
                or any(seg in (".", "..") for seg in path.split("/")))


def check_path(path: str, cluster: str) -> None:
    """Raise :class:`DashboardDenied` (400) for a path the gateway proxy might resolve
    elsewhere than the cluster whose owner was checked: dot segments, encoded dots,
    slashes or backslashes, a malformed cluster name."""
    if not CLUSTER_NAME.fullmatch(cluster) or ambiguous_path(path):
        raise DashboardDenied(400, "Malformed dashboard path.", "bad-path")


def check_owner(user: str, cluster: str, owner_of: OwnerLookup,
                logger: logging.Logger = log) -> None:
    """Raise :class:`DashboardDenied` unless ``user`` owns ``cluster``.

    Any error while asking the gateway refuses (503): never forward when unsure.
    """
    try:
        owner = owner_of(cluster)
    except Exception as e:  # noqa: BLE001 - fail closed, whatever went wrong
        logger.error("Owner of Dask cluster %r unknown (%s): request refused", cluster, e)
        raise DashboardDenied(503, "The Dask gateway cannot check who owns this cluster "
                              "now; try again later.", "lookup-error") from None
    if owner is None:
        raise DashboardDenied(404, f"There is no Dask cluster named {cluster!r}.",
                              "unknown-cluster")
    if owner != user:
        raise DashboardDenied(403, "This Dask cluster is not yours: a dashboard is shown "
                              "to its cluster's owner only.", "not-owner")


class Front:
    """What the handlers share: hub auth, the owner lookup, upstream, audit."""

    def __init__(self, *, upstream: str, owner_of: OwnerLookup, prefix: str,
                 hub_auth: HubOAuth | None = None, audit: Any = None,
                 logger: logging.Logger | None = None):
        self.log = logger or log
        self.upstream = upstream.rstrip("/")
        self.owner_of = owner_of
        self.prefix = _prefix(prefix)
        self.hub_auth = hub_auth or HubOAuth(cache_max_age=60)
        self.audit = audit

    async def record(self, user: str | None, cluster: str, denied: DashboardDenied,
                     request: Any) -> None:
        if self.audit is None or denied.reason is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(None, lambda: self.audit.record(
                AUDIT_EVENT, actor=user, outcome="denied", cluster=cluster,
                reason=denied.reason, status=denied.status, path=request.path,
                remote_ip=request.remote_ip))
        except Exception:  # noqa: BLE001 - the refusal stands; the log keeps the error
            self.log.exception("audit record of a refused dashboard request failed")


def _prefix(prefix: str) -> str:
    """``/services/dask-gateway/`` from ``/services/dask-gateway``; ``/`` from ``""``."""
    p = prefix.strip("/")
    return f"/{p}/" if p else "/"


def _wants_html(request: Any) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def _is_websocket(request: Any) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


class _Refusing(web.RequestHandler):
    """Answers JSON, or a small HTML page to browsers."""

    def refuse(self, status: int, message: str) -> None:
        self.clear()
        self.set_status(status)
        if _wants_html(self.request):
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(f"<!DOCTYPE html><html><head><title>{status}</title></head><body>"
                        f"<h1>{status}</h1><p>{html.escape(message)}</p></body></html>")
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status, "message": message}))


class RefusedHandler(_Refusing):
    """Every public path under the service other than dashboards and the OAuth callback."""

    def prepare(self) -> None:
        self.refuse(403, API_REFUSED)

    def check_xsrf_cookie(self) -> None:  # nothing is served: no form to protect
        return


async def forward_http(handler: _Refusing, upstream: str, logger: logging.Logger, *,
                       request_drop: set[str] = REQUEST_DROP,
                       response_drop: set[str] = RESPONSE_DROP) -> None:
    """Send ``handler``'s request to ``upstream`` (same URI) and its answer back."""
    request = handler.request
    headers = {k: v for k, v in request.headers.get_all() if k.lower() not in request_drop}
    body = request.body if request.method in ("POST", "PUT", "PATCH") else None
    req = httpclient.HTTPRequest(
        upstream + request.uri, method=request.method,
        headers=headers, body=body, follow_redirects=False, decompress_response=False,
        allow_nonstandard_methods=True, request_timeout=120, connect_timeout=10)
    try:
        resp = await httpclient.AsyncHTTPClient(
            max_body_size=MAX_BODY).fetch(req, raise_error=False)
    except Exception as e:  # noqa: BLE001 - connection refused, timeout …
        logger.warning("Dask gateway upstream %s unreachable: %s", req.url, e)
        resp = None
    if resp is None or resp.code == 599:
        handler.refuse(502, "The Dask gateway or the cluster cannot be reached now (is the "
                       "cluster running?).")
        return
    handler.clear()
    handler.set_status(resp.code, _reason(resp))
    handler.clear_header("Content-Type")
    for k, v in resp.headers.get_all():
        if k.lower() not in response_drop:
            handler.add_header(k, v)
    if request.method == "HEAD" or resp.code in (204, 304):
        handler.finish()
    else:
        handler.finish(resp.body or b"")


def _reason(resp: Any) -> str:
    """The upstream reason phrase; for a 403 of the gateway API, its JSON error message:
    dask-gateway's client shows only the reason phrase of a 403 (a refused project)."""
    if resp.code == 403 and resp.body and len(resp.body) < 2000:
        try:
            msg = json.loads(resp.body).get("error")
        except (ValueError, AttributeError):
            msg = None
        if isinstance(msg, str) and msg.isascii() and msg.isprintable():
            return msg[:300]
    return resp.reason


class ClusterHandler(HubOAuthenticated, websocket.WebSocketHandler, _Refusing):
    """A cluster's dashboard, HTTP and WebSocket, for its owner only."""

    def initialize(self, front: Front) -> None:
        self.front = front
        self.hub_auth = front.hub_auth
        self.upstream_ws: websocket.WebSocketClientConnection | None = None
        self._pump: asyncio.Task | None = None

    # ----------------------------------------------------------- authorise

    async def _user(self) -> str | None:
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            return None
        try:
            model = self.check_hub_user(model)
        except UserNotAllowed:
            return None
        if not model or model.get("kind", "user") != "user":
            return None
        self._hub_auth_user_cache = model
        return model["name"]

    async def _authorize(self, name: str) -> bool:
        """True when the request may be forwarded; otherwise the answer is sent."""
        try:
            user = await self._user()
        except web.HTTPError as e:  # e.g. a cookie without its xsrf check
            self.refuse(e.status_code, SIGN_IN)
            return False
        except Exception:  # noqa: BLE001 - the hub is unreachable: fail closed
            self.front.log.exception("JupyterHub could not identify a dashboard request")
            self.refuse(503, "JupyterHub cannot be asked who you are now; try again later.")
            return False
        if user is None:
            browser = (self.request.method in ("GET", "HEAD") and _wants_html(self.request)
                       and not _is_websocket(self.request)
                       and "Authorization" not in self.request.headers)
            if browser:
                self.redirect(self.get_login_url())
            else:
                self.refuse(403, SIGN_IN)
            return False
        try:
            check_path(self.request.path, name)
            check_owner(user, name, self.front.owner_of, self.front.log)
        except DashboardDenied as denied:
            self.front.log.warning("Dashboard of Dask cluster %r refused to %s: %s", name,
                                   user, denied.reason)
            await self.front.record(user, name, denied, self.request)
            self.refuse(denied.status, denied.message)
            return False
        return True

    # ----------------------------------------------------------- HTTP

    async def get(self, name: str, rest: str | None = None) -> None:
        if not await self._authorize(name):
            return
        if _is_websocket(self.request):
            await self._open_websocket(name, rest)
        else:
            await self._forward_http()

    async def _other(self, name: str, rest: str | None = None) -> None:
        if await self._authorize(name):
            await self._forward_http()

    post = put = patch = delete = head = options = _other  # type: ignore[assignment]

    async def _forward_http(self) -> None:
        await forward_http(self, self.front.upstream, self.front.log)

    # ----------------------------------------------------------- WebSocket

    async def _open_websocket(self, name: str, rest: str | None) -> None:
        # the same check WebSocketHandler.get makes, before anything is opened upstream
        error = self._check_cross_origin(self.check_origin)
        if error is not None:
            self.front.log.warning("Cross-origin dashboard WebSocket refused: %s", error)
            self.refuse(403, "Cross-origin WebSocket refused.")
            return
        protocols = [p.strip() for p in self.request.headers.get(
            "Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        url = "ws" + self.front.upstream[len("http"):] + self.request.uri
        try:
            self.upstream_ws = await websocket.websocket_connect(
                httpclient.HTTPRequest(url, connect_timeout=10, request_timeout=30),
                subprotocols=protocols or None, max_message_size=MAX_BODY)
        except Exception as e:  # noqa: BLE001
            self.front.log.warning("Dashboard WebSocket upstream %s: %s", url, e)
            self.refuse(502, "The cluster's dashboard cannot be reached (is the cluster "
                        "running?).")
            return
        await websocket.WebSocketHandler.get(self, name, rest)
        if self.ws_connection is None and self.upstream_ws is not None:
            self.upstream_ws.close()  # the handshake was refused

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self.upstream_ws.selected_subprotocol if self.upstream_ws else None

    def open(self, *args: Any, **kwargs: Any) -> None:
        self._pump = asyncio.ensure_future(self._pump_upstream())

    async def _pump_upstream(self) -> None:
        assert self.upstream_ws is not None
        while True:
            msg = await self.upstream_ws.read_message()
            if msg is None:
                break
            try:
                await self.write_message(msg, binary=isinstance(msg, bytes))
            except websocket.WebSocketClosedError:
                break
        self.close()

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream_ws is None:
            return
        try:
            await self.upstream_ws.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            self.close()

    def on_close(self) -> None:
        if self.upstream_ws is not None:
            self.upstream_ws.close()
        if self._pump is not None:
            self._pump.cancel()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.ws_connection is None and self.upstream_ws is not None:
            self.upstream_ws.close()


class CallbackHandler(HubOAuthCallbackHandler):
    """``<prefix>oauth_callback``: completes the hub's OAuth and sets the service cookie."""

    def initialize(self, front: Front) -> None:
        self.hub_auth = front.hub_auth


def make_app(front: Front, **settings: Any) -> web.Application:
    p = re.escape(front.prefix)
    return web.Application([
        (rf"{p}oauth_callback", CallbackHandler, {"front": front}),
        (rf"{p}clusters/([^/]+)(/.*)?", ClusterHandler, {"front": front}),
        (r".*", RefusedHandler),
    ], cookie_secret=settings.pop("cookie_secret", None) or secrets.token_bytes(32),
        websocket_max_message_size=MAX_BODY, xsrf_cookies=False, **settings)


def serve(front: Front, address: str) -> HTTPServer:
    """Listen on ``host:port`` (the service's ``url``); returns the server (``.stop()``)."""
    host, _, port = address.rpartition(":")
    app = make_app(front)
    server = HTTPServer(app, xheaders=False)
    server.listen(int(port), host or "127.0.0.1")
    front.log.info("Dask gateway front at http://%s (upstream %s)", address, front.upstream)
    return server



# ------------------------------------------------------------------ the API listener


#: the gateway authenticates its API itself: its cookie and tokens pass both ways
API_REQUEST_DROP = REQUEST_DROP - {"cookie", "authorization"}
API_RESPONSE_DROP = RESPONSE_DROP - {"set-cookie"}


class ApiFront:
    """What the API listener's handlers share: the proxy's loopback HTTP listener, the
    service prefix, the audit log."""

    def __init__(self, *, upstream: str, prefix: str, audit: Any = None,
                 logger: logging.Logger | None = None):
        self.log = logger or log
        self.upstream = upstream.rstrip("/")
        self.prefix = _prefix(prefix)
        self.audit = audit

    async def record(self, cluster: str, request: Any) -> None:
        if self.audit is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(None, lambda: self.audit.record(
                AUDIT_EVENT, actor=None, outcome="denied", cluster=cluster,
                reason="sandbox-address", status=403, path=request.path,
                remote_ip=request.remote_ip))
        except Exception:  # noqa: BLE001 - the refusal stands; the log keeps the error
            self.log.exception("audit record of a refused dashboard request failed")


class ApiHandler(_Refusing):
    """``<prefix>api/…`` on the sandbox host address: to the gateway, unchanged."""

    def initialize(self, front: ApiFront) -> None:
        self.front = front

    def check_xsrf_cookie(self) -> None:  # the gateway's API, its own auth
        return

    async def _any(self, *args: Any) -> None:
        if ambiguous_path(self.request.path):
            self.refuse(400, "Malformed path.")
            return
        await forward_http(self, self.front.upstream, self.front.log,
                           request_drop=API_REQUEST_DROP, response_drop=API_RESPONSE_DROP)

    get = post = put = patch = delete = head = options = _any  # type: ignore[assignment]


class SandboxDashboardHandler(_Refusing):
    """``<prefix>clusters/…`` on the sandbox host address: never (audited)."""

    def initialize(self, front: ApiFront) -> None:
        self.front = front

    def check_xsrf_cookie(self) -> None:
        return

    async def prepare(self) -> None:
        name = self.path_args[0] if self.path_args else ""
        self.front.log.warning("Dashboard of Dask cluster %r asked on the sandbox host "
                               "address by %s: refused", name, self.request.remote_ip)
        await self.front.record(name, self.request)
        self.refuse(403, DASHBOARD_REFUSED)


class ApiOnlyHandler(_Refusing):
    def prepare(self) -> None:
        self.refuse(404, API_ONLY)

    def check_xsrf_cookie(self) -> None:
        return


def make_api_app(front: ApiFront) -> web.Application:
    p = re.escape(front.prefix)
    return web.Application([
        (rf"{p}api/.*", ApiHandler, {"front": front}),
        (rf"{p}clusters/([^/]*).*", SandboxDashboardHandler, {"front": front}),
        (r".*", ApiOnlyHandler),
    ], xsrf_cookies=False)


def serve_api(front: ApiFront, address: str) -> HTTPServer:
    """Listen on ``host:port`` (the sandbox host address); returns the server (``.stop()``)."""
    host, _, port = address.rpartition(":")
    server = HTTPServer(make_api_app(front), xheaders=False)
    server.listen(int(port), host)
    front.log.info("Dask gateway API listener at http://%s (upstream %s)", address,
                   front.upstream)
    return server
