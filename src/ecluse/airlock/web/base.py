"""Base handlers: hub authentication, identity, thread pool, error mapping.

Authentication goes through the hub (``jupyterhub.services.auth.HubOAuth``):

* ``Authorization: token <hub API token>`` — workspaces and scripts. When the
  header is present only the token counts (no fall-back to a cookie), so a
  forged header cannot ride on a browser session.
* the hub OAuth cookie set by ``/oauth_callback`` — browsers; form POSTs then
  need the ``_xsrf`` field (tornado xsrf, JupyterHub's token rules).

The user needs the ``access:services!service=airlock`` scope. Groups come from
the identity model when the token may read them, otherwise from the hub API
with the service's own token (``read:users:groups``), cached briefly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

from jupyterhub.services.auth import HubOAuth, HubOAuthenticated, UserNotAllowed
from jupyterhub.utils import url_path_join
from markupsafe import Markup
from tornado import web

from ..errors import AirlockError, NotAuthenticated, PermissionDenied
from ..permissions import Identity
from ..service import AirlockService

log = logging.getLogger("ecluse.airlock.web")
T = TypeVar("T")


class GroupResolver:
    """Hub groups of a user, from the hub API with the service token (cached)."""

    def __init__(self, hub_auth: HubOAuth, max_age: float = 30.0) -> None:
        self.hub_auth = hub_auth
        self.max_age = max_age
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    async def groups_for(self, model: dict[str, Any]) -> frozenset[str]:
        if isinstance(model.get("groups"), list):
            return frozenset(str(g) for g in model["groups"])
        name = model["name"]
        hit = self._cache.get(name)
        now = time.monotonic()
        if hit and now - hit[0] < self.max_age:
            return hit[1]
        url = url_path_join(self.hub_auth.api_url, "users", quote(name, safe=""))
        try:
            data = await self.hub_auth._api_request(
                "GET", url, headers={"Authorization": f"token {self.hub_auth.api_token}"}
            )
        except Exception as e:  # fail closed: no groups known, no permissions
            log.warning("cannot read the hub groups of %s: %s", name, e)
            return frozenset()
        groups = frozenset(str(g) for g in (data or {}).get("groups") or [])
        self._cache[name] = (now, groups)
        return groups


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """Common plumbing; subclasses are either API (JSON) or UI (HTML) handlers."""

    api = False
    identity: Identity | None = None

    @property
    def service(self) -> AirlockService:
        return self.settings["airlock_service"]

    @property
    def hub_auth(self) -> HubOAuth:  # type: ignore[override]
        return self.settings["hub_auth"]

    @hub_auth.setter
    def hub_auth(self, value: Any) -> None:  # pragma: no cover - set through settings
        pass

    @property
    def pool(self) -> ThreadPoolExecutor:
        return self.settings["airlock_pool"]

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking business logic in the service's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------ authentication

    def _header_token(self) -> str | None:
        if not self.request.headers.get("Authorization"):
            return None
        m = self.hub_auth.auth_header_pat.match(self.request.headers["Authorization"])
        return m.group(1) if m else ""

    def check_xsrf_cookie(self) -> None:
        if self._header_token() is not None:
            return  # token requests are not cookie requests; prepare() ignores cookies
        self.hub_auth.check_xsrf_cookie(self)

    async def prepare(self) -> None:
        self._hub_auth_user_cache = None
        token = self._header_token()
        model = None
        if token is not None:
            if token:
                model = await self.hub_auth.user_for_token(token, sync=False)
            if model:
                self._token_authenticated = True
        else:
            model = await self.hub_auth._get_user_cookie(self)
        if not model:
            return
        try:
            model = self.check_hub_user(model)
        except UserNotAllowed:
            raise PermissionDenied(
                "your hub token or session does not grant access to the airlock "
                "(scope access:services!service=airlock)"
            ) from None
        if model.get("kind", "user") != "user":
            raise PermissionDenied("only users may use the airlock")
        self._hub_auth_user_cache = model
        groups = await self.settings["group_resolver"].groups_for(model)
        self.identity = self.service.identity(model["name"], groups)

    def get_current_user(self) -> dict[str, Any] | None:
        return getattr(self, "_hub_auth_user_cache", None)

    def require_identity(self) -> Identity:
        if self.identity is None:
            raise NotAuthenticated(
                "not signed in: send 'Authorization: token <hub API token>' or sign in "
                "through the hub"
            )
        return self.identity

    # ------------------------------------------------------------ errors

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[override]
        if isinstance(value, AirlockError):
            log.info("%s %s -> %s %s", self.request.method, self.request.path,
                     value.status, value.log_message)
            return
        super().log_exception(typ, value, tb)

    def _error_payload(self, status_code: int, exc: BaseException | None) -> dict[str, Any]:
        if isinstance(exc, AirlockError):
            return exc.to_dict()
        if isinstance(exc, web.HTTPError):
            message = exc.log_message % exc.args if exc.log_message and exc.args else (
                exc.log_message or exc.reason or self._reason
            )
            return {"error": {"code": "http_error", "status": status_code, "message": message}}
        return {
            "error": {
                "code": "internal_error",
                "status": status_code,
                "message": "internal error; the details are in the airlock log",
            }
        }

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, AirlockError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        payload = self._error_payload(status_code, exc)
        if self.api:
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(json.dumps(payload))
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.render_template("error.html", error=payload["error"]))

    # ------------------------------------------------------------ helpers

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")
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
            "xsrf_form_html": xsrf,
            "static": lambda path: url_path_join(self.settings["airlock_prefix"], "static", path),
        }
        ns.update(kwargs)
        return env.get_template(name).render(**ns)
