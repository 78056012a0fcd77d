"""REST API of the airlock (``/services/airlock/api/v1/...``), JSON in and out.

Thin handlers over :class:`~ecluse.airlock.service.AirlockService`; see
``docs/airlock.md`` for the reference. Errors are
``{"error": {"code", "status", "message"}}`` with the HTTP status of the
domain exception.
"""

from __future__ import annotations

import re
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any
from urllib.parse import unquote

from python_multipart.multipart import MultipartParser, parse_options_header
from tornado import web

from ..errors import AirlockError, InvalidInput, PermissionDenied, QuotaExceeded, TooLarge
from ..rules import FILE_ACCESS, FINAL_STATES, TRANSITIONS, VERDICT_RULES, State
from ..storage import StagingWriter
from .base import REQ, BaseHandler
from .openapi import build_spec, errors, json_body, ok


class APIHandler(BaseHandler):
    """JSON in and out; no login redirect (401 instead)."""

    api = True


class MeHandler(APIHandler):
    openapi = {"get": {"summary": "Who you are: groups, projects, roles",
                       "responses": {**ok("Me", "You."), **errors()}}}

    async def get(self) -> None:
        me = self.require_identity()
        self.send(
            {
                "name": me.name,
                "groups": sorted(me.groups),
                "projects": sorted(p for p in self.service.projects if me.is_member(p)),
                "output_checker": me.is_checker,
                "staff": me.is_staff,
            }
        )


class RulesHandler(APIHandler):
    """The state machine as data (for the workspace extension and docs)."""

    openapi = {"get": {"summary": "The request state machine, verdict rules and file access",
                       "responses": {**ok("Rules", "The rules."), **errors()}}}

    async def get(self) -> None:
        self.require_identity()
        self.send(
            {
                "states": [s.value for s in State],
                "final_states": sorted(s.value for s in FINAL_STATES),
                "transitions": [
                    {
                        "action": t.action.value, "from": t.source.value, "to": t.target.value,
                        "actors": sorted(a.value for a in t.actors), "event": t.event,
                    }
                    for t in TRANSITIONS
                ],
                "verdicts": {
                    v.value: {"approvable": ok, "needs_override_reason": reason}
                    for v, (ok, reason) in VERDICT_RULES.items()
                },
                "required_approvals": self.service.settings.required_approvals,
                "file_access": [
                    {
                        "view": a.view.value, "states": sorted(st.value for st in a.states),
                        "actors": sorted(x.value for x in a.actors),
                        "current_version_only": a.current_version_only,
                    }
                    for a in FILE_ACCESS
                ],
            }
        )


class RequestsHandler(APIHandler):
    batch_export = frozenset({"POST"})  # the batch service, for staff (base.py)
    openapi = {
        "get": {
            "summary": "List requests",
            "parameters": [
                {"name": "scope", "in": "query", "schema": {
                    "type": "string", "enum": ["mine", "project", "review", "all"],
                    "default": "mine"},
                 "description": "mine: yours; project: your projects'; review: awaiting your "
                 "review (checkers); all: every non-draft request (checkers, staff)."},
                {"name": "state", "in": "query",
                 "schema": {"type": "string", "enum": [v.value for v in State]}},
                {"name": "project", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 200}},
            ],
            "responses": {**ok("RequestList", "The requests."), **errors(400)},
        },
        "post": {
            "summary": "Create a draft request in one of your projects",
            "requestBody": json_body("NewRequest"),
            "responses": {**ok("Request", "Created (Location: its URL).", 201),
                          **errors(400, 404)},
        },
    }

    async def get(self) -> None:
        me = self.require_identity()
        try:
            limit = int(self.get_query_argument("limit", "200"))
        except ValueError:
            raise InvalidInput("limit: expected an integer") from None
        rows = await self.run(
            self.service.list_requests, me,
            scope=self.get_query_argument("scope", "mine"),
            state=self.get_query_argument("state", None),
            project=self.get_query_argument("project", None),
            limit=limit,
        )
        self.send({"requests": rows})

    async def post(self) -> None:
        me = self.require_identity()
        body = self.json_body()
        unknown = set(body) - {"project", "title", "justification"}
        if unknown:
            raise InvalidInput(f"body: unknown field {sorted(unknown)[0]!r}")
        data = await self.run(
            self.service.create_request, me, project=body.get("project"),
            title=body.get("title"), justification=body.get("justification"),
        )
        self.set_header("Location", self.request.path.rstrip("/") + "/" + data["id"])
        self.send(data, 201)


class RequestHandler(APIHandler):
    batch_export = frozenset({"GET"})  # the batch service, for staff (base.py)
    openapi = {"get": {"summary": "One request: files as your role may see them, reviews, "
                       "history, the actions open to you",
                       "responses": {**ok("Request", "The request."), **errors(404)}}}

    async def get(self, request_id: str) -> None:
        me = self.require_identity()
        self.send(await self.run(self.service.get_request, me, request_id))


class ActionHandler(APIHandler):
    """POST .../submit | resubmit | withdraw | release | release_partial  {"comment": "..."}

    ``release_partial`` releases only the files with their own approvals; the others
    must be held (changes requested, or blocked); its comment is required."""

    batch_export = frozenset({"POST"})  # the batch service, for staff (base.py)
    openapi = {"post": {"summary": "Submit, resubmit, withdraw, release, or release only the "
                        "approved files (release_partial, comment required)",
                        "description": "Submit and resubmit are refused (409, code "
                        "`still_checking`) while a file of the request is still being "
                        "checked.",
                        "requestBody": json_body("Comment", required=False),
                        "responses": {**ok("Request", "The request after the action."),
                                      **errors(400, 404, 409, 422, 503)}}}

    async def post(self, request_id: str, action: str) -> None:
        me = self.require_identity()
        if self.on_behalf_of and action != "submit":
            raise PermissionDenied(f"the {self.on_behalf_of} service may submit a request, "
                                   f"not {action} it")
        body = self.json_body()
        fn = self.action(action)
        self.send(await self.run_checking(fn, me, request_id, body.get("comment", "")))


class ReviewHandler(APIHandler):
    """POST .../reviews  {"decision", "comment", "overrides": {file name: reason}}"""

    openapi = {"post": {"summary": "Record your review of the current version (checkers)",
                        "requestBody": json_body("Review"),
                        "responses": {**ok("Request", "Recorded; the request.", 201),
                                      **errors(400, 404, 409, 422, 503)}}}

    async def post(self, request_id: str) -> None:
        me = self.require_identity()
        body = self.json_body()
        data = await self.run(
            self.service.review, me, request_id, decision=body.get("decision"),
            comment=body.get("comment", ""), overrides=body.get("overrides"),
        )
        self.send(data, 201)


class FileHandler(APIHandler):
    """PATCH .../files/<id>  {"context", "controls", "supporting"} — the requester
    describes a file of the current version (draft or changes requested): what it is,
    the statistical controls applied, whether it is a supporting file (seen by the
    checkers, never released). A ``fail``/``review`` file to release needs context and
    controls before the request can be submitted."""

    batch_export = frozenset({"PATCH"})  # the batch service, for staff (base.py)
    openapi = {"patch": {"summary": "Set a file's context, statistical controls and "
                         "supporting mark (the requester)",
                         "requestBody": json_body("FileDescription"),
                         "responses": {**ok("File", "The file."),
                                       **errors(400, 404, 409, 422)}}}

    async def patch(self, request_id: str, file_id: str) -> None:
        me = self.require_identity()
        body = self.json_body()
        unknown = sorted(set(body) - {"context", "controls", "supporting"})
        if unknown:
            raise InvalidInput(f"{unknown[0]}: unknown field (expected context, controls, "
                               "supporting)")
        self.send(await self.run(
            self.service.describe_file, me, request_id, int(file_id),
            context=body.get("context"), controls=body.get("controls"),
            supporting=body.get("supporting")))


class FileDecisionHandler(APIHandler):
    """POST .../files/<id>/decision  {"decision": "approve" | "request_changes", "comment"}
    — one checker's decision on one file of the current version."""

    openapi = {"post": {"summary": "Approve one file, or request changes to it (checkers; "
                        "a comment is required to request changes and to approve a file "
                        "that needs an override reason)",
                        "requestBody": json_body("FileDecision"),
                        "responses": {**ok("Request", "Recorded; the request.", 201),
                                      **errors(400, 404, 409, 422, 503)}}}

    async def post(self, request_id: str, file_id: str) -> None:
        me = self.require_identity()
        body = self.json_body()
        data = await self.run(
            self.service.decide_file, me, request_id, int(file_id),
            decision=body.get("decision"), comment=body.get("comment", ""),
        )
        self.send(data, 201)


class CompareHandler(APIHandler):
    """GET .../compare?from=N&to=M — what changed between two versions (default: the
    one before the current one and the current one), from the previews only."""

    openapi = {"get": {"summary": "Compare two versions: files added, removed, changed, and "
                       "for tables the cells changed, added and removed (from the previews; "
                       "never the files' bytes)",
                       "parameters": [
                           {"name": "from", "in": "query", "schema": {"type": "integer"}},
                           {"name": "to", "in": "query", "schema": {"type": "integer"}},
                       ],
                       "responses": {**ok("Comparison", "The comparison."),
                                     **errors(400, 403, 404)}}}

    async def get(self, request_id: str) -> None:
        me = self.require_identity()
        self.send(await self.run(
            self.service.compare_versions, me, request_id,
            self.get_query_argument("from", None), self.get_query_argument("to", None)))


class FileContentHandler(APIHandler):
    """GET .../files/<id>/content — the bytes, for the requester of a released request only.

    Checkers review through the previews in ``GET .../requests/<id>``."""

    openapi = {"get": {"summary": "A released file's bytes (the requester)",
                       "responses": {**ok("binary", "The file (X-Airlock-SHA256: its sha256).",
                                          media="application/octet-stream"),
                                     **errors(404, 409)}}}

    async def get(self, request_id: str, file_id: str) -> None:
        me = self.require_identity()
        content = await self.run(self.service.open_file, me, request_id, int(file_id))
        disposition = "attachment" if content.purpose == "download" else "inline"
        await self.send_file(content, disposition, {"X-Airlock-SHA256": content.sha256})


class ProposalHandler(APIHandler):
    """GET .../files/<id>/proposal — the fixed version the airlock proposes for a ``fail``
    table (``text``, ``notes``, ``method``, ``verdict``; or ``error``): the requester only."""

    openapi = {"get": {"summary": "The fixed version proposed for a failing table (the requester)",
                       "responses": {**ok("Proposal", "The proposal."), **errors(404)}}}

    async def get(self, request_id: str, file_id: str) -> None:
        me = self.require_identity()
        self.send(await self.run(self.service.get_proposal, me, request_id, int(file_id)))


class AcceptProposalHandler(APIHandler):
    """POST .../files/<id>/proposal/accept — put the proposal in place of the file in the
    request's current version (draft or changes requested), checked again: 201, the file."""

    openapi = {"post": {"summary": "Put the proposal in place of the file, checked again",
                        "responses": {**ok("File", "The new file.", 201),
                                      **errors(400, 404, 409)}}}

    async def post(self, request_id: str, file_id: str) -> None:
        me = self.require_identity()
        self.json_body()
        self.send(await self.run_checking(self.service.accept_proposal, me, request_id,
                                          int(file_id)),
                  201)


class RecordHandler(APIHandler):
    """GET .../record — the release record (JSON), byte for byte as hashed into the audit
    log: for the project's members, checkers and staff; 409 before release."""

    openapi = {"get": {"summary": "The release record (JSON, as hashed into the audit log)",
                       "responses": {**ok("ReleaseRecord", "The record."),
                                     **errors(404, 409)}}}

    async def get(self, request_id: str) -> None:
        me = self.require_identity()
        data = await self.run(self.service.get_record, me, request_id)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(data)


class PackageHandler(APIHandler):
    """GET .../package — the release package (zip), for the requester of a released
    request only (as the files' bytes)."""

    openapi = {"get": {"summary": "The release package: a zip of the files, the record, "
                       "SHA256SUMS, ACRO results.json and RO-Crate metadata (the requester)",
                       "responses": {**ok("binary", "The zip (X-Airlock-Record-SHA256: the "
                                          "record's sha256).", media="application/octet-stream"),
                                     **errors(404, 409)}}}

    async def get(self, request_id: str) -> None:
        me = self.require_identity()
        content = await self.run(self.service.release_package, me, request_id)
        await self.send_file(content, "attachment", {"X-Airlock-Record-SHA256": content.sha256})


@web.stream_request_body
class FilesHandler(APIHandler):
    """POST .../files — add a file, streamed to the staging area.

    Either a raw body (``Content-Type: application/octet-stream``) with the
    name in ``?filename=`` or an ``X-Filename`` header (percent-encoded UTF-8),
    or ``multipart/form-data`` with one file part. DELETE ``?filename=`` removes
    a file from the current version.
    """

    batch_export = frozenset({"POST"})  # the batch service, for staff (base.py)
    openapi = {
        "post": {
            "summary": "Add a file to the current version (streamed)",
            "parameters": [
                {"name": "filename", "in": "query", "schema": {"type": "string"},
                 "description": "The file's name (raw body); or the X-Filename header."},
                {"name": "X-Filename", "in": "header", "schema": {"type": "string"},
                 "description": "The file's name, percent-encoded UTF-8 (raw body)."},
                {"name": "supporting", "in": "query", "schema": {"type": "boolean"},
                 "description": "A supporting file: checkers see it, it is never released "
                 "(a replaced file keeps its mark when this is left out)."},
            ],
            "requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {"schema": {
                    "type": "object", "properties": {"file": {"type": "string",
                                                              "format": "binary"}}}},
            }},
            "description": "With background checks (`check_in_background`, the default) "
            "the answer comes once the bytes are stored, with the verdict `checking`; read "
            "the request until the file has its verdict. A request with a file still "
            "`checking` cannot be submitted (409, code `still_checking`).",
            "responses": {**ok("File", "Stored; the file (verdict `checking` until its "
                               "check ends, then its verdict).", 201),
                          **errors(400, 404, 409, 413, 422)},
        },
        "delete": {
            "summary": "Remove a file from the current version",
            "parameters": [{"name": "filename", "in": "query", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {**ok(None, "Removed.", 204), **errors(400, 404, 409)},
        },
    }

    writer: StagingWriter | None = None
    filename: str | None = None
    _parser: MultipartParser | None = None
    _upload_error: Exception | None = None

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method != "POST":
            self.request.connection.set_max_body_size(1024 * 1024)
            return
        try:
            await self._prepare_upload()
        except AirlockError as e:
            # answer once the body is in: a proxy (configurable-http-proxy) turns a
            # response sent mid-upload into a 503; drain at most 1 MiB for that (a
            # quota refusal drains the whole file, discarded, so its message arrives)
            self._upload_error = e
            if self.writer is not None:
                self.writer.abort()
            self._parser = None
            if isinstance(e, QuotaExceeded):
                return
            if not isinstance(e, TooLarge):
                self.request.connection.set_max_body_size(1024 * 1024)
            else:
                raise

    async def _prepare_upload(self) -> None:
        me = self.require_identity()
        conf = self.service.settings
        supporting = self.get_query_argument("supporting", None)
        if supporting is not None and supporting.strip().lower() not in (
                "true", "1", "yes", "on", "false", "0", "no", "off", ""):
            raise InvalidInput("supporting: expected true or false")
        ctype, params = parse_options_header(self.request.headers.get("Content-Type", ""))
        request_id = self.path_kwargs["request_id"]
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > conf.max_file_bytes + 64 * 1024:
            raise TooLarge(f"file: larger than the limit of {conf.max_file_bytes} bytes")
        self.request.connection.set_max_body_size(conf.max_file_bytes + 64 * 1024)
        if ctype == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise InvalidInput("body: multipart/form-data without a boundary")
            self._multipart = _MultipartFile(self)
            self._parser = MultipartParser(boundary, self._multipart.callbacks())
            # the name arrives with the part: pre-flight the request without it
            await self.run(self.service.check_can_add_file, me, request_id, "pending.bin")
        else:
            name = self.get_query_argument("filename", None)
            if name is None and self.request.headers.get("X-Filename"):
                name = unquote(self.request.headers["X-Filename"], errors="strict")
            if name is None:
                raise InvalidInput(
                    "filename: missing (give ?filename=, an X-Filename header or a "
                    "multipart/form-data body)"
                )
            raw = int(length) if length and length.isdigit() else None
            self.filename, self.writer = await self.run(
                self.service.start_upload, me, request_id, name, expected_bytes=raw)

    def data_received(self, chunk: bytes) -> None:
        if self._upload_error is not None:
            return
        try:
            if self._parser is not None:
                self._parser.write(chunk)
            elif self.writer is not None:
                self.writer.write(chunk)
        except Exception as e:  # reported from post() with its proper status
            self._upload_error = e
            if self.writer is not None:
                self.writer.abort()

    def on_finish(self) -> None:
        if self.writer is not None and not self.writer.closed:
            self.writer.abort()

    def on_connection_close(self) -> None:
        self.on_finish()

    async def post(self, request_id: str) -> None:
        me = self.require_identity()
        if self._upload_error is not None:
            raise self._upload_error
        if self._parser is not None:
            self._parser.finalize()
            if self._upload_error is not None:
                raise self._upload_error
            if self.writer is None or self.filename is None:
                raise InvalidInput("body: the multipart body has no file part with a filename")
        assert self.writer is not None and self.filename is not None
        writer, name = self.writer, self.filename
        supporting = self.get_query_argument("supporting", None)

        def store() -> dict[str, Any]:  # one trip to a worker thread, not two
            sha, size = writer.commit()
            return self.service.attach_file(me, request_id, name, sha, size,
                                            supporting=supporting)

        # with background checks the file is recorded ``checking`` and checked afterwards
        attach = self.run if self.service.checks is not None else self.run_checking
        self.send(await attach(store), 201)

    async def delete(self, request_id: str) -> None:
        me = self.require_identity()
        name = self.get_query_argument("filename", None)
        if name is None:
            raise InvalidInput("filename: missing (?filename=NAME)")
        await self.run(self.service.remove_file, me, request_id, name)
        self.set_status(204)
        self.finish()


class MultipartParts:
    """The header side of a streamed ``multipart/form-data`` body (``python_multipart``'s
    callbacks): each part's headers, and its ``Content-Disposition`` filename parameter.
    Subclasses say what becomes of a part (``headers_finished``, ``part_data``,
    ``part_end``)."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self._field = b""
        self._value = b""
        self.active = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda d, s, e: self._acc("_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._acc("_value", d[s:e]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def _acc(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def part_begin(self) -> None:
        self.headers = {}
        self.active = False

    def header_end(self) -> None:
        self.headers[self._field.decode("latin-1").lower()] = self._value.decode("utf-8", "replace")
        self._field = self._value = b""

    def filename_param(self) -> str | None:
        """The part's ``filename`` parameter, decoded (``None`` for a part that is not a
        file): a quoted name as sent (browsers send UTF-8), an RFC 2231 one
        (``filename*=UTF-8''r%C3%A9sultats.csv``) in the charset it names."""
        disp = Message()
        disp["content-disposition"] = self.headers.get("content-disposition", "")
        filename = disp.get_param("filename", header="content-disposition")
        if filename is None:
            return None
        return _strip_quotes(collapse_rfc2231_value(filename))

    def headers_finished(self) -> None:
        raise NotImplementedError

    def part_data(self, data: bytes, start: int, end: int) -> None:
        raise NotImplementedError

    def part_end(self) -> None:
        raise NotImplementedError


class _MultipartFile(MultipartParts):
    """Streams the first part that has a filename into the handler's staging writer."""

    def __init__(self, handler: FilesHandler) -> None:
        super().__init__()
        self.h = handler
        self.done = False

    def headers_finished(self) -> None:
        if self.done:
            return
        filename = self.filename_param()
        if filename is None:
            return
        me = self.h.require_identity()
        self.h.filename, self.h.writer = self.h.service.start_upload(
            me, self.h.path_kwargs["request_id"], filename)
        self.active = True

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.active and self.h.writer is not None:
            self.h.writer.write(data[start:end])

    def part_end(self) -> None:
        if self.active:
            self.active = False
            self.done = True


def _strip_quotes(v: str) -> str:
    return re.sub(r'^"(.*)"$', r"\1", v)


class OpenAPIHandler(APIHandler):
    """GET .../openapi.json — this API's OpenAPI 3 document (no sign-in needed: it holds
    nothing but the routes and their shapes). Built once from the route table."""

    openapi = {"get": {"summary": "This document (no sign-in needed)", "security": [],
                       "responses": ok(None, "The OpenAPI 3 document.")}}

    def initialize(self, document: dict[str, Any]) -> None:
        self.document = document

    async def get(self) -> None:
        self.send(self.document)


class NotFoundAPI(APIHandler):
    openapi_hidden = True

    async def get(self, *args: Any) -> None:
        raise web.HTTPError(404, "no such API endpoint")

    post = put = delete = get


def api_handlers(prefix: str) -> list[tuple[str, type, dict] | tuple[str, type]]:
    from .check import CheckHandler  # deferred: it builds on this module's handlers
    from .ingress import ingress_api_routes  # deferred: ingress imports this module

    base = prefix.rstrip("/") + "/api/v1"
    document: dict[str, Any] = {}
    routes: list[Any] = [
        (base + r"/openapi\.json", OpenAPIHandler, {"document": document}),
        (base + r"/me", MeHandler),
        (base + r"/rules", RulesHandler),
        (base + r"/requests/?", RequestsHandler),
        (base + rf"/requests/{REQ}", RequestHandler),
        (base + rf"/requests/{REQ}/files", FilesHandler),
        (base + rf"/requests/{REQ}/files/(?P<file_id>[0-9]{{1,12}})", FileHandler),
        (base + rf"/requests/{REQ}/files/(?P<file_id>[0-9]{{1,12}})/content", FileContentHandler),
        (base + rf"/requests/{REQ}/files/(?P<file_id>[0-9]{{1,12}})/proposal", ProposalHandler),
        (base + rf"/requests/{REQ}/files/(?P<file_id>[0-9]{{1,12}})/proposal/accept",
         AcceptProposalHandler),
        (base + rf"/requests/{REQ}/files/(?P<file_id>[0-9]{{1,12}})/decision",
         FileDecisionHandler),
        (base + rf"/requests/{REQ}/reviews", ReviewHandler),
        (base + rf"/requests/{REQ}/compare", CompareHandler),
        (base + rf"/requests/{REQ}/record", RecordHandler),
        (base + rf"/requests/{REQ}/package", PackageHandler),
        (
            base + rf"/requests/{REQ}/(?P<action>submit|resubmit|withdraw|release|release_partial)",
            ActionHandler,
        ),
        (base + r"/check", CheckHandler),
        *ingress_api_routes(base),  # import requests (ingress.py)
        (base + r"/.*", NotFoundAPI),
    ]
    document.update(build_spec(routes, base))
    return routes
