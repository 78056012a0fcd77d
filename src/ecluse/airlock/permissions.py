"""Who may do what (permissions) and what a request allows (policies).

Permissions look at the user's hub groups; policies look at the request's
state and files. Every check raises a domain exception
(:class:`~ecluse.airlock.errors.PermissionDenied`,
:class:`~ecluse.airlock.errors.InvalidTransition`,
:class:`~ecluse.airlock.errors.PolicyViolation`) and returns nothing a caller
could ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..people import Person
from .errors import InvalidTransition, NotFound, PermissionDenied, PolicyViolation
from .rules import (
    EDITABLE_STATES,
    FILE_ACCESS,
    PURGEABLE_STATES,
    TRANSITIONS,
    VERDICT_RULES,
    Action,
    Actor,
    FileView,
    State,
    Transition,
    Verdict,
    find_transition,
    transitions_for,
)


@dataclass(frozen=True)
class Identity:
    """A signed-in hub user as the airlock sees it."""

    name: str
    groups: frozenset[str] = field(default_factory=frozenset)
    checker_group: str = "output-checkers"
    staff_group: str = "staff"
    #: the projects the credential in use may act for (``None``: not restricted,
    #: e.g. the CLI): a workspace's token names its own project only
    projects: frozenset[str] | None = None
    #: the directory entry and uidNumber behind the name (set by the service when it
    #: asks the directory; two names of one person are one requester, one reviewer)
    dn: str | None = None
    uid_number: int | None = None

    @property
    def person(self) -> Person:
        return Person(self.name, self.dn, self.uid_number)

    @property
    def is_checker(self) -> bool:
        return self.checker_group in self.groups

    @property
    def is_staff(self) -> bool:
        return self.staff_group in self.groups

    def is_member(self, project: str) -> bool:
        """A member of ``project`` acting for it with this credential."""
        return project in self.groups and (self.projects is None or project in self.projects)

    def in_project(self, project: str) -> bool:
        """A member of ``project``, whatever credential is in use (independence rules)."""
        return project in self.groups


class ProjectLike(Protocol):
    members_may_review: bool


class RequestLike(Protocol):
    id: str
    project: str
    requester: str
    state: str


def requester_of(req: RequestLike) -> Person:
    """The person who made ``req`` (its DN and uidNumber when recorded)."""
    return Person(req.requester, getattr(req, "requester_dn", None),
                  getattr(req, "requester_uid_number", None))


def made_by(user: Identity, req: RequestLike) -> str | None:
    """Why ``user`` is the person who made ``req``, under whichever name (None: not)."""
    return user.person.same_as(requester_of(req))


def actors_for(user: Identity, req: RequestLike, project: ProjectLike | None) -> set[Actor]:
    """The roles ``user`` holds for this one request.

    The requester acts under the name the request records; as a checker or staff
    they are excluded under any of their names (same directory entry or uidNumber).
    """
    actors: set[Actor] = set()
    own = made_by(user, req) is not None
    if user.name == req.requester and user.is_member(req.project):
        actors.add(Actor.REQUESTER)
    if user.is_checker and not own:
        members_ok = bool(project and project.members_may_review)
        if members_ok or not user.in_project(req.project):
            actors.add(Actor.CHECKER)
    if user.is_staff and not own:
        # staff administer other people's requests: nobody releases their own export
        actors.add(Actor.STAFF)
    return actors


def _why_not(user: Identity, req: RequestLike, allowed: frozenset[Actor], action: Action) -> str:
    """A precise reason for a refusal."""
    if allowed == {Actor.REQUESTER}:
        if user.name != req.requester:
            return f"only the requester ({req.requester}) may {action.value.replace('_', ' ')}"
        if user.in_project(req.project):
            return (f"this token acts for {_acts_for(user)}, not for project {req.project}")
        return f"you are no longer a member of project {req.project}"
    if Actor.CHECKER in allowed:
        if user.name == req.requester:
            return "you made this request: a requester never reviews or releases their own export"
        why = made_by(user, req)
        if why:
            return (f"you made this request as {req.requester!r} (the directory says "
                    f"{user.name!r} and {req.requester!r} are one person: {why}): a requester "
                    "never reviews or releases their own export, under any name")
        if user.is_checker and user.in_project(req.project):
            return (
                f"you are a member of project {req.project}: its members may not review "
                "its exports"
            )
        who = "output checkers or staff" if Actor.STAFF in allowed else "output checkers"
        return f"only {who} may {action.value.replace('_', ' ')}"
    if Actor.STAFF in allowed:
        return f"only the requester or staff may {action.value.replace('_', ' ')}"
    return f"you may not {action.value}"  # pragma: no cover - tables always name an actor


def require_transition(
    user: Identity,
    req: RequestLike,
    project: ProjectLike | None,
    action: Action,
    target: State | None = None,
) -> Transition:
    """Return the transition ``action`` takes, or raise why it is refused.

    The state is checked first (a closed request says so whoever asks), then
    the actor.
    """
    state = State(req.state)
    options = transitions_for(action, state)
    if not options:
        raise InvalidTransition(
            f"request {req.id} is {state.value}: cannot {action.value.replace('_', ' ')} "
            f"(allowed from: {', '.join(sorted(_sources(action)))})"
        )
    if target is not None:
        chosen = find_transition(action, state, target)
        if chosen is None:  # pragma: no cover - callers compute target from the table
            raise InvalidTransition(f"request {req.id}: {state.value} -> {target.value} refused")
    else:
        chosen = options[0]
    if not (actors_for(user, req, project) & chosen.actors):
        raise PermissionDenied(_why_not(user, req, chosen.actors, action))
    return chosen


def _sources(action: Action) -> set[str]:
    return {t.source.value for t in TRANSITIONS if t.action is action}


# ---------------------------------------------------------------- viewing


def require_view(user: Identity, req: RequestLike, project: ProjectLike | None) -> set[Actor]:
    """Who may see a request: its project's members, checkers (once submitted), staff.

    Anybody else gets 404, so request ids of other projects are not confirmed.
    """
    actors = actors_for(user, req, project)
    if user.is_member(req.project) or Actor.STAFF in actors:
        return actors
    if user.is_checker and req.state != State.DRAFT:
        return actors
    raise NotFound(f"no request {req.id}")


def file_views(
    user: Identity, req: RequestLike, project: ProjectLike | None, file_version: int
) -> set[FileView]:
    """What of one file of ``req`` the user may see (``FILE_ACCESS``; nothing else).

    Members of the request's project also see the reports of its files (the
    data is theirs); nobody sees more than the table allows.
    """
    state = State(req.state)
    actors = actors_for(user, req, project)
    current = file_version == getattr(req, "version", file_version)
    views = {
        a.view for a in FILE_ACCESS
        if state in a.states and actors & a.actors and (current or not a.current_version_only)
    }
    if user.is_member(req.project) and state not in PURGEABLE_STATES:
        views.add(FileView.REPORT)
    return views


def require_file_view(
    user: Identity, req: RequestLike, project: ProjectLike | None, view: FileView,
    file_version: int,
) -> None:
    """Raise, with the precise reason, unless the user may see ``view`` of the file."""
    if view in file_views(user, req, project, file_version):
        return
    state = State(req.state)
    actors = actors_for(user, req, project)
    if view is FileView.CONTENT:
        if Actor.REQUESTER not in actors:
            who = (f"the requester ({req.requester})" if user.name != req.requester
                   else "the requester, while a member of the project")
            raise PermissionDenied(
                "the bytes of a staged file go only to " + who + ", once the request is "
                "released; output checkers review through the preview"
            )
        if state is not State.RELEASED:
            raise PermissionDenied(
                f"request {req.id} is {state.value}: files can be downloaded once released"
            )
        raise PermissionDenied(
            f"this file belongs to version {file_version} of request {req.id}, which was "
            f"not released: only the files of the released version {req.version} leave"
        )
    if state in PURGEABLE_STATES:
        raise PermissionDenied(f"request {req.id} is {state.value}: its files are not shown")
    if view is FileView.PREVIEW and Actor.CHECKER in actors:
        raise PermissionDenied(
            f"request {req.id} is {state.value}: previews are shown to checkers only while "
            "it awaits review"
        )
    raise PermissionDenied(f"you may not see the {view.value} of this file")


def require_file_content(
    user: Identity, req: RequestLike, project: ProjectLike | None, file_version: int
) -> str:
    """The raw bytes: only the requester, once released, of the released version."""
    require_file_view(user, req, project, FileView.CONTENT, file_version)
    return "download"


def _acts_for(user: Identity) -> str:
    if not user.projects:
        return "no project (a token acts for the one project its scopes name)"
    return "project " + ", ".join(sorted(user.projects))


def require_create(user: Identity, project: str, known: bool) -> None:
    if not known:
        raise NotFound(f"no project {project!r}")
    if user.in_project(project) and not user.is_member(project):
        raise PermissionDenied(f"this token acts for {_acts_for(user)}, not for project "
                               f"{project}")
    if not user.is_member(project):
        raise PermissionDenied(f"you are not a member of project {project}")


def require_editable(user: Identity, req: RequestLike) -> None:
    """Files may be added or removed by the requester in draft / changes requested only."""
    if user.name == req.requester and user.in_project(req.project) and not user.is_member(
            req.project):
        raise PermissionDenied(f"this token acts for {_acts_for(user)}, not for project "
                               f"{req.project}")
    if user.name != req.requester or not user.is_member(req.project):
        raise PermissionDenied(f"only the requester ({req.requester}) may change its files")
    if State(req.state) not in EDITABLE_STATES:
        raise InvalidTransition(
            f"request {req.id} is {req.state}: its files are immutable (files can be "
            "changed in draft or when changes are requested)"
        )


# ---------------------------------------------------------------- policies


def require_approvable(name: str, verdict: str, override_reason: str | None) -> None:
    """A file may be approved: never when blocked; with a written reason when it
    failed the checks or could not be judged by them (``review``, checker errors,
    unknown verdicts)."""
    try:
        v = Verdict(verdict)
    except ValueError:
        v = Verdict.REVIEW
    approvable, needs_reason = VERDICT_RULES[v]
    if not approvable:
        raise PolicyViolation(
            f"file {name} is blocked ({v.value}): row-level or non-aggregated output can "
            "never be approved; request changes or reject"
        )
    if needs_reason and not (override_reason or "").strip():
        if v is Verdict.FAIL:
            why = "failed the disclosure checks"
        else:
            why = ("could not be judged by the automatic checks (verdict review: unknown "
                   "format, reader error, timeout or a file that is not what it looks like)")
        raise PolicyViolation(
            f"file {name} {why}: approving it needs a written override reason"
        )
