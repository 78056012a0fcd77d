"""The export API of the workspace: ``/ecluse/…``, the one sanctioned way out.

* ``POST /ecluse/export`` ``{"paths": [...], "title", "justification", "submit": true,
  "files": {path: {"context", "controls", "supporting"}}}``:
  checks every path (:func:`~ecluse_workspace.policy.open_all_for_export`),
  creates an airlock request for this workspace's project, streams each file
  to the airlock with the server's own token (the user's: it carries the
  ``access:services!service=airlock`` scope), gives each file the context,
  statistical controls and supporting mark ``files`` holds for its path,
  submits it and answers
  ``201 {"id", "state", "files": [{name, size, verdict, supporting, needs_context}],
  "url"}``. When the airlock refuses the submission because a ``fail``/``review``
  file lacks its context or controls, the request stays a draft (every file in
  it) and the answer says why in ``submit_refused``: complete it on the airlock page.
  The airlock answers each upload before its check (verdict ``checking``): the
  export reads the request until every file has its verdict, then submits.
  With ``"progress": true`` the answer is ``200`` ``application/x-ndjson``, one JSON
  object a line as the export goes: ``{"files": [{path, name, size}]}``, then per
  file ``{"path", "sent", "size"}`` while its bytes go, ``{"path", "verdict"}``
  (``checking``, then its verdict), and last ``{"result": <the answer above>}`` or
  ``{"error": {...}}`` (what the export dialog shows as progress).
* ``GET /ecluse/requests``: the project's requests with each file's verdict
  (what the Airlock panel shows).
* ``GET /ecluse/config``: project and airlock page for the panel.

Errors are ``{"error": {"code", "status", "message"}}``; the message is for
the researcher.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import quote, urlencode

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Integer, List, Unicode, default
from traitlets.config import LoggingConfigurable

from .policy import ExportFile, ExportLimits, Refused, open_all_for_export

AUTH_RESOURCE = "ecluse"
CHUNK = 1024 * 1024
#: the verdict of a file the airlock has stored but not checked yet
CHECKING = "checking"


class AirlockError(Refused):
    pass


class ExportSettings(LoggingConfigurable):
    """Where the airlock is and how much one export may carry."""

    airlock_url = Unicode(
        help="Airlock base URL reachable from the workspace (default: $ECLUSE_AIRLOCK_URL)."
    ).tag(config=True)
    airlock_page_url = Unicode(
        help="Airlock pages as the browser reaches them (default: "
        "$JUPYTERHUB_BASE_URL + services/airlock/)."
    ).tag(config=True)
    project = Unicode(help="This workspace's project (default: $ECLUSE_PROJECT).").tag(
        config=True)
    allowed_roots = List(
        Unicode(),
        help="Folders files may be exported from (default: /project and $HOME).",
    ).tag(config=True)
    max_files = Integer(20, help="Most files in one export request.").tag(config=True)
    max_file_bytes = Integer(256 * 1024 * 1024, help="Largest file (bytes).").tag(config=True)
    max_total_bytes = Integer(512 * 1024 * 1024, help="Largest export (bytes).").tag(
        config=True)
    upload_timeout = Integer(900, help="Seconds one file upload may take.").tag(config=True)
    list_limit = Integer(30, help="Requests shown in the Airlock panel.").tag(config=True)

    @default("airlock_url")
    def _airlock_url(self) -> str:
        return os.environ.get("ECLUSE_AIRLOCK_URL", "")

    @default("airlock_page_url")
    def _page_url(self) -> str:
        base = os.environ.get("JUPYTERHUB_BASE_URL", "/") or "/"
        return base.rstrip("/") + "/services/airlock/"

    @default("project")
    def _project(self) -> str:
        return os.environ.get("ECLUSE_PROJECT", "")

    @default("allowed_roots")
    def _roots(self) -> list[str]:
        return ["/project", os.environ.get("HOME") or "/nonexistent"]

    def limits(self) -> ExportLimits:
        return ExportLimits(self.max_files, self.max_file_bytes, self.max_total_bytes)


class AirlockClient:
    """The airlock REST API, called with the workspace's own hub token."""

    def __init__(self, base_url: str, token: str, timeout: float):
        if not base_url:
            raise AirlockError(503, "no_airlock",
                               "This workspace has no airlock configured (ECLUSE_AIRLOCK_URL).")
        self.api = base_url.rstrip("/") + "/api/v1"
        self.token = token
        self.timeout = timeout
        self.http = AsyncHTTPClient()

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        headers = {"Authorization": f"token {self.token}"}
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if method == "POST" and body is None and "body_producer" not in kw:
            body = b""
        req = HTTPRequest(self.api + path, method=method, headers=headers | kw.pop("headers", {}),
                          body=body, request_timeout=kw.pop("timeout", 60),
                          connect_timeout=10, **kw)
        try:
            resp = await self.http.fetch(req)
        except HTTPClientError as e:
            raise _airlock_refusal(e) from None
        except OSError as e:
            raise AirlockError(502, "airlock_unreachable",
                               f"The airlock cannot be reached right now ({e}).") from None
        return json.loads(resp.body) if resp.body else None

    async def upload(self, request_id: str, f: ExportFile, supporting: bool = False,
                     on_sent: Any = None) -> dict:
        """Stream ``f`` to the airlock; ``on_sent(bytes sent)`` after each chunk."""
        loop = asyncio.get_running_loop()

        async def produce(write: Any) -> None:
            sent = 0
            while sent < f.size:
                chunk = await loop.run_in_executor(None, os.read, f.fd, min(CHUNK, f.size - sent))
                if not chunk:
                    raise AirlockError(409, "changed", f"{f.path} shrank while being sent.")
                sent += len(chunk)
                await write(chunk)
                if on_sent is not None:
                    await on_sent(sent)

        return await self.call(
            "POST", f"/requests/{quote(request_id)}/files?" + urlencode(
                {"filename": f.name, **({"supporting": "true"} if supporting else {})}),
            body_producer=produce,
            headers={"Content-Type": "application/octet-stream",
                     "Content-Length": str(f.size)},
            timeout=self.timeout,
        )


def _airlock_refusal(e: HTTPClientError) -> AirlockError:
    message = ""
    try:
        message = json.loads(e.response.body)["error"]["message"] if e.response else ""
    except (ValueError, KeyError, TypeError):
        pass
    if e.code >= 500 or e.code == 599:
        return AirlockError(502, "airlock_error",
                            f"The airlock could not take the request ({e.code}"
                            f"{': ' + message if message else ''}).")
    return AirlockError(e.code, "airlock_refused",
                        f"The airlock refused: {message or e.message}")


class EcluseHandler(APIHandler):
    """Common base: JSON errors ``{"error": {...}}`` from :class:`Refused`."""

    auth_resource = AUTH_RESOURCE

    @property
    def conf(self) -> ExportSettings:
        return self.settings["ecluse_export"]

    def client(self) -> AirlockClient:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        return AirlockClient(self.conf.airlock_url, token, self.conf.upload_timeout)

    def refuse(self, e: Refused) -> None:
        self.set_status(e.status)
        self.set_header("Content-Type", "application/json")
        self.finish({"error": {"code": e.code, "status": e.status, "message": e.message}})

    def page_url(self, request_id: str) -> str:
        return self.conf.airlock_page_url + f"requests/{quote(request_id)}"


class ConfigHandler(EcluseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish({"project": self.conf.project, "airlock_url": self.conf.airlock_page_url,
                     "limits": vars(self.conf.limits())})


class ExportHandler(EcluseHandler):
    #: the answer is a stream of progress lines (``"progress": true``), begun
    streaming = False

    @web.authenticated
    @authorized
    async def post(self) -> None:
        try:
            await self._export()
        except Refused as e:
            if self.streaming:
                await self.emit(error={"code": e.code, "status": e.status,
                                       "message": e.message})
                self.finish()
            else:
                self.refuse(e)

    async def emit(self, **event: Any) -> None:
        """One progress line (only when the export streams its progress)."""
        if self.streaming:
            self.write(json.dumps(event) + "\n")
            await self.flush()

    async def _wait_checked(self, client: AirlockClient, request_id: str,
                            uploaded: list[dict[str, Any]]) -> None:
        """Read the request until no file is ``checking`` (the airlock checks each upload
        after answering it), updating ``uploaded`` and telling each verdict."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.conf.upload_timeout
        delay = 0.2
        while any(u["verdict"] == CHECKING for u in uploaded):
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)
            current = {f["name"]: f for f in (await client.call(
                "GET", f"/requests/{quote(request_id)}")).get("files", [])}
            for u in uploaded:
                f = current.get(u["name"])
                if f is not None and f.get("verdict") != u["verdict"]:
                    u["verdict"] = f.get("verdict")
                    u["needs_context"] = bool(f.get("needs_context"))
                    await self.emit(path=u["path"], verdict=u["verdict"])
            if loop.time() > deadline and any(u["verdict"] == CHECKING for u in uploaded):
                raise Refused(504, "still_checking",
                              "The airlock is still checking the files after "
                              f"{self.conf.upload_timeout} s; try again later.")

    async def _export(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            raise Refused(400, "invalid_input", "The body must be a JSON object.") from None
        title = str(body.get("title") or "").strip()
        justification = str(body.get("justification") or "").strip()
        if not title:
            raise Refused(400, "invalid_input", "Give the export a title.")
        if not justification:
            raise Refused(400, "invalid_input",
                          "Say why these files must leave the project (justification).")
        if not self.conf.project:
            raise Refused(503, "no_project", "This workspace does not belong to a project.")
        described = _descriptions(body.get("files"), body.get("paths"))
        root = self.contents_manager.root_dir
        files = await asyncio.get_running_loop().run_in_executor(
            None, lambda: open_all_for_export(
                body.get("paths"), root_dir=root, allowed_roots=self.conf.allowed_roots,
                limits=self.conf.limits()))
        client = self.client()
        request_id = None
        if body.get("progress") is True:
            self.streaming = True
            self.set_status(200)
            self.set_header("Content-Type", "application/x-ndjson")
            self.set_header("Cache-Control", "no-store")
            self.set_header("X-Accel-Buffering", "no")
            await self.emit(files=[{"path": f.path, "name": f.name, "size": f.size}
                                   for f in files])
        try:
            created = await client.call("POST", "/requests", {
                "project": self.conf.project, "title": title, "justification": justification})
            request_id = created["id"]
            uploaded = []
            for f in files:
                about = described.get(f.path, {})

                async def sent(n: int, f: ExportFile = f) -> None:
                    await self.emit(path=f.path, sent=n, size=f.size)

                await self.emit(path=f.path, sent=0, size=f.size)
                model = await client.upload(request_id, f, bool(about.get("supporting")),
                                            on_sent=sent if self.streaming else None)
                await self.emit(path=f.path, verdict=model.get("verdict"))
                texts = {k: about[k] for k in ("context", "controls") if about.get(k)}
                if texts:
                    model = await client.call(
                        "PATCH", f"/requests/{quote(request_id)}/files/{int(model['id'])}",
                        texts)
                uploaded.append({"name": model.get("name", f.name), "path": f.path,
                                 "size": f.size, "verdict": model.get("verdict"),
                                 "sha256": model.get("sha256"),
                                 "supporting": bool(model.get("supporting")),
                                 "needs_context": bool(model.get("needs_context"))})
            await self._wait_checked(client, request_id, uploaded)
            state = created.get("state", "draft")
            refused = None
            if body.get("submit", True):
                try:
                    state = (await client.call("POST", f"/requests/{quote(request_id)}/submit",
                                               {}))["state"]
                except AirlockError as e:
                    if e.status != 422 or not any(u["needs_context"] for u in uploaded):
                        raise
                    # complete, but a failing file needs its context: kept as a draft
                    refused = e.message
        except BaseException:
            if request_id is not None:  # leave no half-made draft behind
                try:
                    await client.call("POST", f"/requests/{quote(request_id)}/withdraw",
                                      {"comment": "upload from the workspace failed"})
                except Exception:  # noqa: BLE001
                    self.log.warning("could not withdraw the draft %s", request_id)
            raise
        finally:
            for f in files:
                f.close()
        self.log.info("export request %s: %d files for %s", request_id, len(uploaded),
                      self.conf.project)
        answer = {"id": request_id, "state": state, "files": uploaded,
                  "url": self.page_url(request_id)}
        if refused:
            answer["submit_refused"] = refused
        if self.streaming:
            await self.emit(result=answer)
            self.finish()
            return
        self.set_status(201)
        self.finish(answer)


def _descriptions(files: Any, paths: Any) -> dict[str, dict[str, Any]]:
    """``{path: {"context", "controls", "supporting"}}`` of the export body, checked."""
    if files is None:
        return {}
    if not isinstance(files, dict):
        raise Refused(400, "invalid_input",
                      "files: expected an object mapping each path to its context, "
                      "controls and supporting mark.")
    given = set(paths) if isinstance(paths, list) else set()
    out: dict[str, dict[str, Any]] = {}
    for path, about in files.items():
        if path not in given:
            raise Refused(400, "invalid_input", f"files: {path!r} is not among the paths.")
        if not isinstance(about, dict) or set(about) - {"context", "controls", "supporting"}:
            raise Refused(400, "invalid_input", f"files: {path!r}: expected context, "
                          "controls and supporting only.")
        for key in ("context", "controls"):
            if not isinstance(about.get(key, ""), str):
                raise Refused(400, "invalid_input", f"files: {path!r}: {key} must be text.")
        if not isinstance(about.get("supporting", False), bool):
            raise Refused(400, "invalid_input",
                          f"files: {path!r}: supporting must be true or false.")
        out[path] = {k: (v.strip() if isinstance(v, str) else v) for k, v in about.items()}
    return out


class RequestsHandler(EcluseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        try:
            client = self.client()
            query = urlencode({"scope": "project", "project": self.conf.project,
                               "limit": self.conf.list_limit})
            listing = await client.call("GET", f"/requests?{query}")
            summaries = listing.get("requests", [])
            details = await asyncio.gather(
                *(client.call("GET", f"/requests/{quote(s['id'])}") for s in summaries),
                return_exceptions=True)
        except Refused as e:
            self.refuse(e)
            return
        out = []
        for s, d in zip(summaries, details, strict=True):
            item = {k: s.get(k) for k in ("id", "title", "state", "requester", "version",
                                          "approvals", "required_approvals", "updated_at")}
            item["url"] = self.page_url(s["id"])
            if isinstance(d, dict):
                item["files"] = [{"name": f["name"], "verdict": f["verdict"], "size": f["size"],
                                  "supporting": bool(f.get("supporting")),
                                  "needs_context": bool(f.get("needs_context"))}
                                 for f in d.get("files", [])]
                item["comments"] = [
                    {"reviewer": r["reviewer"], "decision": r["decision"],
                     "comment": r.get("comment", "")}
                    for r in d.get("reviews", []) if r.get("comment")]
            else:
                item["files"], item["comments"] = [], []
            out.append(item)
        self.finish({"project": self.conf.project, "requests": out})
