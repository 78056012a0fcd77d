"""Directory access (LDAP via ldap3): sign-in, user lookup, groups.

The flow for a sign-in is the classic search-then-bind:

1. validate the login name against ``ldap.username_pattern`` — nothing that
   fails it is ever sent to the directory;
2. bind as the service account and search ``user_search_base`` for
   ``(&(objectClass=<user_object_class>)(<username_attribute>=<name>))`` with
   the name escaped (RFC 4515), expecting exactly one entry;
3. bind as that entry's DN with the given password (an empty password is
   refused before any bind: LDAP treats it as an anonymous bind that
   "succeeds");
4. read uid, cn, mail, uidNumber, gidNumber, and the groups that list the
   user through ``member`` / ``uniqueMember`` (by DN) or ``memberUid`` (by
   name).

Every call is synchronous and bounded by ``connect_timeout`` and
``receive_timeout``; the authenticator runs them in a thread pool so the
hub's event loop never waits on LDAP.

Project membership has one rule, here: :func:`projects_of` (which projects a
user's directory groups make them a member of) and :class:`MembershipResolver`
("is U a member of P, and with which group number", asked of the directory).
The authenticator, the spawner, dask-gateway, the batch service and the
services' token check all call it; each maps :class:`NotAMember` and
:class:`DirectoryUnavailable` to its own error.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import ldap3
from ldap3.core.exceptions import (
    LDAPBindError,
    LDAPException,
    LDAPInvalidCredentialsResult,
    LDAPNoSuchObjectResult,
    LDAPSocketOpenError,
    LDAPSocketReceiveError,
    LDAPStartTLSError,
)
from ldap3.utils.conv import escape_filter_chars

from .config import ConfigError, LDAPSettings, group_key, is_dn, normalize_dn

log = logging.getLogger(__name__)

MAX_PASSWORD_LENGTH = 1024


class DirectoryError(Exception):
    """Base class. ``reason`` is a short machine-readable code for the audit log."""

    reason = "directory-error"


class InvalidUsername(DirectoryError):
    reason = "invalid-username"


class UnknownUser(DirectoryError):
    reason = "unknown-user"


class InvalidCredentials(DirectoryError):
    reason = "wrong-password"


class DirectoryUnavailable(DirectoryError):
    """The directory could not be reached or did not answer in time."""

    reason = "ldap-unavailable"


class NotAMember(DirectoryError):
    """The directory positively says the user is not a member of the project."""

    reason = "not-a-member"


class NoProjectGid(DirectoryError):
    """The project's group has no gidNumber in the directory (nor ``gid`` in projects.yaml)."""

    reason = "no-project-gid"


@dataclass
class DirectoryUser:
    username: str
    dn: str
    cn: str
    mail: str | None
    uid_number: int
    gid_number: int
    groups: list[str] = field(default_factory=list)
    #: gidNumber of each group that has one (projects' supplementary groups), by
    #: name and by normalised DN
    group_gids: dict[str, int] = field(default_factory=dict)
    #: the same groups by DN (normalised: :func:`normalize_dn`)
    group_dns: list[str] = field(default_factory=list)
    #: ``preferredLanguage`` (inetOrgPerson, RFC 2798), e.g. ``fr``: the airlock's
    #: mails are written in it (ecluse.i18n)
    language: str | None = None

    @property
    def memberships(self) -> list[str]:
        """Group names and DNs: what :func:`projects_of` matches ``ldap_group`` against."""
        return [*self.groups, *self.group_dns]

    def to_dict(self) -> dict:
        return asdict(self)


def _first(entry: ldap3.Entry, attr: str) -> str | None:
    if attr not in entry:
        return None
    values = entry[attr].values
    return str(values[0]) if values else None


class Directory:
    """Read-only access to users and groups in the configured LDAP directory."""

    def __init__(self, settings: LDAPSettings):
        self.settings = settings
        self._username_re = re.compile(settings.username_pattern)

    # ------------------------------------------------------------ plumbing

    def _server(self) -> ldap3.Server:
        s = self.settings
        tls = None
        if s.security in ("starttls", "ldaps"):
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED,
                ca_certs_file=str(s.ca_file) if s.ca_file else None,
                version=ssl.PROTOCOL_TLS_CLIENT,
            )
        return ldap3.Server(
            s.host,
            port=s.uri_port,
            use_ssl=s.security == "ldaps",
            tls=tls,
            connect_timeout=s.connect_timeout,
            get_info=ldap3.NONE,
        )

    def _bind(self, dn: str, password: str) -> ldap3.Connection:
        """Open a connection and bind; StartTLS first when configured."""
        conn = ldap3.Connection(
            self._server(),
            user=dn,
            password=password,
            # ldap3 packs this into SO_RCVTIMEO: whole seconds only
            receive_timeout=max(1, math.ceil(self.settings.receive_timeout)),
            raise_exceptions=True,
            read_only=True,
            auto_bind=ldap3.AUTO_BIND_NONE,
        )
        try:
            conn.open()
            if self.settings.security == "starttls":
                conn.start_tls()
            conn.bind()
        except (LDAPInvalidCredentialsResult, LDAPBindError) as e:
            conn.unbind()
            raise InvalidCredentials(str(e)) from None
        except LDAPStartTLSError as e:
            conn.unbind()
            raise DirectoryUnavailable(f"StartTLS failed: {e}") from None
        except (LDAPSocketOpenError, LDAPSocketReceiveError) as e:
            conn.unbind()
            raise DirectoryUnavailable(self._unavailable(e)) from None
        except (LDAPException, OSError) as e:
            conn.unbind()
            raise DirectoryUnavailable(self._unavailable(e)) from None
        return conn

    def _unavailable(self, e: Exception) -> str:
        return f"LDAP server {self.settings.uri} unavailable: {type(e).__name__}: {e}"

    def _service(self) -> ldap3.Connection:
        try:
            password = self.settings.bind_password()
        except ConfigError as e:
            raise DirectoryUnavailable(str(e)) from None
        try:
            return self._bind(self.settings.bind_dn, password)
        except InvalidCredentials:
            raise DirectoryUnavailable(
                f"the service account {self.settings.bind_dn} was refused by the directory "
                "(check ldap.bind_dn and its password)"
            ) from None

    def validate_username(self, username: str) -> str:
        if not isinstance(username, str) or not username:
            raise InvalidUsername("empty username")
        if len(username) > 64 or "\x00" in username or not self._username_re.match(username):
            shown = username[:16] + ("..." if len(username) > 16 else "")
            raise InvalidUsername(
                f"username {shown!r} does not match {self.settings.username_pattern}"
            )
        return username

    # ------------------------------------------------------------ queries

    def _find_user(self, conn: ldap3.Connection, username: str) -> ldap3.Entry:
        s = self.settings
        flt = (
            f"(&(objectClass={escape_filter_chars(s.user_object_class)})"
            f"({s.username_attribute}={escape_filter_chars(username)}))"
        )
        try:
            conn.search(
                s.user_search_base,
                flt,
                search_scope=ldap3.SUBTREE,
                attributes=[s.username_attribute, "cn", "mail", "uidNumber", "gidNumber",
                            "preferredLanguage"],
                size_limit=2,
                time_limit=int(max(1, s.receive_timeout)),
            )
        except LDAPException as e:
            raise DirectoryUnavailable(self._unavailable(e)) from None
        entries = conn.entries
        if not entries:
            raise UnknownUser(f"no entry for {username!r} under {s.user_search_base}")
        if len(entries) > 1:
            raise UnknownUser(f"{len(entries)} entries match {username!r}: refusing ambiguity")
        return entries[0]

    def _groups(self, conn: ldap3.Connection, dn: str,
                names: list[str]) -> dict[str, tuple[str, int | None]]:
        """Groups listing the entry by DN, or by any of its login names (memberUid)."""
        s = self.settings
        clauses = []
        for attr in s.group_member_attributes:
            values = names if attr == "memberUid" else [dn]
            clauses += [f"({attr}={escape_filter_chars(v)})" for v in values]
        flt = f"(|{''.join(clauses)})"
        try:
            conn.search(
                s.group_search_base,
                flt,
                search_scope=ldap3.SUBTREE,
                attributes=[s.group_name_attribute, "gidNumber"],
                time_limit=int(max(1, s.receive_timeout)),
            )
        except LDAPException as e:
            raise DirectoryUnavailable(self._unavailable(e)) from None
        groups: dict[str, tuple[str, int | None]] = {}
        for entry in conn.entries:
            name = _first(entry, s.group_name_attribute)
            if not name:
                continue
            gid = _first(entry, "gidNumber")
            groups[name] = (normalize_dn(entry.entry_dn),
                            int(gid) if gid and gid.isdigit() else None)
        return groups

    def canonical_name(self, entry: ldap3.Entry, username: str) -> str:
        """One name per person: the entry's own login name.

        An entry may carry several values of the login attribute (``uid: alice``,
        ``uid: a.martin``); whichever is typed, the hub name is the value in the
        entry's RDN when the RDN is that attribute, otherwise the first value.
        Two names of one entry are never two people (two reviewers)."""
        attr = self.settings.username_attribute
        values = [str(v) for v in entry[attr].values] if attr in entry else []
        rdn_attr, _, rdn_value = entry.entry_dn.split(",", 1)[0].partition("=")
        if rdn_attr.strip().lower() == attr.lower():
            for v in values:
                if v.lower() == rdn_value.strip().lower():
                    return v
        return values[0] if values else username

    def _user(self, conn: ldap3.Connection, entry: ldap3.Entry, username: str) -> DirectoryUser:
        uid_number = _first(entry, "uidNumber")
        gid_number = _first(entry, "gidNumber")
        if not (uid_number and uid_number.isdigit() and gid_number and gid_number.isdigit()):
            raise UnknownUser(f"{entry.entry_dn} has no numeric uidNumber/gidNumber")
        attr = self.settings.username_attribute
        names = [str(v) for v in entry[attr].values] if attr in entry else [username]
        username = self.canonical_name(entry, username)
        groups = self._groups(conn, entry.entry_dn, sorted(set(names) | {username}))
        return DirectoryUser(
            username=username,
            dn=entry.entry_dn,
            cn=_first(entry, "cn") or username,
            mail=_first(entry, "mail"),
            language=_first(entry, "preferredLanguage"),
            uid_number=int(uid_number),
            gid_number=int(gid_number),
            groups=sorted(groups),
            group_gids={
                **{g: gid for g, (_, gid) in groups.items() if gid is not None},
                **{dn: gid for dn, gid in groups.values() if gid is not None},
            },
            group_dns=sorted(dn for dn, _ in groups.values()),
        )

    def authenticate(self, username: str, password: str) -> DirectoryUser:
        """Check a password. Raises a :class:`DirectoryError` subclass on any refusal."""
        username = self.validate_username(username)
        if not password:
            raise InvalidCredentials("empty password")
        if len(password) > MAX_PASSWORD_LENGTH or "\x00" in password:
            raise InvalidCredentials("password too long or contains NUL")
        service = self._service()
        try:
            entry = self._find_user(service, username)
            user_dn = entry.entry_dn
            user_bind = self._bind(user_dn, password)
            user_bind.unbind()
            return self._user(service, entry, username)
        finally:
            service.unbind()

    def lookup(self, username: str) -> DirectoryUser:
        """Current identity and groups of a user, without their password (for refresh)."""
        username = self.validate_username(username)
        service = self._service()
        try:
            entry = self._find_user(service, username)
            return self._user(service, entry, username)
        finally:
            service.unbind()

    def group_members(self, group: str) -> list[str]:
        """Login names of a group's members (DN-valued and uid-valued membership);
        ``group``: a DN or a name under the group search base."""
        s = self.settings
        conn = self._service()
        try:
            if is_dn(group):  # the group's own entry
                base, flt, scope = normalize_dn(group), "(objectClass=*)", ldap3.BASE
            else:
                base, scope = s.group_search_base, ldap3.SUBTREE
                flt = f"({s.group_name_attribute}={escape_filter_chars(group)})"
            conn.search(
                base, flt, scope,
                attributes=["member", "uniqueMember", "memberUid"],
                time_limit=int(max(1, s.receive_timeout)),
            )
            names: set[str] = set()
            prefix = f"{s.username_attribute.lower()}="
            for entry in conn.entries:
                for attr in ("member", "uniqueMember"):
                    if attr in entry:
                        for dn in entry[attr].values:
                            first = str(dn).split(",", 1)[0]
                            if first.lower().startswith(prefix):
                                names.add(first.split("=", 1)[1])
                if "memberUid" in entry:
                    names.update(str(v) for v in entry["memberUid"].values)
            return sorted(names)
        except LDAPNoSuchObjectResult:
            return []
        except LDAPException as e:
            raise DirectoryUnavailable(self._unavailable(e)) from None
        finally:
            conn.unbind()

    def groups_named(self, name: str) -> list[str]:
        """DNs of the groups whose name is ``name`` under ``group_search_base``."""
        s = self.settings
        conn = self._service()
        try:
            conn.search(s.group_search_base,
                        f"({s.group_name_attribute}={escape_filter_chars(name)})",
                        ldap3.SUBTREE, attributes=[], size_limit=10,
                        time_limit=int(max(1, s.receive_timeout)))
            return sorted(e.entry_dn for e in conn.entries)
        except LDAPException as e:
            raise DirectoryUnavailable(self._unavailable(e)) from None
        finally:
            conn.unbind()

    def ping(self) -> None:
        """Bind as the service account; raises DirectoryUnavailable when that fails."""
        self._service().unbind()


# ---------------------------------------------------------------- membership


def projects_of(groups: Iterable[str], settings: Any) -> list[str]:
    """Slugs of the projects whose LDAP group is among ``groups`` (the one rule).

    ``groups``: a user's group names and normalised DNs
    (:attr:`DirectoryUser.memberships`); a project's ``ldap_group`` is a DN or
    a bare name (unique under the group search base: :func:`check_group_names`)."""
    have = set(groups)
    return sorted(slug for slug, p in settings.projects.items()
                  if group_key(p.ldap_group) in have)


@dataclass(frozen=True)
class Membership:
    """A user's membership of one project, as the directory says it now."""

    user: DirectoryUser
    project: str
    #: the project's group number (directory first, then ``gid`` in projects.yaml)
    project_gid: int


def membership(user: DirectoryUser, settings: Any, slug: str) -> Membership:
    """``user``'s membership of project ``slug``; raises :class:`NotAMember` or
    :class:`NoProjectGid`. ``KeyError`` for a project not in projects.yaml."""
    project = settings.projects[slug]
    if slug not in projects_of(user.memberships, settings):
        raise NotAMember(
            f"{user.username} is not a member of project {slug} in the directory "
            f"(group {project.ldap_group})"
        )
    gid = user.group_gids.get(group_key(project.ldap_group)) or project.gid
    if not gid:
        raise NoProjectGid(f"project {slug} has no group number in the directory")
    return Membership(user, slug, int(gid))


class MembershipResolver:
    """Asks the directory whether a user is a member of a project.

    ``cache_seconds`` keeps positive and negative answers that long (the
    services' re-check, at most 60 s); "the directory is unavailable" is never
    cached and never means yes. Blocking: call it from a thread.
    """

    def __init__(self, settings: Any, *, cache_seconds: float = 0.0,
                 directory: Directory | None = None) -> None:
        self.settings = settings
        self.cache_seconds = min(float(cache_seconds), 60.0)
        self.directory = directory or Directory(settings.ldap)
        self._cache: dict[str, tuple[float, DirectoryUser | DirectoryError]] = {}
        self._lock = threading.Lock()

    def lookup(self, username: str) -> DirectoryUser:
        """The user's directory entry (cached); raises like :meth:`Directory.lookup`."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(username)
        if hit and now - hit[0] < self.cache_seconds:
            if isinstance(hit[1], DirectoryError):
                raise hit[1]
            return hit[1]
        try:
            user = self.directory.lookup(username)
        except DirectoryUnavailable:
            raise
        except DirectoryError as e:
            self._remember(username, now, e)
            raise
        self._remember(username, now, user)
        return user

    def fresh(self, username: str) -> bool:
        """Whether :meth:`lookup` would answer ``username`` from its cache (no directory
        call: the caller need not go to a thread)."""
        with self._lock:
            hit = self._cache.get(username)
        return bool(hit) and time.monotonic() - hit[0] < self.cache_seconds

    def _remember(self, username: str, now: float, value: DirectoryUser | DirectoryError) -> None:
        if self.cache_seconds > 0:
            with self._lock:
                self._cache[username] = (now, value)

    def require(self, username: str, slug: str) -> Membership:
        """Membership of ``username`` in project ``slug`` or a :class:`DirectoryError`:
        :class:`NotAMember`, :class:`NoProjectGid`, :class:`UnknownUser`,
        :class:`InvalidUsername` (positive refusals) or :class:`DirectoryUnavailable`
        (nothing known: grant nothing, stop nothing)."""
        return membership(self.lookup(username), self.settings, slug)

    def projects(self, username: str) -> list[str]:
        """The user's projects now (raises like :meth:`lookup`)."""
        return projects_of(self.lookup(username).memberships, self.settings)


def check_group_names(settings: Any, directory: Directory | None = None) -> list[str]:
    """Check the configured groups named by a bare name (not a DN) against the directory.

    Returns one line per such group saying which DN it resolved to (write that
    DN in the config); raises :class:`~ecluse.config.ConfigError` when a name
    matches no group or several under ``group_search_base`` (its members could
    not be told apart), :class:`DirectoryUnavailable` when the directory
    cannot be asked.
    """
    directory = directory or Directory(settings.ldap)
    named = [(f"projects.{slug}.ldap_group", p.ldap_group)
             for slug, p in sorted(settings.projects.items())]
    named += [(f"projects.{slug}.data_owner_group", p.data_owner_group)
              for slug, p in sorted(settings.projects.items())
              if getattr(p, "data_owner_group", None)]
    named += [("ldap.output_checker_group", settings.ldap.output_checker_group),
              ("ldap.staff_group", settings.ldap.staff_group)]
    lines, errors = [], []
    base = settings.ldap.group_search_base
    for key, value in named:
        if is_dn(value):
            continue
        dns = directory.groups_named(value)
        if len(dns) == 1:
            lines.append(f"{key}: {value!r} is a bare name; it is {dns[0]!r} (unique under "
                         f"{base}): write the DN")
        elif not dns:
            errors.append(f"{key}: no group named {value!r} under {base}")
        else:
            errors.append(f"{key}: {len(dns)} groups are named {value!r} under {base} "
                          f"({'; '.join(dns)}): name the group by its DN")
    if errors:
        raise ConfigError("; ".join(errors))
    return lines
