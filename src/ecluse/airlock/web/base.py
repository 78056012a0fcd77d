"""Base handler of the airlock's pages and API, on :mod:`ecluse.hubservice.web`.

Authentication goes through the hub (``jupyterhub.services.auth.HubOAuth``):

* ``Authorization: token <hub API token>`` — workspaces and scripts. When the
  header is present only the token counts (no fall-back to a cookie), so a
  forged header cannot ride on a browser session.
* the hub OAuth cookie set by ``/oauth_callback`` — browsers; form POSTs then
  need the ``_xsrf`` field (tornado xsrf, JupyterHub's token rules).

The user needs the ``access:services!service=airlock`` scope. Groups come from
the identity model when the token may read them, otherwise from the hub API
with the service's own token (``read:users:groups``), cached briefly
(:class:`~ecluse.hubservice.web.GroupResolver`). Errors are JSON for the API
and the ``error.html`` page for browsers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from jupyterhub.utils import url_path_join
from markupsafe import Markup

from ...hub.roles import project_scope
from ...hubservice.web import GroupResolver, HubServiceHandler
from ...i18n import N_, gettext, rendering, request_language
from ..errors import InvalidInput, NotAuthenticated, PermissionDenied
from ..permissions import Identity
from ..service import AirlockService

T = TypeVar("T")

__all__ = ["REQ", "BaseHandler", "GroupResolver"]

log = logging.getLogger("ecluse.airlock.web")
REQ = r"(?P<request_id>[A-Za-z0-9_-]{1,40})"


class BaseHandler(HubServiceHandler[AirlockService, Identity]):
    """Common plumbing; subclasses are either API (JSON) or UI (HTML) handlers."""

    log = log
    invalid_input = InvalidInput
    not_authenticated = NotAuthenticated
    permission_denied = PermissionDenied
    scope_message = N_(
        "your hub token or session does not grant access to the airlock "
        "(scope access:services!service=airlock)"
    )
    not_user_message = N_("only users may use the airlock")
    not_signed_in_message = N_(
        "not signed in: send 'Authorization: token <hub API token>' or sign in through the hub"
    )
    internal_error_message = N_("internal error; the details are in the airlock log")
    invalid_json = "body: not valid JSON ({e.msg} at position {e.pos})"
    cookies = True
    api = False

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking business logic in a worker thread: reads (GET, HEAD) in the reads'
        own pool, so they never queue behind writers waiting their turn at the database's
        write lock (issue 21 item 1: p99 of a list under load); the rest in the pool."""
        pool = self.settings["pool"]
        if self.request.method in ("GET", "HEAD"):
            pool = self.settings.get("read_pool") or pool
        return await asyncio.get_running_loop().run_in_executor(
            pool, lambda: fn(*args, **kwargs))

    async def run_checking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a call that may wait for a check sandbox (an upload's check, a submit's
        differencing) in the checks' own threads, not the pool reads use: waiting for
        one of ``check_processes`` sandboxes never starves the other requests."""
        pool = self.settings.get("check_pool") or self.settings["pool"]
        return await asyncio.get_running_loop().run_in_executor(
            pool, lambda: fn(*args, **kwargs))

    #: the methods of this handler the batch service may call for a staff member
    #: (:meth:`acting_for`): the export of a run's outputs, nothing else
    batch_export: frozenset[str] = frozenset()

    async def acting_for(self, model: dict[str, Any]) -> dict[str, Any]:
        """The batch service's own token acts for the staff member exporting a finished
        run's outputs, named in ``X-Ecluse-On-Behalf-Of``, for the one project named in
        ``X-Ecluse-Project``: create a request, add its files and describe them (context,
        controls, supporting mark), submit it and read it
        (:attr:`batch_export`), never review, release or withdraw. The user's groups are
        the airlock's own lookup (hub, then directory), and they must hold the staff group
        and the project, as for anyone (:meth:`prepare`). Any other service: refused."""
        # deferred: the batch service's name, only for a service's token
        from ...batch.hub import SERVICE_NAME as BATCH

        user = self.request.headers.get("X-Ecluse-On-Behalf-Of", "")
        project = self.request.headers.get("X-Ecluse-Project", "")
        if (model.get("name") != BATCH or not self.api
                or self.request.method not in self.batch_export):
            raise PermissionDenied(self.not_user_message)
        if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,128}", user) or not re.fullmatch(
                r"[a-z][a-z0-9-]{1,62}", project):
            raise PermissionDenied("the batch service must name the staff member "
                                   "(X-Ecluse-On-Behalf-Of) and the project (X-Ecluse-Project)")
        self.on_behalf_of = model["name"]
        return {"kind": "user", "name": user, "scopes": [project_scope(project)],
                "acting_service": model["name"]}

    on_behalf_of: str | None = None

    async def prepare(self) -> None:
        await super().prepare()
        if self.on_behalf_of and (self.identity is None or not self.identity.is_staff):
            raise PermissionDenied(f"the {self.on_behalf_of} service exports for platform "
                                   "staff only")

    def action(self, name: str) -> Callable[..., dict[str, Any]]:
        """The service method of a request action named in a URL."""
        fn = {
            "submit": self.service.submit,
            "resubmit": self.service.resubmit,
            "withdraw": self.service.withdraw,
            "release": self.service.release,
            "release_partial": self.service.release_partial,
        }.get(name)
        if fn is None:  # pragma: no cover - the routes restrict it
            raise InvalidInput(f"unknown action {name}")
        return fn

    async def send_file(self, content: Any, disposition: str = "attachment",
                        headers: dict[str, str] | None = None) -> None:
        """Stream a file of ``service.open_file`` (``disposition``: attachment, inline)."""
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(content.size))
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.set_header(
            "Content-Disposition",
            f"{disposition}; filename*=UTF-8''{quote(content.name, safe='')}",
        )
        while True:
            chunk = await self.run(next, content.chunks, None)
            if chunk is None:
                break
            self.write(chunk)
            await self.flush()
        self.finish()

    def error_page(self, error: dict[str, Any]) -> str:
        # the fixed messages (marked N_) are translated; a message built with values
        # (most of the service's) is shown as it is
        error = {**error, "message": self._(error.get("message", ""))}
        return self.render_template("error.html", error=error)

    @property
    def language(self) -> str:
        """The page's language (:func:`ecluse.i18n.request_language`)."""
        return request_language(self)

    def _(self, message: str, **variables: Any) -> str:
        """``message`` in the page's language (flash messages, error pages)."""
        return gettext(self.language, message, **variables) if message else message

    # ------------------------------------------------------------ helpers

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'",
        )

    def render_template(self, name: str, **kwargs: Any) -> str:
        """Render a Jinja template of ``ecluse/airlock/templates`` (autoescaped)."""
        env = self.settings["jinja_env"]
        try:
            xsrf = Markup(self.xsrf_form_html())
        except Exception:  # error pages for clients without a session
            xsrf = Markup("")
        ns = {
            "prefix": self.settings["airlock_prefix"],
            "hub_home": self.settings.get("hub_home", "/hub/home"),
            "identity": self.identity,
            "ecluse_lang": self.language,
            "ecluse_handler": self,
            "ecluse_lang_url": url_path_join(self.settings["airlock_prefix"], "language/"),
            "xsrf_form_html": xsrf,
            "static": lambda path: url_path_join(self.settings["airlock_prefix"], "static", path),
        }
        ns.update(kwargs)
        with rendering(self.language):  # macros imported without the page's context too
            return env.get_template(name).render(**ns)
