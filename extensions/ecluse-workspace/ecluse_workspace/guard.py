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
(``ecluse.workspace``); user configuration is not read.
"""

from __future__ import annotations

import re
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web
from traitlets import Integer, List, default, validate
from traitlets.config import LoggingConfigurable

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
        help="""Ports inside the sandbox that jupyter-server-proxy may reach at
        /proxy/<port>/ (e.g. 8787, the Dask dashboard). Default: none. Any process
        of the user listening on an allowed port is reachable from the browser: an
        allowed port is a download channel.""",
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
