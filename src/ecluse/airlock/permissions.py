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

from .errors import InvalidTransition, NotFound, PermissionDenied, PolicyViolation
from .rules import (
    EDITABLE_STATES,
    TRANSITIONS,
    VERDICT_RULES,
    Action,
    Actor,
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


def actors_for(user: Identity, req: RequestLike, project: ProjectLike | None) -> set[Actor]:
    """The roles ``user`` holds for this one request."""
    actors: set[Actor] = set()
    if user.name == req.requester and user.is_member(req.project):
        actors.add(Actor.REQUESTER)
    if user.is_checker and user.name != req.requester:
        members_ok = bool(project and project.members_may_review)
        if members_ok or not user.in_project(req.project):
            actors.add(Actor.CHECKER)
    if user.is_staff and user.name != req.requester:
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


def require_file_content(user: Identity, req: RequestLike, project: ProjectLike | None) -> str:
    """Who may read a file's bytes, and why: ``download`` or ``review``.

    The requester downloads once released; checkers who may review it read
    files while it is in review. Staff administer but do not read outputs.
    """
    actors = actors_for(user, req, project)
    if req.state == State.RELEASED and Actor.REQUESTER in actors:
        return "download"
    if Actor.CHECKER in actors and req.state != State.DRAFT:
        return "review"
    if req.state != State.RELEASED and user.name == req.requester:
        raise PermissionDenied(
            f"request {req.id} is {req.state}: files can be downloaded once released"
        )
    raise PermissionDenied("only the requester (once released) or a reviewing checker may "
                           "read this file")


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
    """A file may be approved: never when blocked; with a written reason when failed."""
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
        raise PolicyViolation(
            f"file {name} failed the disclosure checks: approving it needs a written "
            "override reason"
        )
