"""The export guard: the server refuses every way of carrying a file out by HTTP.

Three layers, each enough on its own (better redundant than allow):

1. :class:`EcluseAuthorizer` (``ServerApp.authorizer_class``), a subclass of
   jupyterhub-singleuser's ``JupyterHubAuthorizer`` (whose scope check still
   runs first): refuses ``/files/…``, ``/view/…``, ``/nbconvert/…`` and
   ``/api/nbconvert`` by handler class *and* by URL, and applies the
   :class:`~ecluse_workspace.policy.ReadPolicy` to contents-API reads.
2. The server extension registers :class:`RefusedHandler` on those URLs
   (extension routes take precedence over the server's own), and
   :class:`EcluseContentsManager` uses it as its ``files_handler_class``.
3. JupyterLab's download, export and open-in-new-tab plugins are disabled
   and locked in ``labconfig/page_config.json`` (cosmetic: the server is the
   guard).

The configuration lives in a read-only folder mounted by the spawner
(``ecluse.hub.workspace``); user configuration is not read.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web
from tornado.routing import Matcher, Rule
from traitlets import Integer, List, default, validate
from traitlets.config import LoggingConfigurable

from .content import (
    HEAD_BYTES,
    ContentRefused,
    Limits,
    check_bytes,
    check_json_strings,
    check_notebook,
    check_text,
    classify,
)
from .policy import AIRLOCK_HINT, ReadPolicy, Refused

try:  # jupyterhub-singleuser's authorizer (scopes); plain Authorizer outside a hub
    from jupyterhub.singleuser.extension import JupyterHubAuthorizer as _BaseAuthorizer
except ImportError:  # pragma: no cover
    from jupyter_server.auth.authorizer import Authorizer as _BaseAuthorizer

#: URL paths (after the server's base URL) that carry files out: always refused
REFUSED_URL = re.compile(r"^(files|view|nbconvert)(/|$)|^api/nbconvert(/|$)")

#: kernelspec resources: only the logos JupyterLab's launcher shows (the user's
#: own kernelspec folders are writable: anything else there could be a data file)
KERNELSPEC_LOGO = re.compile(r"^kernelspecs/[^/]+/logo-[0-9a-z]+\.(png|svg)$")
MAX_LOGO_BYTES = 256 * 1024


def proxy_refused(url: str, allowed_ports: list[int]) -> bool:
    """``proxy/<port>/…`` is refused unless ``<port>`` is allowed (never host:port)."""
    m = re.match(r"^proxy/(?:absolute/)?([^/]*)", url)
    if not m:
        return False
    return not (m.group(1).isdigit() and int(m.group(1)) in allowed_ports)


REFUSED_MESSAGE = (
    "Downloads, exports and raw file views are disabled in Écluse workspaces. "
    + AIRLOCK_HINT
)


def _refused_handler_classes() -> tuple[type, ...]:
    classes: list[type] = []
    for module, name in (
        ("jupyter_server.files.handlers", "FilesHandler"),
        ("jupyter_server.base.handlers", "AuthenticatedFilesHandler"),
        ("jupyter_server.nbconvert.handlers", "NbconvertFileHandler"),
        ("jupyter_server.nbconvert.handlers", "NbconvertPostHandler"),
        ("jupyter_server.services.nbconvert.handlers", "NbconvertRootHandler"),
        ("jupyter_server.view.handlers", "ViewHandler"),
    ):
        try:
            mod = __import__(module, fromlist=[name])
            classes.append(getattr(mod, name))
        except (ImportError, AttributeError):  # pragma: no cover
            continue
    return tuple(classes)


class GuardPolicy(LoggingConfigurable):
    """Size limits of what the contents API may send to the browser."""

    max_text_bytes = Integer(
        2 * 1024 * 1024, help="Largest text or code file the browser may open (bytes)."
    ).tag(config=True)
    max_notebook_bytes = Integer(
        32 * 1024 * 1024, help="Largest notebook the browser may open (bytes)."
    ).tag(config=True)
    max_image_bytes = Integer(
        4 * 1024 * 1024, help="Largest image the browser may open (bytes)."
    ).tag(config=True)
    proxy_ports = List(
        Integer(),
        help="""No longer opens anything: the route allow-list
        (``ecluse_workspace.routes``) refuses jupyter-server-proxy on every port,
        since any process of the user listening on an allowed port would be a
        download channel. Dask dashboards are served by the hub (docs/dask.md).""",
    ).tag(config=True)

    def read_policy(self) -> ReadPolicy:
        return ReadPolicy(
            max_text_bytes=self.max_text_bytes,
            max_notebook_bytes=self.max_notebook_bytes,
            max_image_bytes=self.max_image_bytes,
        )


def relative_url(handler: Any) -> str:
    """The request path after the server's base URL, without leading slash."""
    base = handler.settings.get("base_url", "/") or "/"
    path = handler.request.path
    if path.startswith(base):
        path = path[len(base):]
    return path.lstrip("/")


class EcluseAuthorizer(_BaseAuthorizer):
    """jupyterhub-singleuser's authorizer, plus the export guard."""

    _refused = _refused_handler_classes()

    def _policy(self) -> ReadPolicy:
        if not hasattr(self, "_read_policy"):
            self._read_policy = GuardPolicy(parent=self.parent, config=self.config).read_policy()
        return self._read_policy

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        # the hub's scope check first: nothing below can grant what it refuses
        if not super().is_authorized(handler, user, action, resource):
            return False
        refused_class = isinstance(handler, self._refused)
        url = relative_url(handler)
        if refused_class or isinstance(handler, RefusedHandler) or REFUSED_URL.match(url):
            self.log.warning("export guard: refused %s %s for %s",
                             handler.request.method, handler.request.path,
                             getattr(user, "username", user))
            raise web.HTTPError(403, REFUSED_MESSAGE)
        if resource == "contents" and action == "read" and url.startswith("api/contents"):
            self._check_contents_read(handler)
        if url.startswith("kernelspecs/") and not KERNELSPEC_LOGO.match(url):
            raise web.HTTPError(403, REFUSED_MESSAGE)
        return True

    def _check_contents_read(self, handler: Any) -> None:
        if handler.get_query_argument("content", "1") in ("0", ""):
            return  # metadata only
        if handler.get_query_argument("type", None) == "directory":
            return
        args = handler.path_args or []
        path = (handler.path_kwargs or {}).get("path") or (args[0] if args else "")
        path = (path or "").strip("/")
        if not path or path.endswith("/checkpoints"):
            return
        cm = handler.contents_manager
        try:
            os_path = cm._get_os_path(path)
        except web.HTTPError:
            return  # outside the root: the contents manager refuses it itself
        except AttributeError:  # not a file-system contents manager: refuse reads
            raise web.HTTPError(403, REFUSED_MESSAGE) from None
        try:
            self._policy().check(os_path,
                                 requested_format=handler.get_query_argument("format", None))
        except Refused as e:
            self.log.warning("export guard: refused contents read of %s (%s)", path, e.code)
            raise web.HTTPError(403, e.message) from None


def refused_routes(base_url: str, proxy_ports: list[int]) -> list[str]:
    """URL patterns the extension answers with :class:`RefusedHandler`."""
    from jupyter_server.utils import url_path_join

    ports = "|".join(str(int(p)) for p in proxy_ports)
    allowed = f"(?!(?:{ports})(?:/|$))" if ports else ""
    return [
        url_path_join(base_url, "files") + "(/.*)?",
        url_path_join(base_url, "view") + "(/.*)?",
        url_path_join(base_url, "nbconvert") + "(/.*)?",
        url_path_join(base_url, "api/nbconvert") + "(/.*)?",
        url_path_join(base_url, "proxy/absolute") + "(/.*)?",
        url_path_join(base_url, "proxy/") + allowed + ".*",
        url_path_join(base_url, "kernelspecs") + r"/[^/]+/(?!logo-[0-9a-z]+\.(?:png|svg)$).*",
    ]


class RefusedHandler(JupyterHandler):
    """Answers 403 with the airlock hint, for every method, on refused URLs."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        self.log.warning("export guard: refused %s %s", self.request.method, self.request.path)
        raise web.HTTPError(403, REFUSED_MESSAGE)

    def check_xsrf_cookie(self) -> None:  # refusing needs no xsrf token
        return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if "/api/" not in self.request.path:
            return super().write_error(status_code, **kwargs)
        self.set_header("Content-Type", "application/json")
        self.finish({"message": REFUSED_MESSAGE, "reason": "export-guard"})

    get = head = post = put = delete = patch = _refuse


class EcluseContentsManager(AsyncLargeFileManager):
    """The usual file-system contents manager, whose ``/files/`` handler refuses."""

    @default("files_handler_class")
    def _files_handler_class_default(self) -> type:
        return RefusedHandler

    @default("files_handler_params")
    def _files_handler_params_default(self) -> dict:
        return {}

    @validate("files_handler_class")
    def _only_refused(self, proposal: Any) -> type:
        if proposal["value"] is not RefusedHandler:
            self.log.warning("export guard: files_handler_class stays RefusedHandler")
        return RefusedHandler


# --------------------------------------------------------------------------- default deny


ROUTE_REFUSED_MESSAGE = (
    "This address is not one the Écluse workspace serves ({why}). Downloads, exports and "
    "raw file views are disabled in Écluse workspaces. " + AIRLOCK_HINT
)


def request_route(base_url: str, method: str, raw_path: str) -> tuple[Any, str]:
    """``(Route or None, why)`` for a request, from its raw (undecoded) path."""
    from urllib.parse import unquote

    from . import routes

    base = base_url if base_url.endswith("/") else base_url + "/"
    if raw_path == base[:-1]:
        raw_path = base
    if not raw_path.startswith(base):
        return None, "outside the workspace server's address"
    raw_rel = raw_path[len(base):]
    if routes._ENCODED_SLASH.search(raw_rel):
        return None, "percent-encoded slash in the path"
    try:
        rel = unquote(raw_rel, errors="strict")
    except UnicodeDecodeError:
        return None, "a path that is not UTF-8"
    route = routes.match(method.upper(), rel)
    if route is None:
        return None, routes.refusal(method.upper(), rel)
    return route, ""


class RouteRefusedHandler(RefusedHandler):
    """403 for every request outside the route allow-list (:mod:`ecluse_workspace.routes`)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        route, why = request_route(self.settings.get("base_url", "/"), self.request.method or "",
                                   self.request.path)
        why = why or "handler not allowed on this route"
        self.log.warning("workspace guard: refused %s %s (%s)", self.request.method,
                         self.request.path, why)
        self._ecluse_message = ROUTE_REFUSED_MESSAGE.format(why=why)
        raise web.HTTPError(403, self._ecluse_message)

    def prepare(self) -> None:  # refuse before authentication, xsrf or anything else
        self._refuse()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = getattr(self, "_ecluse_message", REFUSED_MESSAGE)
        self.set_header("Content-Type", "application/json")
        self.finish({"message": message, "reason": "export-guard"})

    get = head = post = put = delete = patch = options = _refuse


class _OutsideAllowList(Matcher):
    """Matches every request the allow-list refuses: the first rule of the application."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def match(self, request: Any) -> dict[str, Any] | None:
        route, _ = request_route(self.base_url, request.method or "", request.path)
        return {"path_args": [], "path_kwargs": {}} if route is None else None


#: handler classes that only answer an error or a redirect: fine on any allowed route
_NEUTRAL_HANDLERS = frozenset({
    "tornado.web.ErrorHandler", "tornado.web.RedirectHandler",
    "jupyter_server.base.handlers.RedirectWithParams",
    "jupyter_server.base.handlers.Template404", "jupyter_server.base.handlers.TrailingSlashHandler",
    "jupyterlab_server.handlers.NotFoundHandler",
})

#: the handler classes each allowed route may reach (module.qualname): a handler an
#: extension adds under an allowed path is refused until it is listed here
ROUTE_HANDLERS: dict[str, frozenset[str]] = {
    "root": frozenset({"jupyter_server.base.handlers.MainHandler"}),
    "lab-page": frozenset({"jupyterlab_server.handlers.LabHandler"}),
    "static": frozenset({"jupyter_server.base.handlers.FileFindHandler"}),
    "lab-extensions": frozenset({"jupyter_server.base.handlers.FileFindHandler"}),
    "lab-themes": frozenset({"jupyterlab_server.themes_handler.ThemesHandler"}),
    "lab-translations": frozenset({"jupyterlab_server.translations_handler.TranslationsHandler"}),
    "lab-listings": frozenset({"jupyterlab_server.listings_handler.ListingsHandler"}),
    "lab-licenses": frozenset({"jupyterlab_server.licenses_handler.LicensesHandler"}),
    "lab-plugins": frozenset({"jupyterlab.handlers.plugin_manager_handler.PluginHandler"}),
    "lab-build": frozenset({"jupyterlab.handlers.build_handler.BuildHandler"}),
    "lab-settings": frozenset({"jupyterlab_server.settings_handler.SettingsHandler"}),
    "lab-workspaces": frozenset({"jupyterlab_server.workspaces_handler.WorkspacesHandler"}),
    "api-version": frozenset({"jupyter_server.base.handlers.APIVersionHandler"}),
    "api-status": frozenset({"jupyter_server.services.api.handlers.APIStatusHandler"}),
    "api-me": frozenset({"jupyter_server.services.api.handlers.IdentityHandler"}),
    "api-resolve-path": frozenset({"jupyter_server.services.api.handlers.PathResolverHandler"}),
    "api-contents": frozenset({
        "jupyter_server.services.contents.handlers.ContentsHandler",
        "jupyter_server.services.contents.handlers.CheckpointsHandler",
        "jupyter_server.services.contents.handlers.ModifyCheckpointsHandler",
        "jupyter_server.services.contents.handlers.TrustNotebooksHandler",
    }),
    "api-sessions": frozenset({
        "jupyter_server.services.sessions.handlers.SessionRootHandler",
        "jupyter_server.services.sessions.handlers.SessionHandler",
    }),
    "api-kernels": frozenset({
        "jupyter_server.services.kernels.handlers.MainKernelHandler",
        "jupyter_server.services.kernels.handlers.KernelHandler",
        "jupyter_server.services.kernels.handlers.KernelActionHandler",
        "jupyter_server.services.kernels.websocket.KernelWebsocketHandler",
    }),
    "api-kernelspecs": frozenset({
        "jupyter_server.services.kernelspecs.handlers.MainKernelSpecHandler",
        "jupyter_server.services.kernelspecs.handlers.KernelSpecHandler",
    }),
    "kernelspec-logo": frozenset({"jupyter_server.kernelspecs.handlers.KernelSpecResourceHandler"}),
    "api-terminals": frozenset({
        "jupyter_server_terminals.api_handlers.TerminalRootHandler",
        "jupyter_server_terminals.api_handlers.TerminalHandler",
    }),
    "terminal-websocket": frozenset({"jupyter_server_terminals.handlers.TermSocket"}),
    "api-config": frozenset({"jupyter_server.services.config.handlers.ConfigHandler"}),
    "api-events-subscribe": frozenset({"jupyter_server.services.events.handlers.SubscribeWebsocket"}),
    "api-shutdown": frozenset({"jupyter_server.services.shutdown.ShutdownHandler"}),
    "hub-oauth-callback": frozenset({"jupyterhub.singleuser.extension.OAuthCallbackHandler",
                                     "jupyterhub.singleuser.extension.JupyterHubOAuthCallbackHandler"}),
    "hub-login": frozenset({"jupyter_server.auth.login.LoginFormHandler",
                            "jupyter_server.auth.login.LegacyLoginHandler"}),
    "hub-logout": frozenset({"jupyter_server.auth.logout.LogoutHandler",
                             "jupyterhub.singleuser.extension.JupyterHubLogoutHandler"}),
    "ecluse-export": frozenset({"ecluse_workspace.export.ExportHandler"}),
    "ecluse-check": frozenset({"ecluse_workspace.check.CheckHandler"}),
    "ecluse-requests": frozenset({"ecluse_workspace.export.RequestsHandler"}),
    "ecluse-config": frozenset({"ecluse_workspace.export.ConfigHandler"}),
    "ecluse-datasets": frozenset({"ecluse_workspace.datapanel.DatasetsHandler"}),
    "dask-clusters": frozenset({"dask_labextension.clusterhandler.DaskClusterHandler"}),
    "trailing-slash": frozenset(),
}


def handler_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def handler_allowed(route: Any, cls: type) -> bool:
    """Whether ``cls`` may answer a request the allow-list let through as ``route``."""
    name = handler_name(cls)
    return name in _NEUTRAL_HANDLERS or name in ROUTE_HANDLERS.get(route.name, ())


_CHECKED: dict[type, type] = {}


def _checked_class(cls: type) -> type:
    """``cls`` with the content rule applied to what it sends (:class:`ContentCheckedMixin`)."""
    if cls not in _CHECKED:
        _CHECKED[cls] = type(cls.__name__, (ContentCheckedMixin, cls),
                             {"_ecluse_checked": True, "__module__": cls.__module__,
                              "__qualname__": cls.__qualname__})
    return _CHECKED[cls]


def install_route_guard(web_app: Any, log: Any) -> None:
    """Default deny, before any handler runs, whatever decorator it has.

    Two checks, both on every request:

    1. the first rule of the application's router matches every request the
       allow-list refuses and sends it to :class:`RouteRefusedHandler`;
    2. ``get_handler_delegate`` — which tornado calls for every handler it
       builds, including 404s — refuses a request the allow-list refuses, and
       a handler class that is not the one listed for its route (an extension
       registering a handler under an allowed path), and gives the handlers of
       routes that return file bytes the content rule on what they send.
    """
    base = web_app.settings.get("base_url", "/") or "/"
    web_app.default_router.rules.insert(0, Rule(_OutsideAllowList(base), RouteRefusedHandler))
    original = web_app.get_handler_delegate

    def get_handler_delegate(request: Any, target_class: type, target_kwargs: Any = None,
                             path_args: Any = None, path_kwargs: Any = None) -> Any:
        route, why = request_route(base, request.method or "", request.path)
        if route is None or not handler_allowed(route, target_class):
            if route is not None:
                log.warning("workspace guard: handler %s not allowed on route %s",
                            handler_name(target_class), route.name)
            return original(request, RouteRefusedHandler, {}, [], {})
        if route.reads_files and not getattr(target_class, "_ecluse_checked", False) \
                and handler_name(target_class) not in _NEUTRAL_HANDLERS:
            target_class = _checked_class(target_class)
        return original(request, target_class, target_kwargs, path_args, path_kwargs)

    web_app.get_handler_delegate = get_handler_delegate
    web_app.settings["ecluse_route_guard"] = True


# --------------------------------------------------------------------------- content rule


MAX_SETTINGS_STRING = 4096
MAX_SETTINGS_BYTES = 64 * 1024
MAX_WORKSPACE_STRING = 2048
MAX_WORKSPACE_BYTES = 256 * 1024


class ContentCheckedMixin:
    """Applies the content rule to the first bytes a handler sends (before any goes out).

    The whole answer of the contents, settings and layout APIs is in the
    buffer at the first flush (they answer with one ``finish``); an answer
    that streams is refused. Static answers (kernelspec logos) are judged
    on their first chunk and their length.
    """

    _ecluse_checked = True
    _ecluse_judged = False
    _ecluse_refused = False

    def write(self, chunk: Any) -> None:
        if self._ecluse_refused:
            return
        super().write(chunk)  # type: ignore[misc]

    def flush(self, include_footers: bool = False) -> Any:
        if not self._ecluse_judged and self._write_buffer:  # type: ignore[attr-defined]
            self._ecluse_judged = True
            self._ecluse_judge(include_footers)
        elif self._ecluse_refused:
            self._write_buffer = []
        return super().flush(include_footers)  # type: ignore[misc]

    def _ecluse_judge(self, complete: bool) -> None:
        status = self.get_status()  # type: ignore[attr-defined]
        if not 200 <= status < 300:
            return  # errors and redirects carry no file
        body = b"".join(self._write_buffer)  # type: ignore[attr-defined]
        method = self.request.method or ""  # type: ignore[attr-defined]
        route, _ = request_route(self.settings.get("base_url", "/"), method,  # type: ignore[attr-defined]
                                 self.request.path)  # type: ignore[attr-defined]
        try:
            if route is None:
                raise ContentRefused("refused", "not an allowed route")
            if status not in (200, 201):
                raise ContentRefused("partial", "partial answers are not served")
            length = int(self._headers.get("Content-Length", len(body)))  # type: ignore[attr-defined]
            new = judge_response(route.name, body, complete, self._ecluse_limits(),
                                 self.request.path, total=length)  # type: ignore[attr-defined]
        except ContentRefused as e:
            self.log.warning("workspace guard: refused the answer to %s %s (%s)",  # type: ignore[attr-defined]
                             method, self.request.path, e.code)  # type: ignore[attr-defined]
            self._ecluse_replace(403, json.dumps(
                {"message": f"{e.message} {AIRLOCK_HINT}", "reason": "export-guard",
                 "code": e.code}).encode())
            self._ecluse_refused = True
            return
        if new is not None:
            self._ecluse_replace(200, new)

    def _ecluse_replace(self, status: int, body: bytes) -> None:
        self.set_status(status)  # type: ignore[attr-defined]
        self._write_buffer = [body]
        self.clear_header("Etag")  # type: ignore[attr-defined]
        self.clear_header("Last-Modified")  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json; charset=UTF-8")  # type: ignore[attr-defined]
        if "Content-Length" in self._headers:  # type: ignore[attr-defined]
            self.set_header("Content-Length", len(body))  # type: ignore[attr-defined]

    def _ecluse_limits(self) -> Limits:
        authorizer = self.settings.get("authorizer")  # type: ignore[attr-defined]
        policy = authorizer._policy() if isinstance(authorizer, EcluseAuthorizer) else ReadPolicy()
        return Limits(max_text_bytes=policy.max_text_bytes,
                      max_notebook_bytes=policy.max_notebook_bytes,
                      max_image_bytes=policy.max_image_bytes)


def judge_response(route: str, body: bytes, complete: bool, limits: Limits,
                   path: str = "", total: int | None = None) -> bytes | None:
    """Apply the content rule to the body of an answer of ``route``.

    Returns ``None`` when the body may go as it is, new bytes when it may go
    changed (settings without their comments), or raises
    :class:`~ecluse_workspace.content.ContentRefused`.
    """
    name = path.rstrip("/").rsplit("/", 1)[-1] or "this file"
    if route == "kernelspec-logo":
        kind = classify(body[:HEAD_BYTES], complete=complete)
        if kind.kind != "image" or max(len(body), total or 0) > MAX_LOGO_BYTES:
            raise ContentRefused("binary_file", f"{name} is not a kernel logo.")
        return None
    if not complete:
        raise ContentRefused("streamed", f"the answer for {name} was not sent whole.")
    try:
        doc = json.loads(body)
    except ValueError:
        raise ContentRefused("not_json", f"the answer for {name} is not JSON.") from None
    if route == "api-contents":
        _judge_contents(doc, limits)
        return None
    if route == "lab-settings":
        items = doc.get("settings") if isinstance(doc, dict) else None
        items = items if isinstance(items, list) else [doc]
        for item in items:
            if not isinstance(item, dict):
                raise ContentRefused("not_json", "unexpected settings answer.")
            user = item.get("settings", {})
            check_json_strings(user, f"the settings of {item.get('id', name)}",
                               max_string=MAX_SETTINGS_STRING, max_total=MAX_SETTINGS_BYTES)
            if "raw" in item:
                # the user's file as written may hide anything in JSON5 comments: the
                # browser gets the parsed settings back, without comments
                item["raw"] = json.dumps(user, indent=4, ensure_ascii=False)
        return json.dumps(doc).encode()
    if route == "lab-workspaces":
        check_json_strings(doc, f"the layout {name}", max_string=MAX_WORKSPACE_STRING,
                           max_total=MAX_WORKSPACE_BYTES)
        return None
    if route == "ecluse-datasets":
        from .datapanel import MAX_CATALOGUE_BYTES, MAX_CATALOGUE_STRING

        check_json_strings(doc, "the data catalogue", max_string=MAX_CATALOGUE_STRING,
                           max_total=MAX_CATALOGUE_BYTES)
        return None
    raise ContentRefused("refused", f"no content rule for {route}.")


def _judge_contents(doc: Any, limits: Limits) -> None:
    if isinstance(doc, list):  # checkpoints
        if any(isinstance(x, dict) and x.get("content") is not None for x in doc):
            raise ContentRefused("refused", "unexpected contents answer.")
        return
    if not isinstance(doc, dict):
        raise ContentRefused("refused", "unexpected contents answer.")
    body = doc.get("content")
    name = str(doc.get("name") or "this file")
    if body is None:
        return
    kind, fmt = doc.get("type"), doc.get("format")
    if kind == "directory":
        if not isinstance(body, list) or any(
                isinstance(x, dict) and x.get("content") is not None for x in body):
            raise ContentRefused("refused", "unexpected directory listing.")
        return
    if kind == "notebook":
        check_bytes(json.dumps(body, ensure_ascii=False).encode(), name, limits)
        check_notebook(body, name)
        return
    if not isinstance(body, str):
        raise ContentRefused("refused", f"unexpected content for {name}.")
    if fmt == "base64":
        try:
            raw = base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            raise ContentRefused("binary_file", f"{name}: damaged base64.") from None
        got = check_bytes(raw, name, limits)
        if got.kind != "image":
            raise ContentRefused("binary_file",
                                 f"{name} can only be opened as text in the browser.")
        return
    check_text(body, name, limits)
