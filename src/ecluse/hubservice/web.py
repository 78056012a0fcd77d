"""The tornado side of a hub-managed service (see :mod:`ecluse.hubservice`).

* :class:`HubServiceHandler` — the base handler. The hub user comes from
  ``Authorization: token <hub API token>``; when the header is present only
  the token counts, so a forged header cannot ride on a browser session.
  Services that set ``cookies`` also take the hub OAuth cookie (then form
  POSTs need ``_xsrf``). The user needs the ``access:services!service=<name>``
  scope; their groups come from :class:`GroupResolver`. Blocking calls run in
  the service's thread pool; errors are ``{"error": {"code", "status",
  "message"}}`` with the status of the :class:`~ecluse.hubservice.ServiceError`.
  Services built with their deployment settings re-check those groups
  against the directory (:class:`DirectoryGroups`, cache ≤ 60 s).
  The projects the credential acts for come from its scopes
  (:func:`ecluse.hub.roles.credential_projects`: a token, one project; a browser
  session, the user's) and are set on identities that have a ``projects``
  field.
* :func:`service_prefix`, :func:`handler_settings` — the application settings
  the handlers read.
* :func:`hub_oauth_from_env`, :func:`bind_address`, :func:`listen`,
  :func:`until_stopped` — running under the hub.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlparse

from jupyterhub.services.auth import HubAuth, HubAuthenticated, HubOAuth, UserNotAllowed
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer

from ..directory import DirectoryError, DirectoryUnavailable, MembershipResolver
from ..hub.roles import credential_projects, hub_groups_for
from . import ServiceError
from .instances import stop_my_previous

log = logging.getLogger(__name__)
T = TypeVar("T")
ServiceT = TypeVar("ServiceT")  # the business layer
IdentityT = TypeVar("IdentityT")  # who a user is to it


class GroupResolver:
    """Hub groups of a user: from the identity model when the token may read them,
    otherwise from the hub API with the service's own token (cached)."""

    def __init__(self, hub_auth: HubAuth, max_age: float = 30.0) -> None:
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


class DirectoryGroups:
    """Re-checks a user's hub groups against the directory (answers cached ≤ 60 s).

    The hub's groups follow LDAP at each refresh; this narrows them to what the
    directory says now, so a user removed from a project (or from the checkers)
    loses it within ``cache_seconds`` in the service. Only ever narrows: when
    the directory cannot be reached the hub's groups stand (nothing new granted,
    nothing stopped); a user the directory no longer knows keeps no group.
    """

    def __init__(self, settings: Any, cache_seconds: float = 60.0) -> None:
        self.settings = settings
        self.resolver = MembershipResolver(settings, cache_seconds=cache_seconds)

    def narrow(self, name: str, groups: frozenset[str]) -> frozenset[str]:
        """Blocking (run it in the service's pool)."""
        try:
            user = self.resolver.lookup(name)
        except DirectoryUnavailable:
            return groups
        except DirectoryError as e:
            log.warning("%s is no longer valid in the directory (%s): no groups", name,
                        e.reason)
            return frozenset()
        projects, roles = hub_groups_for(user.memberships, self.settings)
        return groups & frozenset(projects + roles)


class HubAuthFromSettings:
    """Handler mixin: the service's one ``HubAuth`` instance, from the app settings."""

    @property
    def hub_auth(self) -> HubAuth:
        return self.settings["hub_auth"]  # type: ignore[attr-defined]

    @hub_auth.setter
    def hub_auth(self, value: Any) -> None:  # pragma: no cover - set through settings
        pass


class HubServiceHandler(HubAuthFromSettings, HubAuthenticated, web.RequestHandler,
                        Generic[ServiceT, IdentityT]):
    """Base handler of a hub-managed service (settings from :func:`handler_settings`).

    A subclass provides:

    * ``log`` — the service's web logger;
    * ``invalid_input``, ``not_authenticated``, ``permission_denied`` — its
      :class:`ServiceError` subclasses for those cases;
    * the messages ``scope_message`` (token or session without the access
      scope), ``not_user_message`` (a service token), ``not_signed_in_message``,
      ``internal_error_message`` and ``invalid_json`` (a format string of ``e``,
      the ``ValueError``);
    * ``cookies`` — also accept the hub OAuth cookie (browsers);
    * ``api`` — errors as JSON and no login redirect; otherwise
      :meth:`error_page` renders errors.

    The service (``ServiceT``) in ``settings["service"]`` provides
    ``identity(name, groups)``, which returns an ``IdentityT``.
    """

    log: logging.Logger
    invalid_input: type[ServiceError]
    not_authenticated: type[ServiceError]
    permission_denied: type[ServiceError]
    scope_message: str
    not_user_message: str
    not_signed_in_message: str
    internal_error_message: str
    invalid_json: str
    cookies = False
    api = True
    identity: IdentityT | None = None

    @property
    def service(self) -> ServiceT:
        return self.settings["service"]

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking business logic in the service's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.settings["pool"], lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------ authentication

    def _header_token(self) -> str | None:
        """None without an Authorization header, "" when it holds no token."""
        if not self.request.headers.get("Authorization"):
            return None
        m = self.hub_auth.auth_header_pat.match(self.request.headers["Authorization"])
        return m.group(1) if m else ""

    def check_xsrf_cookie(self) -> None:
        if not self.cookies or self._header_token() is not None:
            return  # token requests are not cookie requests; prepare() ignores cookies
        self.hub_auth.check_xsrf_cookie(self)

    def get_login_url(self) -> str:
        if self.api:
            raise web.HTTPError(401)
        return super().get_login_url()

    async def _hub_user(self) -> dict[str, Any] | None:
        token = self._header_token()
        if token is None:
            return await self.hub_auth._get_user_cookie(self) if self.cookies else None
        model = await self.hub_auth.user_for_token(token, sync=False) if token else None
        if model:
            self._token_authenticated = True
        return model

    async def prepare(self) -> None:
        self._hub_auth_user_cache = None
        model = await self._hub_user()
        if not model:
            return
        try:
            model = self.check_hub_user(model)
        except UserNotAllowed:
            await self.scope_denied(model)
            raise self.permission_denied(self.scope_message) from None
        if model.get("kind", "user") != "user":
            model = await self.acting_for(model)
        self._hub_auth_user_cache = model
        groups = await self.settings["group_resolver"].groups_for(model)
        directory = self.settings.get("directory_groups")
        if directory is not None and directory.resolver.fresh(model["name"]):
            # answered from the cache: no thread (the pool is the requests' own queue)
            groups = directory.narrow(model["name"], frozenset(groups))
        elif directory is not None:
            groups = await self.run(directory.narrow, model["name"], frozenset(groups))
        identity = self.service.identity(model["name"], groups)
        if dataclasses.is_dataclass(identity) and any(
                f.name == "projects" for f in dataclasses.fields(identity)):
            # what this credential may act for: a workspace's token, its one project
            identity = dataclasses.replace(identity, projects=credential_projects(
                model.get("scopes") or [], token=self._header_token() is not None))
        self.identity = identity

    async def scope_denied(self, model: dict[str, Any]) -> None:
        """Called before a token or session without the access scope is refused."""

    async def acting_for(self, model: dict[str, Any]) -> dict[str, Any]:
        """The user a service's token (``model``) acts for here, as a user model; by
        default none: only users use a service."""
        raise self.permission_denied(self.not_user_message)

    def get_current_user(self) -> dict[str, Any] | None:
        return getattr(self, "_hub_auth_user_cache", None)

    def require_identity(self) -> IdentityT:
        if self.identity is None:
            raise self.not_authenticated(self.not_signed_in_message)
        return self.identity

    # ------------------------------------------------------------ JSON

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError as e:
            raise self.invalid_input(self.invalid_json.format(e=e)) from None
        if not isinstance(data, dict):
            raise self.invalid_input("body: expected a JSON object")
        return data

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data, ensure_ascii=False))

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def compute_etag(self) -> None:
        """No ETag: every answer is ``Cache-Control: no-store``, so nobody revalidates,
        and hashing each body cost the event loop time on every read (issue 21 item 1)."""
        return None

    # ------------------------------------------------------------ errors

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[override]
        if isinstance(value, ServiceError):
            self.log.info("%s %s -> %s %s", self.request.method, self.request.path,
                          value.status, value.log_message)
            return
        super().log_exception(typ, value, tb)

    def error_payload(self, status_code: int, exc: BaseException | None) -> dict[str, Any]:
        if isinstance(exc, ServiceError):
            return exc.to_dict()
        if isinstance(exc, web.HTTPError):
            message = exc.log_message % exc.args if exc.log_message and exc.args else (
                exc.log_message or exc.reason or self._reason
            )
            return {"error": {"code": "http_error", "status": status_code, "message": message}}
        return {"error": {"code": "internal_error", "status": status_code,
                          "message": self.internal_error_message}}

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ServiceError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        payload = self.error_payload(status_code, exc)
        if self.api:
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(json.dumps(payload))
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.error_page(payload["error"]))

    def error_page(self, error: dict[str, Any]) -> str:
        """The HTML page of an error (handlers with ``api = False``)."""
        raise NotImplementedError


def service_prefix(hub_auth: HubAuth, prefix: str | None, default: str) -> str:
    """The URL prefix the service answers under, with a trailing slash."""
    prefix = prefix or hub_auth.base_url or default
    return prefix if prefix.endswith("/") else prefix + "/"


def handler_settings(service: Any, hub_auth: HubAuth, *, workers: int,
                     group_cache_seconds: float, thread_name_prefix: str) -> dict[str, Any]:
    """The tornado application settings :class:`HubServiceHandler` reads.

    A service with a ``deployment`` attribute (the deployment's settings) has
    its users' hub groups re-checked against the directory
    (:class:`DirectoryGroups`, cache ``min(group_cache_seconds, 60)``)."""
    deployment = getattr(service, "deployment", None)
    return {
        "service": service,
        "pool": ThreadPoolExecutor(workers, thread_name_prefix=thread_name_prefix),
        "hub_auth": hub_auth,
        "group_resolver": GroupResolver(hub_auth, group_cache_seconds),
        "directory_groups": (DirectoryGroups(deployment, min(group_cache_seconds, 60))
                             if deployment is not None else None),
    }


# ---------------------------------------------------------------- running under the hub


def hub_oauth_from_env(command: str) -> HubOAuth:
    """HubOAuth configured from the managed-service environment (fails loudly)."""
    missing = [
        k for k in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "JUPYTERHUB_SERVICE_PREFIX")
        if not os.environ.get(k)
    ]
    if missing:
        raise RuntimeError(
            f"{command} runs as a JupyterHub-managed service: missing " + ", ".join(missing)
        )
    return HubOAuth(cache_max_age=60)


def bind_address(default_ip: str, default_port: int) -> tuple[str, int]:
    """Host and port of ``$JUPYTERHUB_SERVICE_URL``, else the defaults."""
    url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if url:
        parsed = urlparse(url)
        return parsed.hostname or default_ip, parsed.port or default_port
    return default_ip, default_port


def listen(app: web.Application, *, ip: str, port: int, max_body_size: int) -> HTTPServer:
    """An HTTP server for ``app`` (behind the hub's proxy) listening on ``ip:port``,
    after stopping what an earlier instance of the service left holding it
    (:func:`ecluse.hubservice.instances.stop_my_previous`)."""
    stop_my_previous(getattr(app.settings.get("service"), "audit", None))
    server = HTTPServer(app, xheaders=True, max_body_size=max_body_size)
    server.listen(port, address=ip)
    return server


async def until_stopped() -> None:
    """Wait for SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
