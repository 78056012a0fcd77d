"""Business rules as data: states, actions, who may act, what each emits, and
what of a file each may see (:data:`FILE_ACCESS`).

The tables here are the single source of truth for the request life cycle;
:mod:`ecluse.airlock.service` looks every action up in them and
``tests/airlock/test_rules.py`` checks they are complete.

Life cycle::

    draft ──submit──► submitted ──approve──► in_review ──approve (N-th)──► approved ──release──► released
      │                  │  │                   │  │                          │
      │                  │  └─request_changes───┼──┴──► changes_requested ──resubmit──► submitted
      │                  └──────reject──────────┴─────► rejected
      └──── withdraw (from any open state) ────────────► withdrawn

``approve`` from ``submitted``/``in_review`` lands in ``approved`` when the
approval completes the required number, otherwise in ``in_review``.
``release_partial`` (``submitted``/``in_review`` → ``released``) releases only
the files with the required approvals of their own (per-file decisions), when
every other file is held with a reason (changes requested on it, or blocked).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..auditevents import AuditEvent


class State(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    RELEASED = "released"
    WITHDRAWN = "withdrawn"


class Action(StrEnum):
    SUBMIT = "submit"
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"
    REJECT = "reject"
    RESUBMIT = "resubmit"
    RELEASE = "release"
    #: release only the files two checkers approved; the others are held (their
    #: changes requested, or blocked) and recorded so
    RELEASE_PARTIAL = "release_partial"
    WITHDRAW = "withdraw"


class Actor(StrEnum):
    """Who may act: derived from hub groups for one request."""

    REQUESTER = "requester"  # the author of the request, still a member of its project
    CHECKER = "checker"  # an output checker allowed to review this request
    STAFF = "staff"  # platform staff


class Verdict(StrEnum):
    """Mirror of ``ecluse.sdc.Verdict`` values (kept here so the rules need no sdc import)."""

    PASS = "pass"
    FAIL = "fail"
    BLOCK = "block"
    REVIEW = "review"


@dataclass(frozen=True)
class Transition:
    action: Action
    source: State
    target: State
    actors: frozenset[Actor]
    event: str


def _t(action: Action, source: State, target: State, actors: set[Actor], event: str) -> Transition:
    return Transition(action, source, target, frozenset(actors), event)


R, C, S = Actor.REQUESTER, Actor.CHECKER, Actor.STAFF

#: every allowed state change; anything not listed is refused
TRANSITIONS: tuple[Transition, ...] = (
    _t(Action.SUBMIT, State.DRAFT, State.SUBMITTED, {R}, AuditEvent.AIRLOCK_REQUEST_SUBMITTED),
    _t(Action.APPROVE, State.SUBMITTED, State.IN_REVIEW, {C}, AuditEvent.AIRLOCK_REVIEW_APPROVED),
    _t(Action.APPROVE, State.IN_REVIEW, State.IN_REVIEW, {C}, AuditEvent.AIRLOCK_REVIEW_APPROVED),
    _t(Action.APPROVE, State.SUBMITTED, State.APPROVED, {C}, AuditEvent.AIRLOCK_REQUEST_APPROVED),
    _t(Action.APPROVE, State.IN_REVIEW, State.APPROVED, {C}, AuditEvent.AIRLOCK_REQUEST_APPROVED),
    _t(
        Action.REQUEST_CHANGES, State.SUBMITTED, State.CHANGES_REQUESTED, {C},
        AuditEvent.AIRLOCK_REQUEST_CHANGES_REQUESTED,
    ),
    _t(
        Action.REQUEST_CHANGES, State.IN_REVIEW, State.CHANGES_REQUESTED, {C},
        AuditEvent.AIRLOCK_REQUEST_CHANGES_REQUESTED,
    ),
    _t(Action.REJECT, State.SUBMITTED, State.REJECTED, {C}, AuditEvent.AIRLOCK_REQUEST_REJECTED),
    _t(Action.REJECT, State.IN_REVIEW, State.REJECTED, {C}, AuditEvent.AIRLOCK_REQUEST_REJECTED),
    _t(
        Action.RESUBMIT, State.CHANGES_REQUESTED, State.SUBMITTED, {R},
        AuditEvent.AIRLOCK_REQUEST_RESUBMITTED,
    ),
    _t(Action.RELEASE, State.APPROVED, State.RELEASED, {C, S}, AuditEvent.AIRLOCK_REQUEST_RELEASED),
    _t(
        Action.RELEASE_PARTIAL, State.SUBMITTED, State.RELEASED, {C, S},
        AuditEvent.AIRLOCK_REQUEST_RELEASED,
    ),
    _t(
        Action.RELEASE_PARTIAL, State.IN_REVIEW, State.RELEASED, {C, S},
        AuditEvent.AIRLOCK_REQUEST_RELEASED,
    ),
    _t(Action.WITHDRAW, State.DRAFT, State.WITHDRAWN, {R, S}, AuditEvent.AIRLOCK_REQUEST_WITHDRAWN),
    _t(Action.WITHDRAW, State.SUBMITTED, State.WITHDRAWN, {R, S}, AuditEvent.AIRLOCK_REQUEST_WITHDRAWN),
    _t(Action.WITHDRAW, State.IN_REVIEW, State.WITHDRAWN, {R, S}, AuditEvent.AIRLOCK_REQUEST_WITHDRAWN),
    _t(
        Action.WITHDRAW, State.CHANGES_REQUESTED, State.WITHDRAWN, {R, S},
        AuditEvent.AIRLOCK_REQUEST_WITHDRAWN,
    ),
    _t(Action.WITHDRAW, State.APPROVED, State.WITHDRAWN, {R, S}, AuditEvent.AIRLOCK_REQUEST_WITHDRAWN),
)

#: states a request never leaves
FINAL_STATES: frozenset[State] = frozenset({State.REJECTED, State.RELEASED, State.WITHDRAWN})

#: states in which the requester may add or remove files of the current version
EDITABLE_STATES: frozenset[State] = frozenset({State.DRAFT, State.CHANGES_REQUESTED})

#: states that put a request in the checkers' queue
REVIEWABLE_STATES: frozenset[State] = frozenset({State.SUBMITTED, State.IN_REVIEW})

#: what a reviewer may decide, and the action it triggers
DECISIONS: dict[str, Action] = {
    "approve": Action.APPROVE,
    "request_changes": Action.REQUEST_CHANGES,
    "reject": Action.REJECT,
}

#: what a checker may decide on one file (per-file decisions); the request-level
#: ``approve`` counts as approving every file of the version
FILE_DECISIONS: dict[str, str] = {
    "approve": AuditEvent.AIRLOCK_FILE_APPROVED,
    "request_changes": AuditEvent.AIRLOCK_FILE_CHANGES_REQUESTED,
}

#: per verdict: may a checker approve a file with it, and is a written reason needed.
#: ``review`` is a file the checks could not judge (unknown format, reader error,
#: timeout, a text file sniffed as binary): approving it is a human judgement that
#: must be written down, like approving a ``fail``.
VERDICT_RULES: dict[Verdict, tuple[bool, bool]] = {
    Verdict.PASS: (True, False),
    Verdict.REVIEW: (True, True),
    Verdict.FAIL: (True, True),
    Verdict.BLOCK: (False, False),
}


class FileView(StrEnum):
    """What of a staged file someone may see."""

    CONTENT = "content"  # the raw bytes (a download)
    PREVIEW = "preview"  # the preview rendered once, when the file was checked
    REPORT = "report"  # the verdict's findings
    PROPOSAL = "proposal"  # the fixed version the airlock proposes for a ``fail`` table


@dataclass(frozen=True)
class FileAccess:
    """Who may see ``view`` of a file, in which states of its request.

    ``current_version_only``: files of earlier versions (reviewed, then changed)
    are excluded.
    """

    view: FileView
    states: frozenset[State]
    actors: frozenset[Actor]
    current_version_only: bool
    event: str


#: states whose staged files are purged once ``purge_after_days`` have passed
PURGEABLE_STATES: frozenset[State] = frozenset({State.WITHDRAWN, State.REJECTED})

#: states in which the requester may look at the previews of their own files
_REQUESTER_PREVIEW_STATES = frozenset(
    {State.DRAFT, State.SUBMITTED, State.IN_REVIEW, State.CHANGES_REQUESTED, State.APPROVED}
)

#: the two-person rule on bytes: raw bytes only to the requester, once released,
#: and only of the version that was released; checkers see previews while the
#: request is reviewable (earlier versions included, for comparison); withdrawn
#: and rejected requests show nothing. Anything not listed is refused.
FILE_ACCESS: tuple[FileAccess, ...] = (
    FileAccess(FileView.CONTENT, frozenset({State.RELEASED}), frozenset({R}), True,
               AuditEvent.AIRLOCK_FILE_DOWNLOADED),
    FileAccess(FileView.PREVIEW, REVIEWABLE_STATES, frozenset({C}), False,
               AuditEvent.AIRLOCK_REQUEST_VIEWED),
    FileAccess(FileView.PREVIEW, _REQUESTER_PREVIEW_STATES, frozenset({R}), False,
               AuditEvent.AIRLOCK_REQUEST_VIEWED),
    # the airlock's fixed version of the requester's own failing table, like the
    # preview: to the requester only (checkers see that it exists, in the report view)
    FileAccess(FileView.PROPOSAL, _REQUESTER_PREVIEW_STATES, frozenset({R}), False,
               AuditEvent.AIRLOCK_PROPOSAL_VIEWED),
    FileAccess(FileView.REPORT, frozenset(State) - PURGEABLE_STATES,
               frozenset({R, C, S}), False, AuditEvent.AIRLOCK_REQUEST_VIEWED),
)

#: rows shown of a ``block`` file's masked sample (never its content)
BLOCK_SAMPLE_ROWS = 20

#: audit events emitted outside state changes
EVENTS: dict[str, str] = {
    "create": AuditEvent.AIRLOCK_REQUEST_CREATED,
    "file_add": AuditEvent.AIRLOCK_FILE_UPLOADED,
    "file_checked": AuditEvent.AIRLOCK_FILE_CHECKED,
    "file_remove": AuditEvent.AIRLOCK_FILE_REMOVED,
    "file_describe": AuditEvent.AIRLOCK_FILE_DESCRIBED,
    "quota": AuditEvent.AIRLOCK_FILE_QUOTA_EXCEEDED,
    "view": AuditEvent.AIRLOCK_REQUEST_VIEWED,
    "download": AuditEvent.AIRLOCK_FILE_DOWNLOADED,
    "integrity": AuditEvent.AIRLOCK_FILE_INTEGRITY_FAILURE,
    "purge": AuditEvent.AIRLOCK_REQUEST_PURGED,
    "denied": AuditEvent.AIRLOCK_PERMISSION_DENIED,
    "proposal_view": AuditEvent.AIRLOCK_PROPOSAL_VIEWED,
    "proposal_accept": AuditEvent.AIRLOCK_PROPOSAL_ACCEPTED,
    "compare": AuditEvent.AIRLOCK_VERSIONS_COMPARED,
}


def transitions_for(action: Action, source: State) -> list[Transition]:
    """Transitions ``action`` may take from ``source`` (empty: not allowed)."""
    return [t for t in TRANSITIONS if t.action is action and t.source is source]


def file_access_for(view: FileView, state: State) -> list[FileAccess]:
    """Rows of :data:`FILE_ACCESS` that allow ``view`` in ``state`` (empty: nobody)."""
    return [a for a in FILE_ACCESS if a.view is view and state in a.states]


def find_transition(action: Action, source: State, target: State) -> Transition | None:
    for t in TRANSITIONS:
        if t.action is action and t.source is source and t.target is target:
            return t
    return None
