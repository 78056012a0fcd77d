"""REST API of the batch service (``/services/batch/api/v1/...``), JSON in and out.

Thin handlers over :class:`~ecluse.batch.service.BatchService`. Authentication
is the hub's: ``Authorization: token <hub API token>`` only (no cookies, so no
cross-site requests), checked by :class:`jupyterhub.services.auth.HubAuth`
for the ``access:services!service=batch`` scope (granted to the ``staff`` hub
group by :func:`ecluse.batch.hub.batch_roles`); the service then checks the
user's hub groups itself (staff). Authentication, groups
(:class:`~ecluse.hubservice.web.GroupResolver`) and errors are the airlock's,
from :mod:`ecluse.hubservice.web`.

Errors are ``{"error": {"code", "status", "message"}}`` with the HTTP status
of the domain exception (batch or airlock).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jupyterhub.services.auth import HubAuth
from tornado import web

from ..hubservice import web as hubweb
from ..hubservice.instances import record_removed
from .errors import InvalidInput, NotAuthenticated, PermissionDenied
from .runs import Status
from .service import BatchService, Identity

log = logging.getLogger("ecluse.batch.web")
RUN = r"(?P<run_id>[A-Za-z0-9_-]{1,40})"


class APIHandler(hubweb.HubServiceHandler[BatchService, Identity]):
    """Hub API tokens only: no cookie is ever read, so no cross-site requests."""

    log = log
    invalid_input = InvalidInput
    not_authenticated = NotAuthenticated
    permission_denied = PermissionDenied
    scope_message = (
        "your hub token does not grant access to the batch service (scope "
        "access:services!service=batch, given to platform staff)"
    )
    not_user_message = "only users may use the batch service"
    not_signed_in_message = "not signed in: send 'Authorization: token <hub API token>'"
    internal_error_message = "internal error; the details are in the batch service log"
    invalid_json = "body: not valid JSON ({e})"

    async def scope_denied(self, model: dict[str, Any]) -> None:
        await self.run(self.service._record, "denied", model.get("name") or "?", None,
                       outcome="denied", action="access",
                       reason="token lacks access:services!service=batch")


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
        text = await self.run(self.service.logs, self.require_identity(), run_id)
        self.send({"id": run_id, "log": text})


class ShareHandler(APIHandler):
    async def post(self, run_id: str) -> None:
        self.send(await self.run(self.service.share, self.require_identity(), run_id))


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
            submit=bool(body.get("submit", True)), about=body.get("about"),
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
        (api + f"/runs/{RUN}/share", ShareHandler),
        (api + f"/runs/{RUN}/export", ExportHandler),
    ]


def make_app(service: BatchService, *, hub_auth: HubAuth, prefix: str | None = None,
             workers: int = 4) -> web.Application:
    prefix = hubweb.service_prefix(hub_auth, prefix, "/services/batch/")
    return web.Application(
        api_handlers(prefix),
        **hubweb.handler_settings(
            service, hub_auth, workers=workers,
            group_cache_seconds=service.conf.group_cache_seconds, thread_name_prefix="batch",
        ),
        default_handler_class=NotFoundHandler,
    )


async def serve(service: BatchService, *, ip: str, port: int) -> None:
    """Run the API and the queue until SIGTERM/SIGINT; running runs are stopped."""
    hub_auth = hubweb.hub_oauth_from_env("ecluse batch serve")
    app = make_app(service, hub_auth=hub_auth)
    server = hubweb.listen(app, ip=ip, port=port,
                           max_body_size=2 * service.conf.max_notebook_bytes + 256 * 1024)
    # nothing is being written: temporary files are a killed instance's
    record_removed(service.audit, "batch", "temporary files", service.records.sweep())
    log.info("batch service listening on http://%s:%s%s", ip, port, hub_auth.base_url)
    scheduler = asyncio.create_task(service.run_scheduler())
    await hubweb.until_stopped()
    server.stop()
    await service.close()
    scheduler.cancel()
    app.settings["pool"].shutdown(wait=False)
    log.info("batch service stopped")
