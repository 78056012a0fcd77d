"""``POST /api/v1/check?project=<slug>``: check files before export, keep nothing.

A dry run (:mod:`ecluse.airlock.dryrun`): the body is an upload's —
``multipart/form-data`` with one or more file parts, or a raw body with the name
in ``?filename=`` / ``X-Filename`` — streamed to a private temporary folder, judged
by the checks, policy and ledger of a request of that project, and removed when
the call ends (answered, refused, failed or the connection closed). The same
limits as uploads: each file at most ``max_file_bytes``, at most
``max_files_per_request`` files, no more bytes than are left of the user's
staging quota (413 otherwise, nothing kept); the checks run in the check pool; one dry run
per user at a time (429 otherwise).
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import unquote

from python_multipart.multipart import MultipartParser, parse_options_header
from tornado import web

from ..dryrun import DryRunFiles, dry_run, require_dry_run
from ..errors import AirlockError, InvalidInput, TooLarge
from .api import APIHandler, MultipartParts
from .openapi import errors, ok

#: the slack above the files' bytes a multipart body may carry (part headers)
_SLACK = 64 * 1024


class Busy(AirlockError):
    """One dry run per user at a time."""

    status = 429
    code = "busy"


@web.stream_request_body
class CheckHandler(APIHandler):
    openapi = {"post": {
        "summary": "Check files before export: the checks, disclosure policy and ledger "
                   "of a request of the project, nothing kept (a dry run)",
        "parameters": [
            {"name": "project", "in": "query", "required": True, "schema": {"type": "string"},
             "description": "The project whose policy and released tables the files are "
             "checked against (a token acts for its one project)."},
            {"name": "filename", "in": "query", "schema": {"type": "string"},
             "description": "The file's name (raw body); or the X-Filename header."},
        ],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }},
        "responses": {**ok("DryRun", "Each file's verdict, findings (with their cells) and "
                           "preview; nothing was kept."),
                      **errors(400, 404, 413, 429)},
    }}

    #: users with a dry run under way (one each)
    running: ClassVar[set[str]] = set()

    files: DryRunFiles | None = None
    _parser: MultipartParser | None = None
    _error: Exception | None = None
    _user: str | None = None

    async def prepare(self) -> None:
        await super().prepare()
        try:
            await self._prepare()
        except AirlockError as e:
            self._error = e
            self._discard()
            if isinstance(e, TooLarge):
                raise
            self.request.connection.set_max_body_size(1024 * 1024)

    async def _prepare(self) -> None:
        me = self.require_identity()
        conf = self.service.settings
        project = self.get_query_argument("project", None)
        await self.run(require_dry_run, self.service, me, project)
        limit = conf.max_files_per_request * conf.max_file_bytes + _SLACK
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise TooLarge(f"body: larger than {conf.max_files_per_request} files of "
                           f"{conf.max_file_bytes} bytes")
        if me.name in self.running:
            raise Busy("a check of yours is already under way: wait for its answer")
        self.running.add(me.name)
        self._user = me.name
        self.request.connection.set_max_body_size(limit)
        room = (await self.run(self.service.staging_used, me))["free"]
        self.files = DryRunFiles(self.service.staging.tmp, max_files=conf.max_files_per_request,
                                 max_bytes=conf.max_file_bytes, room=room)
        ctype, params = parse_options_header(self.request.headers.get("Content-Type", ""))
        if ctype == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise InvalidInput("body: multipart/form-data without a boundary")
            self._parser = MultipartParser(boundary, _Parts(self.files).callbacks())
            return
        name = self.get_query_argument("filename", None)
        if name is None and self.request.headers.get("X-Filename"):
            name = unquote(self.request.headers["X-Filename"], errors="strict")
        if name is None:
            raise InvalidInput("filename: missing (give ?filename=, an X-Filename header or a "
                               "multipart/form-data body)")
        self.files.begin(name)

    def data_received(self, chunk: bytes) -> None:
        if self._error is not None or self.files is None:
            return
        try:
            if self._parser is not None:
                self._parser.write(chunk)
            else:
                self.files.write(chunk)
        except Exception as e:  # answered from post() with its status
            self._error = e
            self._discard()

    def _discard(self) -> None:
        if self.files is not None:
            self.files.discard()

    def on_finish(self) -> None:
        self._discard()
        if self._user is not None:
            self.running.discard(self._user)
            self._user = None

    def on_connection_close(self) -> None:
        self.on_finish()

    async def post(self) -> None:
        me = self.require_identity()
        if self._error is not None:
            raise self._error
        assert self.files is not None
        if self._parser is not None:
            self._parser.finalize()
            if self._error is not None:
                raise self._error
        self.files.end()
        try:
            data = await self.run_checking(dry_run, self.service, me,
                                           self.get_query_argument("project"),
                                           list(self.files.files))
        finally:
            self._discard()
        self.send(data)


class _Parts(MultipartParts):
    """Streams each part that has a filename into the dry run's files (other parts
    are ignored)."""

    def __init__(self, files: DryRunFiles) -> None:
        super().__init__()
        self.files = files

    def headers_finished(self) -> None:
        filename = self.filename_param()
        if filename is None:
            return
        self.files.begin(filename)
        self.active = True

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.active:
            self.files.write(data[start:end])

    def part_end(self) -> None:
        if self.active:
            self.active = False
            self.files.end()
