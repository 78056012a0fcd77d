"""REST API of the batch service (``/services/batch/api/v1/...``), JSON in and out.

Thin handlers over :class:`~ecluse.batch.service.BatchService`. Authentication
is the hub's: ``Authorization: token <hub API token>`` only (no cookies, so no
cross-site requests), checked by :class:`jupyterhub.services.auth.HubAuth`
for the ``access:services!service=batch`` scope (granted to the ``staff`` hub
group by :func:`ecluse.batch.hub.batch_roles`); the service then checks the
user's hub groups itself (staff). Groups are read like the airlock does
(:class:`ecluse.airlock.web.base.GroupResolver`).

Errors are ``{"error": {"code", "status", "message"}}`` with the HTTP status
of the domain exception (batch or airlock).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from jupyterhub.services.auth import HubAuth, HubAuthenticated, UserNotAllowed
from tornado import web
from tornado.httpserver import HTTPServer

from ..airlock.errors import AirlockError
from ..airlock.web.base import GroupResolver
from .errors import BatchError, InvalidInput, NotAuthenticated, PermissionDenied
from .runs import Status
from .service import BatchService, Identity

log = logging.getLogger("ecluse.batch.web")
T = TypeVar("T")
RUN = r"(?P<run_id>[A-Za-z0-9_-]{1,40})"


class APIHandler(HubAuthenticated, web.RequestHandler):
    identity: Identity | None = None

    @property
    def service(self) -> BatchService:
        return self.settings["batch_service"]

    @property
    def hub_auth(self) -> HubAuth:  # type: ignore[override]
        return self.settings["hub_auth"]

    @hub_auth.setter
    def hub_auth(self, value: Any) -> None:  # pragma: no cover - set through settings
        pass

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.settings["batch_pool"],
                                          lambda: fn(*args, **kwargs))

    def get_login_url(self) -> str:
        raise web.HTTPError(401)

    def check_xsrf_cookie(self) -> None:
        return  # tokens only: no cookie is ever read

    async def prepare(self) -> None:
        self._hub_auth_user_cache = None
        header = self.request.headers.get("Authorization", "")
        m = self.hub_auth.auth_header_pat.match(header) if header else None
        model = await self.hub_auth.user_for_token(m.group(1), sync=False) if m else None
        if not model:
            return
        try:
            model = self.check_hub_user(model)
        except UserNotAllowed:
            await self.run(self.service._record, "denied", model.get("name") or "?", None,
                           outcome="denied", action="access",
                           reason="token lacks access:services!service=batch")
            raise PermissionDenied(
                "your hub token does not grant access to the batch service (scope "
                "access:services!service=batch, given to platform staff)"
            ) from None
        if model.get("kind", "user") != "user":
            raise PermissionDenied("only users may use the batch service")
        self._hub_auth_user_cache = model
        groups = await self.settings["group_resolver"].groups_for(model)
        self.identity = self.service.identity(model["name"], groups)

    def get_current_user(self) -> dict[str, Any] | None:
        return getattr(self, "_hub_auth_user_cache", None)

    def require_identity(self) -> Identity:
        if self.identity is None:
            raise NotAuthenticated("not signed in: send 'Authorization: token <hub API token>'")
        return self.identity

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError as e:
            raise InvalidInput(f"body: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise InvalidInput("body: expected a JSON object")
        return data

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data, ensure_ascii=False))

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    # ------------------------------------------------------------ errors

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[override]
        if isinstance(value, BatchError | AirlockError):
            log.info("%s %s -> %s %s", self.request.method, self.request.path,
                     value.status, value.log_message)
            return
        super().log_exception(typ, value, tb)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, BatchError | AirlockError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, BatchError | AirlockError):
            payload = exc.to_dict()
        elif isinstance(exc, web.HTTPError):
            payload = {"error": {"code": "http_error", "status": status_code,
                                 "message": exc.log_message or self._reason}}
        else:
            payload = {"error": {"code": "internal_error", "status": status_code,
                                 "message": "internal error; the details are in the batch "
                                 "service log"}}
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(payload))


class MeHandler(APIHandler):
    async def get(self) -> None:
        me = self.require_identity()
        self.send({"name": me.name, "groups": sorted(me.groups), "staff": me.is_staff,
                   "statuses": [s.value for s in Status]})


class RunsHandler(APIHandler):
    async def get(self) -> None:
        me = self.require_identity()
        try:
            limit = int(self.get_argument("limit", "100"))
        except ValueError:
            raise InvalidInput("limit: expected an integer") from None
        runs = await self.run(self.service.list_runs, me, project=self.get_argument(
            "project", None), status=self.get_argument("status", None), limit=limit)
        self.send({"runs": runs})

    async def post(self) -> None:
        me = self.require_identity()
        body = self.json_body()
        notebook = body.get("notebook")
        if not isinstance(notebook, dict):
            raise InvalidInput("notebook: expected {\"name\": ..., \"content\": <notebook JSON>}")
        run = await self.run(
            self.service.submit, me, project=body.get("project"), notebook=notebook.get("name"),
            content=notebook.get("content"), parameters=body.get("parameters"),
            as_user=body.get("as_user"), timeout=body.get("timeout"),
        )
        self.send(run, 201)


class RunHandler(APIHandler):
    async def get(self, run_id: str) -> None:
        self.send(await self.run(self.service.get_run, self.require_identity(), run_id))


class LogsHandler(APIHandler):
    async def get(self, run_id: str) -> None:
        text = await self.service.logs(self.require_identity(), run_id)
        self.send({"id": run_id, "log": text})


class FilesHandler(APIHandler):
    async def get(self, run_id: str) -> None:
        files = await self.run(self.service.output_files, self.require_identity(), run_id)
        self.send({"id": run_id, "files": files})


class CancelHandler(APIHandler):
    async def post(self, run_id: str) -> None:
        self.send(await self.service.cancel(self.require_identity(), run_id))


class ExportHandler(APIHandler):
    async def post(self, run_id: str) -> None:
        body = self.json_body()
        request = await self.run(
            self.service.export, self.require_identity(), run_id, title=body.get("title"),
            justification=body.get("justification"), files=body.get("files"),
            submit=bool(body.get("submit", True)),
        )
        self.send(request, 201)


class NotFoundHandler(APIHandler):
    async def prepare(self) -> None:
        raise web.HTTPError(404, "no such endpoint")


def api_handlers(prefix: str) -> list[tuple[str, type]]:
    api = prefix.rstrip("/") + "/api/v1"
    return [
        (api + "/me", MeHandler),
        (api + "/runs", RunsHandler),
        (api + f"/runs/{RUN}", RunHandler),
        (api + f"/runs/{RUN}/logs", LogsHandler),
        (api + f"/runs/{RUN}/files", FilesHandler),
        (api + f"/runs/{RUN}/cancel", CancelHandler),
        (api + f"/runs/{RUN}/export", ExportHandler),
    ]


def make_app(service: BatchService, *, hub_auth: HubAuth, prefix: str | None = None,
             workers: int = 4) -> web.Application:
    prefix = prefix or hub_auth.base_url or "/services/batch/"
    if not prefix.endswith("/"):
        prefix += "/"
    return web.Application(
        api_handlers(prefix),
        batch_service=service,
        batch_pool=ThreadPoolExecutor(workers, thread_name_prefix="batch"),
        hub_auth=hub_auth,
        group_resolver=GroupResolver(hub_auth, service.conf.group_cache_seconds),
        default_handler_class=NotFoundHandler,
    )


async def serve(service: BatchService, *, ip: str, port: int) -> None:
    """Run the API and the queue until SIGTERM/SIGINT; running runs are stopped."""
    from ..airlock.web.app import hub_oauth_from_env

    hub_auth = hub_oauth_from_env()
    app = make_app(service, hub_auth=hub_auth)
    server = HTTPServer(app, xheaders=True,
                        max_body_size=2 * service.conf.max_notebook_bytes + 256 * 1024)
    server.listen(port, address=ip)
    log.info("batch service listening on http://%s:%s%s", ip, port, hub_auth.base_url)
    scheduler = asyncio.create_task(service.run_scheduler())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await service.close()
    scheduler.cancel()
    app.settings["batch_pool"].shutdown(wait=False)
    log.info("batch service stopped")
