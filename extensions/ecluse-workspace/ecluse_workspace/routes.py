"""The workspace server's route allow-list, as data: everything else is refused.

Pure Python, no dependency (not even tornado), so that the same list is
enforced in two places:

* inside the workspace, by the export guard (:mod:`ecluse_workspace.guard`),
  before any handler runs, whatever decorator the handler has;
* on the host, outside the sandbox, by the filter in front of the workspace.

A path is the request path **relative to the server's base URL**
(``/user/<u>/<project>/``), without its leading slash, percent-decoded
once and otherwise as received: ``api/contents/notes.ipynb``. Dot segments,
empty segments, control characters, backslashes and slashes that were
percent-encoded (the caller passes ``encoded_slash=True`` or leaves ``%2F`` in
the path, which is refused here) are refused, never normalised: a path that
needs normalising is not one a browser sends.

Each :class:`Route` says why it is safe. ``reads_files`` marks the routes
that may return bytes of files the researcher (or their code) can write:
those answer only after the content rule
(:mod:`ecluse_workspace.content`, ``docs/threat-model.md``) has looked at what
the bytes are. The other allowed routes return no user-writable file bytes
(static files of the installed environment, JSON about kernels and sessions)
or are the screen channel (kernels and terminals print what the researcher
asks them to: only a VDI closes that).

:data:`REFUSED` lists routes that exist in the workspace environment and are
refused on purpose, with the reason; a route in neither list is refused too
(default deny) — the test ``tests/workspace/test_routes.py`` fails when the
workspace environment registers a route that is in neither list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["REFUSED", "ROUTES", "Refusal", "Route", "bad_path", "match", "refusal"]

_GET = frozenset({"GET"})
_GET_HEAD = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Route:
    """An allowed route: a regex over the relative path, and the methods allowed."""

    name: str
    pattern: str  # re.fullmatch against the relative path (no leading slash)
    methods: frozenset[str]
    reason: str
    reads_files: bool

    def matches(self, method: str, rel_path: str) -> bool:
        return method in self.methods and _compiled(self.pattern).fullmatch(rel_path) is not None


@dataclass(frozen=True)
class Refusal:
    """A route of the workspace environment refused on purpose (every method)."""

    name: str
    pattern: str
    reason: str


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    c = _CACHE.get(pattern)
    if c is None:
        c = _CACHE[pattern] = re.compile(pattern, re.DOTALL)
    return c


_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ID = r"[\w-]+"

ROUTES: tuple[Route, ...] = (
    # ---- pages and the static files of the installed environment
    Route("root", r"", _GET,
          "redirects to JupyterLab", False),
    Route("lab-page", r"(?:lab|doc)(?:/workspaces/[A-Za-z0-9_-]+)?(?:/tree(?:/.*)?)?", _GET,
          "the JupyterLab page (HTML from the installed environment; the tree path is only "
          "a name)", False),
    Route("static", r"static/.+", _GET_HEAD,
          "Jupyter Server's static files, from the installed environment (read-only)", False),
    Route("lab-extensions", r"lab/extensions/.+", _GET_HEAD,
          "prebuilt JupyterLab extensions, from read-only data directories only (the "
          "spawner points JUPYTER_DATA_DIR at the read-only configuration)", False),
    Route("lab-themes", r"lab/api/themes/.+", _GET_HEAD,
          "JupyterLab themes (CSS, fonts), from the installed environment", False),
    Route("lab-translations", r"lab/api/translations(?:/[A-Za-z0-9_-]*)?", _GET,
          "language packs of the installed environment", False),
    Route("lab-listings", r"lab/api/listings/.+", _GET,
          "extension listings (configuration, read-only)", False),
    Route("lab-licenses", r"lab/api/licenses/", _GET,
          "licences of the installed JupyterLab extensions", False),
    Route("lab-plugins", r"lab/api/plugins", _GET,
          "which JupyterLab plugins are enabled (read-only: changing them is refused, the "
          "configuration is read-only)", False),
    Route("lab-build", r"lab/api/build", _GET,
          "build status (no build can be started: POST refused)", False),
    # ---- user state JupyterLab keeps in the home folder: user-writable files
    Route("lab-settings", r"lab/api/settings(?:/(?:@[\w.-]+/)?[\w.:-]+)?/?", frozenset({"GET", "PUT"}),
          "JupyterLab user settings: the files are user-writable, so every answer passes "
          "the content rule (JSON only, comments dropped, size-capped)", True),
    Route("lab-workspaces", r"lab/api/workspaces(?:/[A-Za-z0-9_-]+)?/?",
          frozenset({"GET", "PUT", "DELETE"}),
          "JupyterLab layouts: the files are user-writable, so every answer passes the "
          "content rule (layout JSON only, short strings, size-capped)", True),
    # ---- Jupyter Server REST API
    Route("api-version", r"api", _GET, "server version", False),
    Route("api-status", r"api/status", _GET, "server activity (counts, dates)", False),
    Route("api-me", r"api/me", _GET, "the identity and permissions of the caller", False),
    Route("api-resolve-path", r"api/resolvePath", _GET,
          "whether a path exists in the server root (a name, no bytes)", False),
    Route("api-contents", r"api/contents(?:/.*)?",
          frozenset({"GET", "PUT", "POST", "PATCH", "DELETE"}),
          "the file browser and the editors: listings (names), saving, renaming, "
          "checkpoints; every read of file content passes the content rule", True),
    Route("api-sessions", r"api/sessions(?:/" + _UUID + r")?",
          frozenset({"GET", "POST", "PATCH", "DELETE"}),
          "notebook ↔ kernel sessions (JSON about kernels)", False),
    Route("api-kernels", r"api/kernels(?:/" + _UUID + r"(?:/(?:restart|interrupt|channels))?)?",
          frozenset({"GET", "POST", "DELETE"}),
          "kernels and their channels: the screen channel (a kernel prints what it is "
          "asked to; only a VDI closes it)", False),
    Route("api-kernelspecs", r"api/kernelspecs(?:/[\w.-]+)?", _GET,
          "kernel specifications (JSON)", False),
    Route("kernelspec-logo", r"kernelspecs/[\w.-]+/logo-[0-9a-z]+\.(?:png|svg)", _GET,
          "the launcher's kernel logos; the bytes must be a small PNG or SVG", True),
    Route("api-terminals", r"api/terminals(?:/\w+)?", frozenset({"GET", "POST", "DELETE"}),
          "terminals: the screen channel, like kernels", False),
    Route("terminal-websocket", r"terminals/websocket/\w+", _GET,
          "a terminal's websocket: the screen channel", False),
    Route("api-config", r"api/config/\w+", _GET,
          "front-end configuration sections, from the read-only configuration folder", False),
    Route("api-events-subscribe", r"api/events/subscribe", _GET,
          "server events the front end listens to (file saved, kernel started)", False),
    Route("api-shutdown", r"api/shutdown", frozenset({"POST"}),
          "File → Shut Down (the hub starts the workspace again)", False),
    # ---- JupyterHub single-user
    Route("hub-oauth-callback", r"oauth_callback", _GET,
          "JupyterHub sign-in (OAuth callback)", False),
    Route("hub-login", r"login", _GET, "redirects to the hub's sign-in", False),
    Route("hub-logout", r"logout", _GET, "redirects to the hub's sign-out", False),
    # ---- Écluse
    Route("ecluse-export", r"ecluse/export", frozenset({"POST"}),
          "“Request export…”: sends the files to the airlock, not to the browser", False),
    Route("ecluse-check", r"ecluse/check", frozenset({"POST"}),
          "“Check for export”: sends the files to the airlock's dry run; answers verdicts, "
          "findings and a few cells around each finding (ecluse_workspace.check: what a "
          "notebook shows of a table, never a file's bytes)", False),
    Route("ecluse-requests", r"ecluse/requests", _GET,
          "the researcher's airlock requests (metadata)", False),
    Route("ecluse-config", r"ecluse/config", _GET, "export limits and the airlock hint", False),
    Route("ecluse-datasets", r"ecluse/datasets", _GET,
          "the Data panel: the datasets' columns, types and row counts, never a value "
          "(strings and size bounded by the content rule)", True),
    # ---- dask-labextension: the cluster panel (no dashboards, see REFUSED)
    Route("dask-clusters", r"dask/clusters(?:/" + _UUID + r"|/)?",
          frozenset({"GET", "PUT", "PATCH", "DELETE"}),
          "dask-labextension's cluster panel: starts, scales and lists the project's "
          "LocalClusters (JSON about clusters)", False),
)

REFUSED: tuple[Refusal, ...] = (
    Refusal("files", r"files(?:/.*)?", "raw file download"),
    Refusal("view", r"view(?:/.*)?", "raw file view in a browser tab"),
    Refusal("nbconvert", r"nbconvert(?:/.*)?", "notebook export (download as HTML, PDF…)"),
    Refusal("api-nbconvert", r"api/nbconvert(?:/.*)?", "export formats (nothing to export to)"),
    Refusal("api-notebooks", r"api/notebooks(?:/.*)?", "old contents API (a redirect)"),
    Refusal("api-spec", r"api/spec\.yaml", "not needed by JupyterLab"),
    Refusal("api-events", r"api/events", "events posted by the browser: not needed"),
    Refusal("api-csp-report", r"api/security/csp-report", "not needed"),
    Refusal("kernelspec-resources", r"kernelspecs/.*",
            "kernelspec folders may be user-writable: only logos are served"),
    Refusal("public-static", r"(?:robots\.txt|favicon\.ico)",
            "not needed: JupyterLab's icons are under static/"),
    Refusal("metrics", r"metrics", "Prometheus metrics: not for the browser"),
    Refusal("server-proxy", r"(?:proxy|server-proxy)(?:/.*)?",
            "jupyter-server-proxy: any process of the user listening on a port would be a "
            "download channel; Dask dashboards are served by the hub"),
    Refusal("dask-dashboard", r"dask/dashboard(?:/.*)?",
            "dask-labextension's dashboard proxy: a download channel; dashboards are served "
            "by the hub (docs/dask.md)"),
    Refusal("dask-dashboard-check", r"dask/dashboard-check(?:/.*)?",
            "fetches any URL inside the sandbox and returns what it answered: a download "
            "channel"),
    Refusal("lab-extension-manager", r"lab/api/extensions", "no extension installs"),
    Refusal("lab-news", r"lab/api/(?:news|update)", "news from the Internet: no network"),
    Refusal("lab-not-found", r"lab/.*", "any other JupyterLab path"),
)

#: a method outside this set is refused whatever the path (no OPTIONS, TRACE…)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED_SLASH = re.compile(r"%(?:2[fF]|5[cC])")

#: a trailing slash on an allowed GET route: the server answers with a redirect
TRAILING_SLASH = Route("trailing-slash", r".+/", _GET,
                       "redirect to the same route without the trailing slash", False)


def bad_path(rel_path: str) -> str | None:
    """Why ``rel_path`` is refused before any route is looked at, or ``None``."""
    if not isinstance(rel_path, str):
        return "not a path"
    if rel_path.startswith("/"):
        return "a relative path must not start with a slash"
    if _CONTROL.search(rel_path):
        return "control character in the path"
    if "\\" in rel_path:
        return "backslash in the path"
    if _ENCODED_SLASH.search(rel_path):
        return "percent-encoded slash in the path"
    segments = rel_path.split("/")
    inner = segments[:-1] if len(segments) > 1 else segments
    if rel_path and any(s == "" for s in inner):
        return "empty path segment"
    if any(s in (".", "..") for s in segments):
        return "dot segment in the path"
    return None


def match(method: str, rel_path: str) -> Route | None:
    """The allowed :class:`Route` for this request, or ``None`` (refused).

    ``method`` upper-case; ``rel_path`` relative to the base URL, no leading
    slash, percent-decoded once (see the module's docstring).
    """
    if method not in KNOWN_METHODS or bad_path(rel_path) is not None:
        return None
    for route in ROUTES:
        if route.matches(method, rel_path):
            return route
    if method == "GET" and rel_path.endswith("/") and rel_path != "/":
        inner = match(method, rel_path[:-1])
        if inner is not None and not inner.reads_files:
            return TRAILING_SLASH
    return None


def refusal(method: str, rel_path: str) -> str:
    """Why a request that :func:`match` refused is refused: safe to show."""
    why = bad_path(rel_path)
    if why:
        return why
    if method not in KNOWN_METHODS:
        return f"method {method} not allowed"
    for r in REFUSED:
        if _compiled(r.pattern).fullmatch(rel_path):
            return r.reason
    for route in ROUTES:
        if _compiled(route.pattern).fullmatch(rel_path):
            return f"method {method} not allowed on this route"
    return "not a route of the workspace server's allow-list"
