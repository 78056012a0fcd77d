"""The mirror's filtering front: a PEP 503/691 simple index that answers per project.

``GET /<token>/simple/`` lists the project's allowed names; ``GET
/<token>/simple/<name>/`` the files of the pinned versions of an allowed name;
``GET /<token>/files/<name>/<file>`` one of those files. The project is the
one the token names (:func:`~.allowlist.token_project`), never a path the client
chose. Everything is decided here, before the backend is asked: an unknown
token, a name not on the project's list or a file of a version its closures do
not pin is refused (403/404) and the backend — so the upstream index — never
sees the request. Allowed names are fetched from the backend (proxpi on
loopback), their file lists filtered to the pinned versions (wheels only with
``mirror.binary_only``) and their links rewritten to this front.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from .allowlist import NAME_RE, AllowLists, normalize, token_project

log = logging.getLogger(__name__)

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*$")
SDIST_EXTS = (".tar.gz", ".zip", ".tar.bz2", ".tgz")


def _version_key(version: str) -> str:
    try:
        from packaging.version import Version

        return str(Version(version))
    except Exception:  # noqa: BLE001 - a version packaging cannot read compares as written
        return version


def file_project_version(filename: str) -> tuple[str, str, bool] | None:
    """(normalised project, version, is a wheel) of a distribution file name, or None."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6):
            return None
        return normalize(parts[0]), parts[1], True
    for ext in SDIST_EXTS:
        if filename.endswith(ext):
            stem = filename[: -len(ext)]
            name, _, version = stem.rpartition("-")
            if name and version:
                return normalize(name), version, False
    return None


class Front:
    """The filtering front of one deployment's mirror."""

    def __init__(self, *, data_dir: Path, key: bytes, backend: str,
                 projects: Callable[[], set[str]] | set[str], binary_only: bool = True):
        self.lists = AllowLists(data_dir)
        self.key = key
        self.backend = backend.rstrip("/")
        self._projects = projects
        self.binary_only = binary_only
        self.session: aiohttp.ClientSession | None = None

    def projects(self) -> set[str]:
        return self._projects() if callable(self._projects) else self._projects

    # ------------------------------------------------------------ decisions

    def project_of(self, request: web.Request) -> str:
        project = token_project(self.key, request.match_info["token"])
        if project is None or project not in self.projects():
            log.warning("refused: a request with no valid project token from %s",
                        request.remote)
            raise web.HTTPForbidden(text="ecluse mirror: this address is for project "
                                    "workspaces (PIP_INDEX_URL); the token is not valid\n")
        return project

    def pinned(self, project: str, raw_name: str) -> tuple[str, set[str]]:
        if not NAME_RE.match(raw_name):
            raise web.HTTPNotFound(text=f"ecluse mirror: {raw_name!r} is not a package name\n")
        name = normalize(raw_name)
        versions = self.lists.pins(project).get(name)
        if not versions:
            log.info("refused: %s is not on project %s's allow-list", name, project)
            raise web.HTTPNotFound(
                text=f"ecluse mirror: {name} is not on project {project}'s allow-list "
                f"(staff: ecluse packages allow {project} {name})\n")
        return name, {_version_key(v) for v in versions}

    def serves(self, name: str, versions: set[str], filename: str) -> bool:
        parsed = file_project_version(filename)
        if parsed is None:
            return False
        fname, version, wheel = parsed
        return (fname == name and _version_key(version) in versions
                and (wheel or not self.binary_only))

    # ------------------------------------------------------------ handlers

    async def root(self, request: web.Request) -> web.Response:
        project = self.project_of(request)
        names = sorted(self.lists.pins(project))
        if _wants_json(request):
            return web.json_response({"meta": {"api-version": "1.0"},
                                      "projects": [{"name": n} for n in names]},
                                     content_type=JSON_TYPE)
        links = "\n".join(f'<a href="{n}/">{n}</a><br/>' for n in names)
        return web.Response(text=_page("Simple index", links), content_type="text/html")

    async def project(self, request: web.Request) -> web.Response:
        project = self.project_of(request)
        name, versions = self.pinned(project, request.match_info["name"])
        async with self._session().get(f"{self.backend}/index/{name}/",
                                       headers={"Accept": JSON_TYPE}) as r:
            if r.status == 404:
                raise web.HTTPNotFound(text=f"ecluse mirror: {name} is not on the upstream "
                                       "index\n")
            if r.status != 200:
                raise web.HTTPBadGateway(text=f"ecluse mirror: the backend answered "
                                         f"{r.status} for {name}\n")
            data = await r.json(content_type=None)
        files = []
        for f in data.get("files", []):
            filename = f.get("filename") or ""
            if not FILE_RE.match(filename) or not self.serves(name, versions, filename):
                continue
            entry = {"filename": filename, "url": f"../../files/{name}/{filename}",
                     "hashes": f.get("hashes") or {}}
            for key in ("requires-python", "yanked"):
                if f.get(key) not in (None, False, ""):
                    entry[key] = f[key]
            files.append(entry)
        if _wants_json(request):
            return web.json_response({"meta": {"api-version": "1.0"}, "name": name,
                                      "files": files}, content_type=JSON_TYPE)
        links = []
        for f in files:
            frag = "".join(f"#{k}={v}" for k, v in list(f["hashes"].items())[:1])
            rp = (f' data-requires-python="{html.escape(f["requires-python"])}"'
                  if f.get("requires-python") else "")
            links.append(f'<a href="{html.escape(f["url"])}{frag}"{rp}>'
                         f'{html.escape(f["filename"])}</a><br/>')
        return web.Response(text=_page(f"Links for {name}", "\n".join(links)),
                            content_type="text/html")

    async def file(self, request: web.Request) -> web.StreamResponse:
        project = self.project_of(request)
        name, versions = self.pinned(project, request.match_info["name"])
        filename = request.match_info["filename"]
        if not FILE_RE.match(filename) or not self.serves(name, versions, filename):
            log.info("refused: %s is not a file project %s's list pins", filename, project)
            raise web.HTTPNotFound(text=f"ecluse mirror: {filename} is not a pinned file of "
                                   f"{name} for project {project}\n")
        async with self._session().get(f"{self.backend}/index/{name}/{filename}") as r:
            if r.status != 200:
                raise web.HTTPBadGateway(text=f"ecluse mirror: the backend answered "
                                         f"{r.status} for {filename}\n")
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            if r.content_length is not None:
                resp.content_length = r.content_length
            await resp.prepare(request)
            async for chunk in r.content.iter_chunked(1 << 16):
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    # ------------------------------------------------------------ app

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=900, sock_connect=10), auto_decompress=True)
        return self.session

    async def _close(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{token}/simple/", self.root)
        app.router.add_get("/{token}/simple/{name}/", self.project)
        app.router.add_get("/{token}/files/{name}/{filename}", self.file)
        app.on_cleanup.append(self._close)
        return app


def _wants_json(request: web.Request) -> bool:
    return JSON_TYPE in request.headers.get("Accept", "")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" "
            f"content=\"1.0\"><title>{html.escape(title)}</title></head>\n<body>\n"
            f"{body}\n</body></html>\n")
