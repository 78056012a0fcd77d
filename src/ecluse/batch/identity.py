"""Who acts (a hub user and their groups) and who a run executes as (an LDAP member)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..directory import (
    DirectoryError,
    DirectoryUnavailable,
    MembershipResolver,
    NoProjectGid,
    NotAMember,
)
from .errors import PermissionDenied, Unavailable


@dataclass(frozen=True)
class Identity:
    """A hub user as the batch service sees it."""

    name: str
    groups: frozenset[str] = field(default_factory=frozenset)
    staff_group: str = "staff"

    @property
    def is_staff(self) -> bool:
        return self.staff_group in self.groups


@dataclass(frozen=True)
class RunIdentity:
    """Who a run executes as: an LDAP project member, with the project's gid."""

    name: str
    uid: int
    gid: int
    project_gid: int


class _Recorder:
    """Audit sink used when no audit log is given (unit tests of the rules)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def record(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


def directory_resolver(settings: Any) -> Callable[[str, str], RunIdentity]:
    """Resolve (project, username) to a :class:`RunIdentity` from LDAP, failing closed."""
    resolver = MembershipResolver(settings)

    def resolve(project: str, username: str) -> RunIdentity:
        try:
            m = resolver.require(username, project)
        except DirectoryUnavailable as e:
            raise Unavailable(
                "project membership cannot be verified right now (the directory is "
                "unavailable); try again shortly", log_message=f"lookup {username}: {e}"
            ) from None
        except NotAMember:
            raise PermissionDenied(
                f"{username} is not a member of project {project} in the directory: a run "
                "executes as a current project member (--as-user)"
            ) from None
        except NoProjectGid:
            raise PermissionDenied(
                f"project {project} has no group number in the directory") from None
        except DirectoryError as e:
            raise PermissionDenied(f"{username} is not a valid directory user",
                                   log_message=f"lookup {username}: {e.reason}") from None
        return RunIdentity(username, m.user.uid_number, m.user.gid_number, m.project_gid)

    return resolve
