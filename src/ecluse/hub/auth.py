"""JupyterHub authenticator: LDAP sign-in with hub groups managed from LDAP.

Entry point ``jupyterhub.authenticators: ecluse``::

    c.JupyterHub.authenticator_class = "ecluse"
    c.EcluseAuthenticator.config_file = "/etc/ecluse/ecluse.yaml"

What it adds over jupyterhub-ldapauthenticator (its issues #124, #213, #239):

* LDAP calls run in a thread pool with connect/receive timeouts and an
  overall deadline: a slow or dead directory never blocks the hub's event
  loop; that sign-in fails with a clear 503 while other requests go on;
* ``manage_groups``: hub groups follow LDAP (projects and role groups), and
  ``refresh_user`` re-reads them every ``auth_refresh_age`` seconds and
  before every spawn, so removing someone from a project in LDAP removes the
  hub group at the next refresh;
* a user in no configured project or role group is refused with a message
  that says so;
* auth_state (encrypted with ``JUPYTERHUB_CRYPT_KEY``) carries uidNumber,
  gidNumber, project list and project gids for the spawner;
* every sign-in (success and failure with its reason) and every group
  change is an audit event;
* sign-in throttling (:class:`LoginThrottle`): after ``hub.login_max_failures``
  failures of one user name, or from one client address, further attempts
  wait (``hub.login_backoff`` seconds, doubling, at most
  ``hub.login_backoff_max``) and are refused *without asking the directory*,
  so guessing never locks the account out in Active Directory; refusals are
  audited (``login.throttled``);
* a second factor (:mod:`ecluse.hub.mfa`): a TOTP code in the login form's
  ``otp`` field, or a recovery code, required for the roles of
  ``mfa.required_for`` and for everyone who enrolled; a user without one
  enrols at their first sign-in (QR code, recovery codes, first code:
  :mod:`ecluse.hub.mfaweb`). A wrong, replayed or expired code is refused
  like a wrong password (same message, same throttle, audited with its
  reason).
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyterhub.auth import Authenticator
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import Bool, Integer, Unicode, default

from ..audit import AuditLog
from ..auditevents import AuditEvent
from ..config import Settings, load_settings
from ..directory import (
    Directory,
    DirectoryError,
    DirectoryUnavailable,
    DirectoryUser,
    InvalidUsername,
    NoProjectGid,
    membership,
)
from ..i18n import N_
from ..sandbox.remote import audit_for
from .mfa import Accepted, MfaError, TotpStore, match_counter, new_recovery_codes, new_secret
from .mfaweb import mfa_handlers, render_enrolment
from .requester import server_api_handlers
from .roles import OUTPUT_CHECKERS, STAFF, hub_groups_for

UNAVAILABLE_MESSAGE = N_(
    "Sign-in is unavailable: the directory (LDAP) did not answer in time. "
    "Running workspaces are not affected. Please try again in a few minutes."
)
NO_PROJECT_MESSAGE = N_(
    "Your account is valid but is not a member of any Écluse project or role. "
    "Ask your project lead to add you to the project's group in the directory."
)


def _project_gid(user: DirectoryUser, settings: Settings, slug: str) -> int | None:
    try:
        return membership(user, settings, slug).project_gid
    except NoProjectGid:
        return None


THROTTLED_MESSAGE = (
    "Too many failed sign-ins: wait {wait} seconds before trying again. "
    "Your account is not locked in the directory."
)


ENROL_EXPIRED_MESSAGE = N_(
    "Your enrolment of a second factor took too long or was already completed: "
    "sign in again with your password."
)


#: enrolments waiting for their first code, at most
MAX_PENDING = 10_000


def mfa_roles(model: dict) -> list[str]:
    """The roles of ``mfa.required_for`` an auth model holds."""
    state = model.get("auth_state") or {}
    roles = []
    if state.get("projects"):
        roles.append("researcher")
    if OUTPUT_CHECKERS in state.get("roles", []):
        roles.append("output-checker")
    if STAFF in state.get("roles", []):
        roles.append("staff")
    return roles


class PendingEnrolment:
    """A sign-in whose password was accepted, waiting for its first TOTP code."""

    def __init__(self, username: str, model: dict, address: str | None, expires: float):
        self.username = username
        self.model = model
        self.address = address
        self.expires = expires
        self.secret = new_secret()
        self.recovery_codes = new_recovery_codes()


class LoginThrottle:
    """Back-off after failed sign-ins, per user name and per client address.

    ``failures`` failures in a row (``address_failures`` for an address) open a wait of ``backoff`` seconds, doubled at
    each further failure up to ``backoff_max``; a success clears the user's and
    the address's record. Kept in memory (the hub is one process); at most
    ``max_keys`` records, the oldest dropped first.
    """

    def __init__(self, failures: int, backoff: float, backoff_max: float,
                 address_failures: int | None = None, max_keys: int = 100_000,
                 clock=time.monotonic) -> None:
        self.failures = failures
        #: an address is shared by many people (a hospital's VDI, NAT): a higher bar
        self.address_failures = address_failures or failures
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_keys = max_keys
        self.clock = clock
        #: key -> (failures in a row, waiting until)
        self._state: dict[str, tuple[int, float]] = {}

    @staticmethod
    def keys(username: str, address: str | None) -> list[str]:
        keys = [f"user:{username.strip().lower()}"]
        if address:
            keys.append(f"addr:{address}")
        return keys

    def wait(self, keys: list[str]) -> float:
        """Seconds still to wait before an attempt with these keys (0: go)."""
        now = self.clock()
        return max([0.0] + [self._state.get(k, (0, 0.0))[1] - now for k in keys])

    def failed(self, keys: list[str]) -> float:
        """Record a failure; returns the wait it opens (0: none yet)."""
        now = self.clock()
        wait = 0.0
        for k in keys:
            n = self._state.pop(k, (0, 0.0))[0] + 1
            until = 0.0
            bar = self.address_failures if k.startswith("addr:") else self.failures
            if n >= bar:
                delay = min(self.backoff * 2 ** (n - bar), self.backoff_max)
                until = now + delay
                wait = max(wait, delay)
            self._state[k] = (n, until)
        while len(self._state) > self.max_keys:
            self._state.pop(next(iter(self._state)))
        return wait

    def succeeded(self, keys: list[str]) -> None:
        for k in keys:
            self._state.pop(k, None)


class EcluseAuthenticator(Authenticator):
    """Sign in against LDAP; hub groups and auth_state come from the directory."""

    config_file = Unicode(
        help="""Écluse deployment config (ecluse.yaml). Default: $ECLUSE_CONFIG or
        config/ecluse.yaml.""",
    ).tag(config=True)

    state_dir = Unicode(
        help="Override of the state directory in the config (as `ecluse up --state-dir`).",
    ).tag(config=True)

    settings = AnyTrait(help="The loaded Écluse settings (set directly in tests).")

    executor_threads = Integer(
        4, help="Threads running LDAP calls off the event loop."
    ).tag(config=True)

    audit_logins = Bool(True, help="Record sign-ins and group changes in the audit log.").tag(
        config=True
    )

    @default("settings")
    def _default_settings(self) -> Settings:
        return load_settings(self.config_file or None, state_dir=self.state_dir or None)

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True

    @default("enable_auth_state")
    def _default_auth_state(self) -> bool:
        return bool(os.environ.get("JUPYTERHUB_CRYPT_KEY"))

    @default("auth_refresh_strict")
    def _default_refresh_strict(self) -> bool:
        # a user whose refresh fails (gone from the directory, in no project any
        # more) must sign in again for token requests too: never keep stale groups
        return True

    @default("refresh_pre_spawn")
    def _default_refresh_pre_spawn(self) -> bool:
        return True

    @default("auth_refresh_age")
    def _default_refresh_age(self) -> int:
        return self.settings.hub.auth_refresh_age

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        # who may sign in is decided by LDAP groups in authenticate()
        return True

    @default("admin_users")
    def _default_admin_users(self) -> set:
        return set(self.settings.hub.admin_users)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.directory = Directory(self.settings.ldap)
        self._executor = ThreadPoolExecutor(
            self.executor_threads, thread_name_prefix="ecluse-ldap"
        )
        self._audit: AuditLog | None = None
        hub = self.settings.hub
        self.throttle = LoginThrottle(hub.login_max_failures, hub.login_backoff,
                                      hub.login_backoff_max,
                                      address_failures=hub.login_max_failures_per_address)
        self.mfa = TotpStore.from_settings(self.settings)
        #: ticket -> enrolment waiting for its first code (in memory: the hub is one process)
        self._pending: dict[str, PendingEnrolment] = {}

    @default("request_otp")
    def _default_request_otp(self) -> bool:
        return True

    @default("otp_prompt")
    def _default_otp_prompt(self) -> str:
        return N_("Code from your authenticator app (or a recovery code):")

    def get_handlers(self, app: Any) -> list:
        # the hub's server API, recording who asks for a stop (ecluse.hub.requester)
        return [*super().get_handlers(app), *server_api_handlers(), *mfa_handlers()]

    # ------------------------------------------------------------ helpers

    @property
    def audit(self) -> AuditLog | None:
        if self._audit is None and self.audit_logins:
            self._audit = audit_for(self.settings, "hub")
        return self._audit

    def _record(self, event: str, actor: str | None, outcome: str, **details: Any) -> None:
        if not self.audit:
            return
        try:
            self.audit.record(event, actor=actor, outcome=outcome, **details)
        except Exception:  # the audit database must not decide sign-ins silently
            self.log.exception("could not write audit event %s for %s", event, actor)
            raise

    @property
    def deadline(self) -> float:
        """Overall bound on one directory round (service bind, search, user bind, groups)."""
        s = self.settings.ldap
        return s.connect_timeout * 2 + s.receive_timeout * 4

    async def _call(self, fn, *args):
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, fn, *args), self.deadline
            )
        except TimeoutError:
            raise DirectoryUnavailable(
                f"no answer from {self.settings.ldap.uri} within {self.deadline:.0f}s"
            ) from None

    def _auth_model(self, user: DirectoryUser) -> dict[str, Any] | None:
        projects, roles = hub_groups_for(user.memberships, self.settings)
        if not projects and not roles:
            return None
        project_gids = {slug: _project_gid(user, self.settings, slug) for slug in projects}
        return {
            "name": user.username,
            "groups": projects + roles,
            "auth_state": {
                "dn": user.dn,
                "cn": user.cn,
                "mail": user.mail,
                "uid_number": user.uid_number,
                "gid_number": user.gid_number,
                "projects": projects,
                "project_gids": project_gids,
                "roles": roles,
            },
        }

    # ------------------------------------------------------------ Authenticator API

    async def authenticate(self, handler, data: dict) -> dict | None:
        username = str(data.get("username", ""))
        password = str(data.get("password", ""))
        shown = username if len(username) <= 32 else username[:16] + f"...({len(username)})"
        shown = shown.replace("\x00", "\\0")
        address = getattr(getattr(handler, "request", None), "remote_ip", None)
        keys = self.throttle.keys(username, address)
        wait = self.throttle.wait(keys)
        if wait > 0:
            # refused here, before the directory sees a password: no lock-out storm
            self.log.warning("sign-in of %r from %s throttled for %.0fs", shown, address, wait)
            self._record(AuditEvent.LOGIN_THROTTLED, shown, "denied", address=address,
                         retry_after=int(wait + 0.999))
            raise web.HTTPError(429, THROTTLED_MESSAGE.format(wait=int(wait + 0.999)))
        try:
            user = await self._call(self.directory.authenticate, username, password)
        except DirectoryUnavailable as e:
            self.log.error("LDAP sign-in for %r failed: %s", shown, e)
            self._record(AuditEvent.LOGIN_FAILURE, shown, "failure", reason=e.reason, detail=str(e))
            raise web.HTTPError(503, UNAVAILABLE_MESSAGE) from None
        except DirectoryError as e:
            level = self.log.info if isinstance(e, InvalidUsername) else self.log.warning
            level("LDAP sign-in refused for %r: %s (%s)", shown, e.reason, e)
            opened = self.throttle.failed(keys)
            self._record(AuditEvent.LOGIN_FAILURE, shown, "failure", reason=e.reason, address=address,
                         **({"backoff": int(opened)} if opened else {}))
            return None
        model = self._auth_model(user)
        if model is None:
            self.throttle.succeeded(keys)
            self.log.warning("LDAP user %s is in no Écluse project or role group", username)
            self._record(AuditEvent.LOGIN_FAILURE, username, "failure", reason="no-project")
            raise web.HTTPError(403, NO_PROJECT_MESSAGE)
        username = model["name"]
        factor = await self._second_factor(handler, username, model, str(data.get("otp", "")),
                                           keys, address)
        if factor is None:
            return None
        return await self._signed_in(handler, model, keys, factor)

    async def _signed_in(self, handler, model: dict, keys: list[str], factor: Accepted | None,
                         ) -> dict:
        username = model["name"]
        self.throttle.succeeded(keys)
        extra: dict[str, Any] = {}
        if factor is not None:
            extra["factor"] = factor.kind
            if factor.recovery_codes_left is not None:
                extra["recovery_codes_left"] = factor.recovery_codes_left
        self._record(
            AuditEvent.LOGIN_SUCCESS, username, "success", groups=model["groups"],
            uid_number=model["auth_state"]["uid_number"], **extra,
        )
        await self._record_group_change(handler, username, model["groups"])
        return model

    # ------------------------------------------------------------ second factor

    def mfa_required(self, username: str, model: dict) -> bool:
        required = set(self.settings.mfa.required_for)
        return bool(required & set(mfa_roles(model))) or self.mfa.enrolled(username)

    async def _mfa(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _second_factor(self, handler, username: str, model: dict, otp: str,
                             keys: list[str], address: str | None) -> Accepted | None:
        """The accepted second factor; None (refused, as a wrong password); or, for a
        user with none yet, the enrolment page (the request ends there)."""
        if not await self._mfa(self.mfa_required, username, model):
            return Accepted("none")
        try:
            return await self._mfa(self.mfa.verify, username, otp)
        except MfaError as e:
            if e.reason == "not-enrolled":
                await self._start_enrolment(handler, username, model, address)
            self.log.warning("second factor of %s refused: %s", username, e.reason)
            opened = self.throttle.failed(keys)
            self._record(AuditEvent.LOGIN_FAILURE, username, "failure", reason=e.reason,
                         address=address, **({"backoff": int(opened)} if opened else {}))
            return None

    async def _start_enrolment(self, handler, username: str, model: dict,
                               address: str | None) -> None:
        """Answer the sign-in with the enrolment page (QR code, recovery codes)."""
        import secrets as _secrets

        now = time.monotonic()
        # only the latest enrolment page of a user counts; expired ones go; at most
        # MAX_PENDING waiting (the oldest dropped first)
        for ticket in [t for t, p in self._pending.items()
                       if p.expires < now or p.username == username]:
            self._pending.pop(ticket, None)
        while len(self._pending) >= MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
        ticket = _secrets.token_urlsafe(32)
        pending = PendingEnrolment(username, model, address,
                                   now + self.settings.mfa.enrol_timeout)
        self._pending[ticket] = pending
        self._record(AuditEvent.MFA_ENROL, username, "started", address=address)

        await render_enrolment(handler, ticket, pending, self.settings.mfa.issuer)
        raise web.Finish()

    def pending_enrolment(self, ticket: str) -> PendingEnrolment:
        pending = self._pending.get(ticket)
        if pending is None or pending.expires < time.monotonic():
            self._pending.pop(ticket, None)
            raise web.HTTPError(403, ENROL_EXPIRED_MESSAGE)
        return pending

    async def finish_enrolment(self, handler, ticket: str, otp: str) -> dict | None:
        """The first code of a pending enrolment: the auth model (signed in), or None
        (wrong code: the page is shown again). Throttled like a sign-in."""
        pending = self.pending_enrolment(ticket)
        keys = self.throttle.keys(pending.username, pending.address)
        wait = self.throttle.wait(keys)
        if wait > 0:
            self._record(AuditEvent.LOGIN_THROTTLED, pending.username, "denied",
                         address=pending.address, retry_after=int(wait + 0.999))
            raise web.HTTPError(429, THROTTLED_MESSAGE.format(wait=int(wait + 0.999)))
        try:
            counter = match_counter(pending.secret, otp, self.mfa.clock(),
                                    self.mfa.valid_window)
        except MfaError as e:
            opened = self.throttle.failed(keys)
            self._record(AuditEvent.MFA_ENROL, pending.username, "failure", reason=e.reason,
                         **({"backoff": int(opened)} if opened else {}))
            return None
        self._pending.pop(ticket, None)
        await self._mfa(self.mfa.enrol, pending.username, pending.secret,
                        pending.recovery_codes, counter)
        self._record(AuditEvent.MFA_ENROL, pending.username, "success")
        return await self._signed_in(handler, pending.model, keys, Accepted("totp-enrolment"))

    def reset_mfa(self, username: str, by: str) -> bool:
        """Forget ``username``'s second factor (asked by staff member ``by``); audited."""
        removed = self.mfa.reset(username)
        self._record(AuditEvent.MFA_RESET, by, "success" if removed else "not-enrolled",
                     user=username)
        return removed

    async def refresh_user(self, user, handler=None):
        """Re-read the user's groups from LDAP.

        Returns an updated auth model, ``False`` (sign in again) when the
        user is gone or in no project any more, and ``True`` (keep the
        current state) when the directory is unreachable, so running work
        is not interrupted by an LDAP outage. Spawns re-check membership in
        the spawner and fail closed.
        """
        try:
            found = await self._call(self.directory.lookup, user.name)
        except DirectoryUnavailable as e:
            self.log.warning("cannot refresh %s from LDAP, keeping current groups: %s",
                             user.name, e)
            return True
        except DirectoryError as e:
            self.log.warning("refresh: %s no longer valid in LDAP: %s", user.name, e)
            self._record(AuditEvent.AUTH_REFRESH, user.name, "failure", reason=e.reason)
            return False
        model = self._auth_model(found)
        if model is None:
            self._record(AuditEvent.AUTH_REFRESH, user.name, "failure", reason="no-project")
            return False
        await self._record_group_change(handler, user.name, model["groups"], user=user)
        return model

    async def _record_group_change(self, handler, username: str, groups: list[str],
                                   user=None) -> None:
        if user is None and handler is not None:
            user = handler.find_user(username) if hasattr(handler, "find_user") else None
        if user is None:
            before: list[str] = []
        else:
            before = sorted(g.name for g in user.groups)
        if sorted(groups) != before:
            self._record(
                AuditEvent.GROUPS_CHANGE, username, "success",
                added=sorted(set(groups) - set(before)),
                removed=sorted(set(before) - set(groups)),
            )
