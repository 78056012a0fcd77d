"""Import requests in the airlock's API and pages (``ecluse.airlock.ingress``).

API (``…/api/v1/imports``, JSON): list and open imports, upload a file (``PUT`` of the raw
bytes), remove one, submit, withdraw, approve, reject. Pages (``…/imports``): the list, a
form to open one with its files (multipart), and each import with its files' verdicts and
the decision form. Members open imports with their browser session only; an
``Authorization`` token (what a workspace holds) is refused for them by the service.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from jupyterhub.utils import url_path_join
from tornado import web

from ...i18n import N_
from ..errors import InvalidInput, NotFound
from .api import APIHandler
from .base import BaseHandler
from .openapi import SCHEMAS, errors, json_body, ok
from .ui import ACTIONS, DECISIONS

IMP = r"(?P<import_id>[A-Za-z0-9_-]{1,40})"  # the service says 404 to a bad id

#: what the import pages show of an import's state, its files' verdicts and the kind of
#: import, and the words of their flash messages (translated where they are shown)
IMPORT_STATE_NAMES = {
    "open": N_("open (not yet submitted)"), "submitted": N_("submitted"),
    "approved": N_("approved"), "delivered": N_("delivered"), "rejected": N_("rejected"),
    "withdrawn": N_("withdrawn"),
}
VERDICT_NAMES = {"accepted": N_("accepted"), "refused": N_("refused")}
IMPORT_ACTIONS = {**ACTIONS, **DECISIONS, "files": N_("files added")}
IMPORT_ACTION_LABELS = {"submit": N_("Submit"), "withdraw": N_("Withdraw"),
                        "approve": N_("Approve"), "reject": N_("Reject")}
IMPORT_TEMPLATE_VARS = {"import_state_names": IMPORT_STATE_NAMES,
                        "verdict_names": VERDICT_NAMES,
                        "import_action_labels": IMPORT_ACTION_LABELS}

SCHEMAS.update({
    "NewImport": {"type": "object", "required": ["project", "title", "justification"],
                  "properties": {"project": {"type": "string"}, "title": {"type": "string"},
                                 "justification": {"type": "string"},
                                 "code": {"type": "boolean", "default": False,
                                          "description": "a code import: scripts, "
                                          "notebooks with code, a git bundle"}}},
    "ImportFile": {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "sha256": {"type": "string"},
        "size": {"type": "integer"}, "kind": {"type": "string"},
        "verdict": {"type": "string", "enum": ["accepted", "refused"]},
        "reasons": {"type": "array", "items": {"type": "string"}}}},
    "Import": {"type": "object", "properties": {
        "id": {"type": "string"}, "project": {"type": "string"},
        "requester": {"type": "string"}, "source": {"type": "string",
                                                    "enum": ["upload", "load"]},
        "code": {"type": "boolean"}, "title": {"type": "string"},
        "state": {"type": "string", "enum": ["open", "submitted", "approved", "delivered",
                                             "rejected", "withdrawn"]},
        "inbox": {"type": "string", "nullable": True},
        "files": {"type": "array", "items": {"$ref": "#/components/schemas/ImportFile"}},
        "actions": {"type": "array", "items": {"type": "string"}}}},
    "ImportList": {"type": "object", "properties": {
        "imports": {"type": "array", "items": {"$ref": "#/components/schemas/Import"}}}},
    "ImportDecision": {"type": "object", "properties": {"comment": {"type": "string"}}},
})


class _Ingress:
    """The service's import requests (404 where the deployment runs none)."""

    @property
    def ingress(self) -> Any:
        found = getattr(self.service, "ingress", None)  # type: ignore[attr-defined]
        if found is None:
            raise NotFound(N_("import requests are not enabled on this airlock"))
        return found

    def via_token(self) -> bool:
        return "Authorization" in self.request.headers  # type: ignore[attr-defined]


class ImportsHandler(_Ingress, APIHandler):
    openapi = {
        "get": {"summary": "Import requests you may see (yours, your projects', those you "
                "may approve)",
                "parameters": [{"name": "state", "in": "query", "schema": {"type": "string"}},
                               {"name": "project", "in": "query",
                                "schema": {"type": "string"}}],
                "responses": {**ok("ImportList", "The import requests."), **errors(404)}},
        "post": {"summary": "Open an import request (members: with a browser session, from "
                 "outside the workspace; staff: any project)",
                 "requestBody": json_body("NewImport"),
                 "responses": {**ok("Import", "Opened.", 201), **errors(400, 404)}},
    }

    async def get(self) -> None:
        me = self.require_identity()
        rows = await self.run(self.ingress.list, me,
                              state=self.get_query_argument("state", None),
                              project=self.get_query_argument("project", None))
        self.send({"imports": rows})

    async def post(self) -> None:
        me = self.require_identity()
        body = self.json_body()
        unknown = set(body) - {"project", "title", "justification", "code"}
        if unknown:
            raise InvalidInput(f"body: unknown field {sorted(unknown)[0]!r}")
        data = await self.run(self.ingress.create, me, project=body.get("project"),
                              title=body.get("title"), justification=body.get("justification"),
                              code=body.get("code", False), via_token=self.via_token())
        self.set_header("Location", self.request.path.rstrip("/") + "/" + data["id"])
        self.send(data, 201)


class ImportHandler(_Ingress, APIHandler):
    openapi = {"get": {"summary": "One import request with its files' verdicts",
                       "responses": {**ok("Import", "The import request."), **errors(404)}}}

    async def get(self, import_id: str) -> None:
        me = self.require_identity()
        self.send(await self.run(self.ingress.get, me, import_id))


class ImportFileUpload(_Ingress, APIHandler):
    openapi = {"put": {"summary": "Upload one file (the raw bytes) into the quarantine; it "
                       "is checked at once",
                       "requestBody": {"required": True, "content": {
                           "application/octet-stream": {"schema": {"type": "string",
                                                                   "format": "binary"}}}},
                       "responses": {**ok("ImportFile", "Quarantined and checked (see "
                                          "verdict).", 201),
                                     **errors(400, 404, 409, 413, 422)}}}

    async def put(self, import_id: str, name: str) -> None:
        me = self.require_identity()
        body = self.request.body
        # tornado has percent-decoded the name (a "/" in it is refused by the service)
        data = await self.run_checking(self.ingress.add_file, me, import_id, name, [body])
        self.send(data, 201)


class ImportFileHandler(_Ingress, APIHandler):
    openapi = {"delete": {"summary": "Remove a file of an open import request",
                          "responses": {**ok(None, "Removed.", 204),
                                        **errors(404, 409)}}}

    async def delete(self, import_id: str, file_id: str) -> None:
        me = self.require_identity()
        await self.run(self.ingress.remove_file, me, import_id, int(file_id))
        self.set_status(204)
        self.finish()


class ImportActionHandler(_Ingress, APIHandler):
    openapi = {"post": {"summary": "submit, withdraw (the requester), approve or reject "
                        "(staff or the project's data owners, never the requester; a "
                        "rejection needs a comment). An approval delivers the files to "
                        "/project/inbox/<request>.",
                        "requestBody": json_body("ImportDecision", required=False),
                        "responses": {**ok("Import", "The import request after the action."),
                                      **errors(400, 404, 409, 422, 503)}}}

    async def post(self, import_id: str, action: str) -> None:
        me = self.require_identity()
        body = self.json_body() if self.request.body else {}
        self.send(await self.run(_act(self.ingress, action), me, import_id,
                                 body.get("comment", "")))


def _act(ingress: Any, action: str) -> Any:
    if action in ("approve", "reject"):
        return lambda me, iid, comment: ingress.decide(me, iid, action, comment)
    if action == "submit":
        return lambda me, iid, comment: ingress.submit(me, iid)
    return lambda me, iid, comment: ingress.withdraw(me, iid)


# ---------------------------------------------------------------- pages


class ImportsPage(_Ingress, BaseHandler):
    def url(self, *parts: str) -> str:
        return url_path_join(self.settings["airlock_prefix"], *parts)

    @web.authenticated
    async def get(self) -> None:
        me = self.require_identity()
        rows = await self.run(self.ingress.list, me)
        projects = sorted(p for p in self.ingress.projects if me.is_member(p) or me.is_staff)
        self.finish(self.render_template("imports.html", imports=rows, projects=projects,
                                         flash=self.get_query_argument("flash", ""),
                                         **IMPORT_TEMPLATE_VARS))

    @web.authenticated
    async def post(self) -> None:
        """Open an import with the files of the form (multipart)."""
        me = self.require_identity()
        data = await self.run(
            self.ingress.create, me, project=self.get_body_argument("project", ""),
            title=self.get_body_argument("title", ""),
            justification=self.get_body_argument("justification", ""),
            code=self.get_body_argument("code", "") == "true", via_token=self.via_token())
        for f in self.request.files.get("file", []):
            await self.run_checking(self.ingress.add_file, me, data["id"], f["filename"],
                                    [f["body"]])
        self.redirect(self.url("imports", data["id"]))


class ImportPage(ImportsPage):
    @web.authenticated
    async def get(self, import_id: str) -> None:  # type: ignore[override]
        me = self.require_identity()
        imp = await self.run(self.ingress.get, me, import_id)
        self.finish(self.render_template("import.html", imp=imp,
                                         flash=self.get_query_argument("flash", ""),
                                         **IMPORT_TEMPLATE_VARS))

    @web.authenticated
    async def post(self, import_id: str, action: str) -> None:  # type: ignore[override]
        me = self.require_identity()
        if action == "files":
            for f in self.request.files.get("file", []):
                await self.run_checking(self.ingress.add_file, me, import_id, f["filename"],
                                        [f["body"]])
        else:
            await self.run(_act(self.ingress, action), me, import_id,
                           self.get_body_argument("comment", ""))
        self.redirect(self.url("imports", import_id) + "?flash=" + quote(
            self._("done: %(action)s", action=self._(IMPORT_ACTIONS.get(action, action)))))


def ingress_api_routes(base: str) -> list[tuple]:
    """The API routes (``base``: ``…/api/v1``), listed before the API's catch-all."""
    return [
        (base + r"/imports/?", ImportsHandler),
        (base + rf"/imports/{IMP}", ImportHandler),
        (base + rf"/imports/{IMP}/files/(?P<name>[^/]{{1,1024}})", ImportFileUpload),
        (base + rf"/imports/{IMP}/file-ids/(?P<file_id>[0-9]{{1,12}})", ImportFileHandler),
        (base + rf"/imports/{IMP}/(?P<action>submit|withdraw|approve|reject)",
         ImportActionHandler),
    ]


def ingress_ui_routes(prefix: str) -> list[tuple]:
    p = prefix.rstrip("/")
    return [
        (p + r"/imports/?", ImportsPage),
        (p + rf"/imports/{IMP}", ImportPage),
        (p + rf"/imports/{IMP}/(?P<action>files|submit|withdraw|approve|reject)", ImportPage),
    ]
