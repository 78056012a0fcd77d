"""The airlock's business logic: the one layer every view, API and CLI calls.

Every public method takes the acting :class:`~.permissions.Identity`, checks
permissions and policies (raising domain exceptions), changes the database in
one transaction with the request row locked, then records the audit event.
Methods are synchronous (SQLAlchemy, file hashing, disclosure checks); the web
layer runs them in a thread pool.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, not_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

from ..directory import DirectoryError, DirectoryUnavailable
from ..people import People, Person, distinct
from ..sandbox.remote import audit_for
from ..settings.airlock import AirlockSettings, airlock_settings
from . import db, ledger, release
from .background import CHECKING, BackgroundChecks
from .checkbox import SandboxChecker
from .checks import ProcessChecker, inspect_staged, unjudged
from .diff import compare_files
from .errors import (
    IdentityUnavailable,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    PolicyViolation,
    QuotaExceeded,
    StillChecking,
)
from .models import (
    File,
    FileDecision,
    HistoryEntry,
    LedgerEntry,
    Request,
    Review,
    as_utc,
    utcnow,
)
from .notify import Notifier, notifier_for
from .permissions import (
    Identity,
    ProjectLike,
    actors_for,
    file_views,
    requester_of,
    require_approvable,
    require_create,
    require_editable,
    require_file_content,
    require_file_view,
    require_transition,
    require_view,
)
from .rules import (
    DECISIONS,
    EVENTS,
    FILE_DECISIONS,
    FINAL_STATES,
    PURGEABLE_STATES,
    REVIEWABLE_STATES,
    VERDICT_RULES,
    Action,
    Actor,
    FileView,
    State,
    Verdict,
    transitions_for,
)
from .storage import Staging, StagingWriter, clean_filename

log = logging.getLogger(__name__)

REQUEST_ID_PREFIX = "ar-"


class _Recorder:
    """Audit sink used when no audit log is configured (tests of pure rules)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def record(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


@dataclass
class FileContent:
    name: str
    sha256: str
    size: int
    purpose: str
    chunks: Iterator[bytes]


# The statements of the API's most frequent calls, built once with their parameters
# bound at each call: an upload runs them inside the database's write lock (issue 21
# item 1: throughput), where building a statement anew cost about as much as running it.

_REQUEST = select(Request).where(Request.id == bindparam("request_id"))
_LOCK_REQUEST = _REQUEST.with_for_update()

#: how many files the current version has, and whether one is named ``name``
_ROOM = select(
    func.count(File.id), func.max(case((File.name == bindparam("name"), 1), else_=0))
).where(File.request_id == bindparam("request_id"), File.version == bindparam("version"))

_FILE_NAMED = select(File).where(
    File.request_id == bindparam("request_id"), File.version == bindparam("version"),
    File.name == bindparam("name"))


def _staged(replacing: bool) -> Any:
    """A user's staged bytes (:meth:`AirlockService._staged_bytes`): the distinct objects
    of the files of ``user``'s open requests, without the file ``name`` of the current
    version of request ``rid`` when ``replacing``; and whether ``sha256`` is one."""
    held = [Request.requester == bindparam("user"),
            Request.state.not_in([st.value for st in FINAL_STATES]),
            Request.purged_at.is_(None)]
    if replacing:
        held.append(not_(and_(File.request_id == bindparam("rid"),
                              File.name == bindparam("name"),
                              File.version == Request.version)))
    objects = (
        select(File.sha256.label("sha256"), func.max(File.size).label("size"))
        .join(Request, File.request_id == Request.id).where(*held)
        .group_by(File.sha256).subquery()
    )
    return select(func.coalesce(func.sum(objects.c.size), 0),
                  func.max(case((objects.c.sha256 == bindparam("sha256"), 1), else_=0)))


_STAGED = {replacing: _staged(replacing) for replacing in (False, True)}


class AirlockService:
    """Requests, files, reviews and release, over one database and one staging area."""

    def __init__(
        self,
        *,
        engine: Engine,
        staging: Staging,
        projects: Mapping[str, ProjectLike],
        policy_for: Callable[[str], Any],
        audit: Any | None = None,
        settings: AirlockSettings | None = None,
        checker: Callable[..., dict[str, Any]] = inspect_staged,
        read_engine: Engine | None = None,
        people: Callable[[str], Person] | None = None,
        notifier: Notifier | None = None,
        background_checks: int = 0,
    ) -> None:
        self.engine = engine
        #: uploads answer before their check (verdict ``checking``), checked by this
        #: many threads (``None``: each upload is checked before it answers)
        self.checks: BackgroundChecks | None = (
            BackgroundChecks(self._check_in_background, background_checks)
            if background_checks else None)
        #: e-mails of transitions, queued after their commit (``None``: no e-mail)
        self.notifier = notifier
        #: name -> Person through the directory (``None``: people told apart by name)
        self.people = people
        self.read_engine = read_engine or engine
        self.checker = checker
        #: differencing of a request's files against each other and the ledger: where
        #: the checks run (a check sandbox, given the ledger read-only), else here
        self.differ: Callable[..., list] = getattr(checker, "difference", None) or _difference_here
        #: read-only sessions (SQLite: deferred, never wait for the writer)
        self.sessions = db.session_factory(self.read_engine)
        self._write_sessions = db.session_factory(engine)
        self.staging = staging
        self.projects = projects
        self.policy_for = policy_for
        self.audit = audit if audit is not None else _Recorder()
        self.settings = settings or AirlockSettings()

    @classmethod
    def from_settings(
        cls, settings: Any, *, audit: Any | None = None, process_checks: bool = False,
        background_checks: bool = False,
    ) -> AirlockService:
        """Build the service of a deployment and bring its database to the latest schema.

        ``process_checks``: run disclosure checks away from the calling thread (the web
        service): in a one-shot sandbox per file (``check_runner: sandbox``, the default)
        or in a process pool (``process``). ``background_checks``: uploads answer at once
        with the verdict ``checking`` and are checked by ``check_processes`` threads
        (the web service; :mod:`.background`).
        """
        conf = airlock_settings(settings)
        checker: Any = inspect_staged
        if process_checks and conf.check_runner == "sandbox":
            checker = SandboxChecker(settings, conf)
        elif process_checks and conf.check_processes:
            checker = ProcessChecker(conf.check_processes, conf.check_timeout)
        staging = Staging(conf.resolved_storage_dir(settings.state_dir))
        staging.prepare()
        # <db_dir>/airlock/airlock.sqlite by default: on the state volume, in a folder of
        # the airlock's own (an earlier layout's database is moved there first)
        url = conf.resolved_database_url(settings.db_dir)
        engine = db.make_engine(url)
        db.upgrade(engine)
        read_engine = db.make_engine(url, readonly=True) if url.startswith("sqlite") else None
        people = None
        if conf.reviewers_by == "directory":
            people = People(settings)
        audit = audit if audit is not None else audit_for(settings, "airlock")
        notifier = notifier_for(settings, conf, audit)
        return cls(
            engine=engine,
            staging=staging,
            projects=settings.projects,
            policy_for=settings.policy_for,
            audit=audit,
            settings=conf,
            checker=checker,
            read_engine=read_engine,
            people=people,
            notifier=notifier,
            background_checks=max(1, conf.check_processes) if background_checks else 0,
        )

    def close(self) -> None:
        if self.checks is not None:
            self.checks.shutdown()
        shutdown = getattr(self.checker, "shutdown", None)
        if shutdown is not None:
            shutdown()
        if self.notifier is not None:
            self.notifier.close()
        self.engine.dispose()
        self.read_engine.dispose()

    def identity(self, name: str, groups: Iterable[str]) -> Identity:
        return Identity(
            name=name,
            groups=frozenset(groups),
            checker_group=self.settings.checker_group,
            staff_group=self.settings.staff_group,
        )

    # ------------------------------------------------------------ people

    def _as_person(self, user: Identity) -> Identity:
        """``user`` with the DN and uidNumber the directory gives their name now.

        Deciding who reviews needs them: a directory that does not answer, or does
        not know the name, refuses the action (fail closed)."""
        if self.people is None:
            return user
        try:
            p = self.people(user.name)
        except DirectoryUnavailable as e:
            raise IdentityUnavailable(
                "the directory (LDAP) does not answer: reviews and releases wait until it "
                "says who you are (one person, one reviewer); try again in a few minutes",
                log_message=f"{user.name}: {e}") from None
        except DirectoryError as e:
            raise PermissionDenied(
                f"the directory has no entry for {user.name!r}: only a person the directory "
                "knows may review or release", log_message=f"{user.name}: {e}") from None
        return replace(user, dn=p.dn, uid_number=p.uid_number)

    def _known(self, name: str, dn: str | None, uid_number: int | None) -> Person:
        """A recorded requester or reviewer: as recorded, or (recorded without the
        directory's word) as the directory says now; a name it no longer knows
        stays a bare name."""
        if dn or uid_number is not None or self.people is None:
            return Person(name, dn, uid_number)
        try:
            return self.people(name)
        except DirectoryUnavailable as e:
            raise IdentityUnavailable(
                "the directory (LDAP) does not answer: reviews and releases wait until it "
                f"can say who {name!r} is; try again in a few minutes",
                log_message=f"{name}: {e}") from None
        except DirectoryError:
            return Person(name)

    def _persons(self, req: Request) -> None:
        """Record the requester's and reviewers' DN/uidNumber where still missing
        (requests from before they were recorded), inside the caller's transaction."""
        if self.people is None:
            return
        if not (req.requester_dn or req.requester_uid_number is not None):
            p = self._known(req.requester, None, None)
            req.requester_dn, req.requester_uid_number = p.dn, p.uid_number
        for r in req.current_reviews():
            if not (r.reviewer_dn or r.reviewer_uid_number is not None):
                p = self._known(r.reviewer, None, None)
                r.reviewer_dn, r.reviewer_uid_number = p.dn, p.uid_number

    @staticmethod
    def _reviewer(r: Review) -> Person:
        return Person(r.reviewer, r.reviewer_dn, r.reviewer_uid_number)

    def _approvers(self, req: Request) -> list[Person]:
        """The distinct people who approved the current version."""
        return distinct([self._reviewer(r) for r in req.current_reviews()
                         if r.decision == "approve"])

    # ------------------------------------------------------------ internals

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """One write transaction whose audit events are recorded before it commits.

        Nothing changes without its audit record: an audit failure rolls the change
        back; a commit that fails after the events were written is recorded as such.
        """
        with self._write_sessions() as session:
            session.begin()
            pending: list[tuple[str, Identity, Request, dict[str, Any]]] = []
            session.info["audit"] = pending
            try:
                yield session
                session.flush()
                for event, user, req, details in pending:
                    self._audit(event, user, req, **details)
                notices = [
                    (event, {"request_id": req.id, "project": req.project,
                             "requester": req.requester, "actor": user.name,
                             "version": details.get("version")})
                    for event, user, req, details in pending
                ]
            except BaseException:
                session.rollback()
                raise
            try:
                session.commit()
            except Exception as e:
                for event, user, req, details in pending:
                    self._audit(event, user, req,
                                **{**details, "outcome": "error", "error": type(e).__name__})
                raise
        self._notify(notices)

    def _notify(self, notices: list[tuple[str, dict[str, Any]]]) -> None:
        """Queue the e-mails of committed events; a failure here never fails the change."""
        if self.notifier is None:
            return
        for event, fields in notices:
            try:
                self.notifier.notify(event, **fields)
            except Exception:
                log.exception("could not queue the e-mail of %s", event)

    @staticmethod
    def _later(s: Session, event: str, user: Identity, req: Request, **details: Any) -> None:
        """Queue an audit event of the current write transaction (see :meth:`_tx`)."""
        s.info["audit"].append((event, user, req, details))

    def _load(self, session: Session, request_id: str, *, lock: bool = False) -> Request:
        if not isinstance(request_id, str) or not request_id.startswith(REQUEST_ID_PREFIX):
            raise NotFound(f"no request {str(request_id)[:40]!r}")
        req = session.scalars(_LOCK_REQUEST if lock else _REQUEST,
                              {"request_id": request_id}).first()
        if req is None:
            raise NotFound(f"no request {request_id}")
        return req

    def _project(self, slug: str) -> ProjectLike | None:
        return self.projects.get(slug)

    def _text(self, value: Any, field: str, *, required: bool, limit: int | None = None) -> str:
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise InvalidInput(f"{field}: expected a string")
        if "\x00" in value:
            raise InvalidInput(f"{field}: must not contain a NUL character")
        value = value.strip()
        limit = limit or self.settings.max_text_chars
        if required and not value:
            raise InvalidInput(f"{field}: must not be empty")
        if len(value) > limit:
            raise InvalidInput(f"{field}: at most {limit} characters (got {len(value)})")
        return value

    def _history(
        self, session: Session, req: Request, user: Identity, action: str, before: str,
        comment: str = "",
    ) -> HistoryEntry:
        entry = HistoryEntry(
            request_id=req.id, actor=user.name, action=action, from_state=before,
            to_state=req.state, version=req.version, comment=comment, ts=utcnow(),
        )
        session.add(entry)
        return entry

    def _audit(self, event: str, user: Identity, req: Request | None, **details: Any) -> None:
        outcome = details.pop("outcome", "success")
        if req is not None:
            details.setdefault("request_id", req.id)
            project = req.project
        else:
            project = details.pop("project", None)
        self.audit.record(event, actor=user.name, project=project, outcome=outcome, **details)

    def _denied(self, user: Identity, req: Request | None, action: str, err: Exception) -> None:
        try:
            self._audit(EVENTS["denied"], user, req, outcome="denied", action=action,
                        reason=str(err))
        except Exception:  # pragma: no cover - never mask the original refusal
            log.exception("could not audit a refusal")

    @contextmanager
    def _guard(self, user: Identity, action: str, request_id: str | None = None) -> Iterator[None]:
        """Audit refusals (permission, state, policy) of ``action``."""
        try:
            yield
        except (PermissionDenied, InvalidTransition, PolicyViolation, IdentityUnavailable) as e:
            req = None
            if request_id:
                with self.sessions() as s:
                    req = s.get(Request, request_id)
            self._denied(user, req, action, e)
            raise

    # ------------------------------------------------------------ requests

    def create_request(
        self, user: Identity, *, project: Any, title: Any, justification: Any
    ) -> dict[str, Any]:
        if not isinstance(project, str) or not project:
            raise InvalidInput("project: expected a project slug")
        title = self._text(title, "title", required=True, limit=self.settings.max_title_chars)
        justification = self._text(justification, "justification", required=True)
        with self._guard(user, "create"):
            require_create(user, project, project in self.projects)
        try:  # recorded when the directory answers; otherwise at the first review
            me = self._as_person(user).person
        except (IdentityUnavailable, PermissionDenied):
            me = user.person
        now = utcnow()
        with self._tx() as s:
            # its collections start empty, so the answer is built from this object
            # without reading anything back (the API's most frequent write)
            req = Request(
                id=REQUEST_ID_PREFIX + secrets.token_hex(8), project=project,
                requester=user.name, requester_dn=me.dn, requester_uid_number=me.uid_number,
                title=title, justification=justification,
                state=State.DRAFT.value, version=1, created_at=now, updated_at=now,
                files=[], reviews=[], history=[], file_decisions=[],
            )
            s.add(req)
            req.history.append(self._history(s, req, user, "create", "", ""))
            self._later(s, EVENTS["create"], user, req, title=title)
        # after the commit, outside the write lock: nothing here reads the database
        return self._detail(req, user, require_view(user, req, self._project(req.project)))

    def list_requests(
        self, user: Identity, *, scope: str = "mine", state: str | None = None,
        project: str | None = None, limit: int = 200,
    ) -> list[dict[str, Any]]:
        """``mine``: the user's own; ``project``: their projects'; ``review``: the
        checker's queue (awaiting review, excluding ones they may not review);
        ``all``: staff and checkers, every non-draft request."""
        if state is not None and state not in State._value2member_map_:
            raise InvalidInput(f"state: expected one of {', '.join(s.value for s in State)}")
        q = select(Request).order_by(Request.updated_at.desc()).limit(max(1, min(limit, 1000)))
        if scope == "mine":
            q = q.where(Request.requester == user.name)
            if user.projects is not None:  # a token lists its own project's requests only
                q = q.where(Request.project.in_(sorted(user.projects)))
        elif scope == "project":
            projects = sorted(p for p in self.projects if user.is_member(p))
            q = q.where(Request.project.in_(projects))
        elif scope == "review":
            if not user.is_checker:
                raise PermissionDenied("only output checkers have a review queue")
            q = q.where(Request.state.in_([s.value for s in REVIEWABLE_STATES]))
            q = q.where(Request.requester != user.name)
        elif scope == "all":
            if not (user.is_checker or user.is_staff):
                raise PermissionDenied("only output checkers and staff may list all requests")
            q = q.where(Request.state != State.DRAFT.value)
        else:
            raise InvalidInput("scope: expected mine, project, review or all")
        if state:
            q = q.where(Request.state == state)
        if project:
            q = q.where(Request.project == project)
        if scope != "review":
            return self._summaries(q)
        with self.sessions() as s:
            rows = s.scalars(q.options(selectinload(Request.reviews))).all()
            out = []
            for r in rows:
                actors = actors_for(user, r, self._project(r.project))
                if Actor.CHECKER not in actors:
                    continue
                if any(v.reviewer == user.name for v in r.current_reviews()):
                    continue
                out.append(self._summary(r))
            return out

    def _summaries(self, q: Any) -> list[dict[str, Any]]:
        """:meth:`_summary` of the requests ``q`` selects, read as plain rows (no ORM
        objects, approvals counted by the database): the list is the API's most
        frequent read (issue 21 item 1, p99 < 100 ms)."""
        approvals = (
            select(func.count(Review.id))
            .where(Review.request_id == Request.id, Review.version == Request.version,
                   Review.decision == "approve")
            .correlate(Request).scalar_subquery()
        )
        cols = q.with_only_columns(
            Request.id, Request.project, Request.requester, Request.title, Request.state,
            Request.version, approvals, Request.created_at, Request.updated_at,
            Request.submitted_at, Request.released_at)
        required = self.settings.required_approvals
        with self.sessions() as s:
            rows = s.execute(cols).all()
        return [
            {"id": rid, "project": project, "requester": requester, "title": title,
             "state": state, "version": version, "approvals": n or 0,
             "required_approvals": required, "created_at": as_utc(created).isoformat(),
             "updated_at": as_utc(updated).isoformat(), "submitted_at": _iso(submitted),
             "released_at": _iso(released)}
            for (rid, project, requester, title, state, version, n, created, updated,
                 submitted, released) in rows
        ]

    def get_request(
        self, user: Identity, request_id: str, *, record_view: bool = True
    ) -> dict[str, Any]:
        with self.sessions() as s:
            req = self._load(s, request_id)
            actors = require_view(user, req, self._project(req.project))
            data = self._detail(req, user, actors)
        if record_view and Actor.CHECKER in actors and user.name != req.requester:
            shown = [f["id"] for f in [*data["files"], *sum(data["versions"].values(), [])]
                     if "preview" in f]
            self._audit(EVENTS["view"], user, req, version=req.version, previews=shown)
        return data

    # ------------------------------------------------------------ files

    def check_can_add_file(
        self, user: Identity, request_id: str, filename: Any, *,
        expected_bytes: int | None = None,
    ) -> str:
        """Pre-flight of an upload (called before the body is read): returns the clean name.

        ``expected_bytes`` (the body's length, when known) is checked against what is
        left of the user's staging quota; a user already at their quota is refused.
        """
        return self._preflight(user, request_id, filename, expected_bytes)[0]

    def start_upload(
        self, user: Identity, request_id: str, filename: Any, *,
        expected_bytes: int | None = None,
    ) -> tuple[str, StagingWriter]:
        """:meth:`check_can_add_file` and :meth:`upload_writer` in one read: the clean
        name, and the writer for it (the API's upload asks both before the body)."""
        name, used = self._preflight(user, request_id, filename, expected_bytes)
        return name, self._writer(user, request_id, name, used)

    def _preflight(
        self, user: Identity, request_id: str, filename: Any, expected_bytes: int | None,
    ) -> tuple[str, int]:
        """The clean name and the bytes the user's open requests hold besides it."""
        name = clean_filename(filename)
        with self._guard(user, "add_file", request_id), self.sessions() as s:
            req = self._load(s, request_id)
            require_view(user, req, self._project(req.project))
            require_editable(user, req)
            self._check_room(s, req, name)
            used, _ = self._staged_bytes(s, user.name, (request_id, name))
        incoming = max(expected_bytes or 0, 1)
        if used + incoming > self.settings.staging_quota_bytes:
            raise self._quota_refusal(user, request_id, name, used, incoming)
        return name, used

    # ------------------------------------------------------------ staging quota

    @staticmethod
    def _staged_bytes(
        s: Session, user_name: str, replacing: tuple[str, str] | None = None,
        sha256: str | None = None,
    ) -> tuple[int, bool]:
        """What counts against a user's staging quota, counted by the database: the bytes
        of the distinct staged objects of the files (every version) of their open
        requests, and whether ``sha256`` is one of them.

        Requests in a final state do not count: released files have left (their
        staged copy is the release record), withdrawn and rejected ones are deleted
        by the purge. Identical bytes count once (they are stored once).
        ``replacing`` (request id, file name): leave out the file of that name in the
        request's current version, which the upload would replace. One row whatever
        the number of files: it runs inside every upload's write transaction."""
        rid, name = replacing or ("", "")
        used, seen = s.execute(_STAGED[replacing is not None], {
            "user": user_name, "rid": rid, "name": name, "sha256": sha256 or ""}).one()
        return int(used or 0), bool(seen)

    def staging_used(self, user: Identity) -> dict[str, int]:
        """The user's staging quota: ``{"quota", "used", "free"}`` in bytes."""
        with self.sessions() as s:
            used, _ = self._staged_bytes(s, user.name)
        quota = self.settings.staging_quota_bytes
        return {"quota": quota, "used": used, "free": max(0, quota - used)}

    def _quota_refusal(
        self, user: Identity, request_id: str, name: str, used: int, incoming: int
    ) -> QuotaExceeded:
        """The refusal of an upload past the user's staging quota, audited."""
        quota = self.settings.staging_quota_bytes
        err = QuotaExceeded(
            f"staging quota exceeded: {name} is refused and nothing of it was kept. Your "
            f"quota is {_sized(quota)}; your open requests already hold {_sized(used)}, "
            f"{_sized(max(0, quota - used))} left, and this file needs at least "
            f"{_sized(incoming)}. Free space by withdrawing a draft you "
            "no longer need or removing files from one (released, withdrawn and rejected "
            "requests do not count), or ask staff for a larger quota.",
            log_message=f"staging quota of {user.name}: {used}+{incoming} > {quota}",
        )
        try:
            with self.sessions() as s:
                req = s.get(Request, request_id)
            where = {} if req is not None else {"project": None, "request_id": request_id}
            self._audit(EVENTS["quota"], user, req, outcome="denied", file=name,
                        quota_bytes=quota, used_bytes=used, refused_at_bytes=incoming, **where)
        except Exception:  # pragma: no cover - never mask the refusal itself
            log.exception("could not audit a staging quota refusal")
        return err

    def upload_writer(self, user: Identity, request_id: str, name: str) -> StagingWriter:
        """A staging writer for ``name`` that stops (and keeps nothing) as soon as the
        bytes received pass what is left of the user's staging quota."""
        with self.sessions() as s:
            used, _ = self._staged_bytes(s, user.name, (request_id, name))
        return self._writer(user, request_id, name, used)

    def _writer(self, user: Identity, request_id: str, name: str, used: int) -> StagingWriter:
        return self.staging.writer(
            max_bytes=self.settings.max_file_bytes,
            room=self.settings.staging_quota_bytes - used,
            over_room=lambda size: self._quota_refusal(user, request_id, name, used, size),
        )

    def _check_room(self, s: Session, req: Request, name: str) -> None:
        count, exists = s.execute(
            _ROOM, {"request_id": req.id, "version": req.version, "name": name}).one()
        if not exists and (count or 0) >= self.settings.max_files_per_request:
            raise PolicyViolation(
                f"request {req.id} already has {count} files (the most one request may carry)"
            )

    def add_file(
        self, user: Identity, request_id: str, filename: Any, chunks: Iterable[bytes],
        *, supporting: Any = None,
    ) -> dict[str, Any]:
        """Stage the bytes of ``chunks`` under ``filename`` and check them."""
        name = self.check_can_add_file(user, request_id, filename)
        sha, size = self.upload_writer(user, request_id, name).write_all(chunks)
        return self.attach_file(user, request_id, name, sha, size, supporting=supporting)

    def attach_file(
        self, user: Identity, request_id: str, filename: str, sha256: str, size: int,
        *, replacing: str | None = None, supporting: Any = None, check_now: bool = False,
    ) -> dict[str, Any]:
        """Record an already staged object as a file of the request's current version.

        With background checks (:attr:`checks`) and not ``check_now`` the file is
        recorded with the verdict ``checking`` and checked after this returns.

        Replaces a file of the same name in that version (with ``replacing``, only the
        one whose sha256 it is), keeping its context, controls and supporting mark
        unless ``supporting`` says otherwise. Permissions are checked again here (the
        upload may have taken a while).
        """
        name = clean_filename(filename)
        supporting = _flag(supporting, "supporting")
        later = self.checks is not None and not check_now
        if later:
            report: dict[str, Any] = {"verdict": CHECKING, "findings": []}
            preview: dict[str, Any] = {"kind": "none"}
            proposal = None
        else:
            with self.sessions() as s:
                project = self._load(s, request_id).project
            report, preview, proposal = self._inspect(sha256, name, project)
        with self._guard(user, "add_file", request_id), self._tx() as s:
            req = self._load(s, request_id, lock=True)
            require_view(user, req, self._project(req.project))
            require_editable(user, req)
            self._check_room(s, req, name)
            used, staged = self._staged_bytes(s, user.name, (request_id, name), sha256)
            if not staged and used + size > (
                    self.settings.staging_quota_bytes):  # concurrent uploads of one user
                if s.scalar(select(File.id).where(File.sha256 == sha256).limit(1)) is None:
                    self.staging.delete(sha256)
                raise self._quota_refusal(user, request_id, name, used, size)
            if not self.staging.exists(sha256):  # purged while it was being checked
                raise NotFound(f"the staged copy of {name} is gone; upload it again",
                               log_message=f"object {sha256} vanished before attach")
            old = s.scalars(_FILE_NAMED, {"request_id": req.id, "version": req.version,
                                          "name": name}).first()
            replaced_sha = old.sha256 if old is not None else None
            if replacing is not None and replaced_sha != replacing:
                raise InvalidTransition(
                    f"{name} changed in request {req.id} meanwhile: the proposal was made "
                    "for the file it replaced; look at the new one first")
            kept = ((old.context, old.controls, old.supporting) if old is not None
                    else ("", "", False))
            if old is not None:
                s.delete(old)
                s.flush()
            f = File(
                request_id=req.id, version=req.version, name=name, sha256=sha256, size=size,
                verdict=report["verdict"], format=str(report.get("format") or "")[:32],
                report=json.dumps(report, default=str),
                preview=json.dumps(preview, default=str), uploaded_by=user.name,
                proposal=json.dumps(proposal, default=str) if proposal else None,
                created_at=utcnow(), context=kept[0], controls=kept[1],
                supporting=kept[2] if supporting is None else supporting,
            )
            s.add(f)
            req.updated_at = utcnow()
            s.flush()
            fid = f.id
            self._later(
                s, EVENTS["file_add"], user, req, version=req.version, file=name,
                sha256=sha256, size=size, verdict=report["verdict"], replaced=old is not None,
                supporting=f.supporting,
            )
        if replaced_sha and replaced_sha != sha256:
            self._drop_unreferenced(replaced_sha)
        if later:
            assert self.checks is not None
            self.checks.submit(fid, sha256)  # its end judges the set (_check_in_background)
            # the file as recorded (``checking``), from the committed objects: no read
            return self._file(f, file_views(user, req, self._project(req.project), f.version))
        self._redifference(request_id)  # may change the file's verdict: read it back
        with self.sessions() as s:
            req = self._load(s, request_id)
            f = s.get(File, fid)
            return self._file(f, file_views(user, req, self._project(req.project), f.version))

    # ------------------------------------------------------------ differencing
    #
    # The files of a request are judged as one set and against the ledger of its
    # scopes (:mod:`.ledger`), where the checks run: in a check sandbox that may take
    # seconds. It runs outside any write transaction on a snapshot of the request
    # (its current files, the ledger's last row), and its findings are stored only if
    # that snapshot is still current; a submit whose snapshot went stale judges again
    # inside its transaction. Whatever fails sends the files to ``review``.

    def _difference_key(self, s: Session, req: Request) -> tuple:
        scopes = ledger.scopes_of(req.project, self._project(req.project))
        last = s.scalar(select(func.max(LedgerEntry.id)).where(LedgerEntry.scope.in_(scopes)))
        return (req.version, tuple((f.id, f.sha256, bool(f.supporting))
                                   for f in req.current_files()), last)

    def _difference_plan(self, request_id: str) -> tuple[tuple, Any]:
        """Judge a snapshot of the request outside any write transaction."""
        with self.sessions() as s:
            req = self._load(s, request_id)
            key = self._difference_key(s, req)
            if _checking(req):  # judged when the last check of the request ends
                return key, None
            files = ledger.stored_reports(req)
            released = ledger.export(s, ledger.scopes_of(req.project, self._project(req.project)),
                                     exclude_request=req.id)
            policy = self.policy_for(req.project)
        if not files:
            return key, None
        if ledger.nothing_to_compare(files, released):
            return key, [[] for _ in files]
        try:
            return key, self.differ(files, released, policy, self.staging.tmp)
        except Exception as e:
            log.exception("differencing of request %s failed", request_id)
            return key, e

    def _store_difference(self, req: Request, found: Any) -> None:
        if found is None:
            return
        try:
            if isinstance(found, Exception):
                raise found
            ledger.apply(req, found)
        except Exception as e:
            ledger.unchecked(req, f"differencing against the other files and earlier releases "
                             f"failed ({type(e).__name__}); review by hand")

    def _difference(self, s: Session, req: Request, plan: tuple[tuple, Any] | None = None) -> None:
        """Store the differencing of ``req``'s files (in the caller's transaction): the
        ``plan`` judged beforehand if it is still current, else judged now."""
        if plan is not None and plan[0] == self._difference_key(s, req):
            self._store_difference(req, plan[1])
            return
        files = ledger.stored_reports(req)
        if not files:
            return
        released = ledger.export(s, ledger.scopes_of(req.project, self._project(req.project)),
                                 exclude_request=req.id)
        found: Any = [[] for _ in files]
        if not ledger.nothing_to_compare(files, released):
            try:
                found = self.differ(files, released, self.policy_for(req.project),
                                    self.staging.tmp)
            except Exception as e:
                log.exception("differencing of request %s failed", req.id)
                found = e
        self._store_difference(req, found)

    def _redifference(self, request_id: str) -> tuple[tuple, Any]:
        """After a file was added or removed: judge the set again and store the result
        unless the request changed meanwhile (the change that came later does it)."""
        plan = self._difference_plan(request_id)
        with self._tx() as s:
            req = self._load(s, request_id, lock=True)
            if plan[0] == self._difference_key(s, req):
                self._store_difference(req, plan[1])
        return plan

    def _drop_unreferenced(self, sha256: str) -> None:
        """Delete a staged object no file refers to any more (a draft's file removed or
        replaced: no version, no other request holds it), so it stops taking disk
        space it no longer counts for in its owner's quota. The removal or
        replacement was audited with the sha256."""
        with self.sessions() as s:
            held = s.scalar(select(File.id).where(File.sha256 == sha256).limit(1))
        if held is None:
            self.staging.delete(sha256)

    def _inspect(self, sha256: str, name: str, project: str) -> tuple[dict, dict, dict | None]:
        """Check a staged object and render its preview, once (fail closed: ``review``);
        with them, for a ``fail`` table, the fixed version the check proposes."""
        return self.inspect_path(self.staging.path_for(sha256), name, self.policy_for(project))

    def inspect_path(self, path: Any, name: str, policy: Any) -> tuple[dict, dict, dict | None]:
        """The checker's report, preview and proposal for the file at ``path`` under
        ``name`` and ``policy``, normalised and failing closed (``review``): uploads and
        the dry run (:mod:`.dryrun`) alike."""
        try:
            result = self.checker(path, name, policy, self.staging.tmp,
                                  self.settings.preview_rows)
        except Exception as e:
            log.exception("inspection of %s failed", name)
            result = unjudged(f"automatic check failed ({type(e).__name__}); review by hand")
        report = result.get("report") if isinstance(result, dict) else None
        preview = result.get("preview") if isinstance(result, dict) else None
        if not isinstance(report, dict) or report.get("verdict") not in set(Verdict):
            result = unjudged("automatic check gave no usable report; review by hand")
            report, preview = result["report"], result["preview"]
        if not isinstance(preview, dict):
            preview = {"kind": "none"}
        proposal = result.get("proposal") if report.get("verdict") == "fail" else None
        return report, preview, proposal if isinstance(proposal, dict) else None

    # ------------------------------------------------------------ background checks

    def _check_in_background(self, file_id: int, sha256: str) -> None:
        """Check a file recorded as ``checking`` and store its verdict, report and
        preview (fail closed: ``review``), unless it was replaced or removed meanwhile;
        then judge the request's files as a set."""
        with self.sessions() as s:
            f = s.get(File, file_id)
            if f is None or f.verdict != CHECKING or f.sha256 != sha256:
                return
            sha, name, request_id = f.sha256, f.name, f.request_id
            project = self._load(s, request_id).project
        report, preview, proposal = self._inspect(sha, name, project)
        if self.checks is not None and self.checks.closed:
            return  # stopping: left ``checking``, checked again when the airlock starts
        with self._tx() as s:
            req = self._load(s, request_id, lock=True)
            f = s.get(File, file_id)
            if f is None or f.verdict != CHECKING or f.sha256 != sha:
                return
            f.verdict = report["verdict"]
            f.format = str(report.get("format") or "")[:32]
            f.report = json.dumps(report, default=str)
            f.preview = json.dumps(preview, default=str)
            f.proposal = json.dumps(proposal, default=str) if proposal else None
            self._later(s, EVENTS["file_checked"], Identity(name="airlock"), req,
                        version=f.version, file=name, sha256=sha, verdict=f.verdict,
                        uploaded_by=f.uploaded_by)
        self._redifference(request_id)

    def requeue_checks(self) -> int:
        """Queue the check of every file still ``checking`` (an airlock stopped before
        their checks ended): at start. Returns how many."""
        if self.checks is None:
            return 0
        with self.sessions() as s:
            ids = s.execute(select(File.id, File.sha256).where(File.verdict == CHECKING)
                            .order_by(File.id)).all()
        for fid, sha in ids:
            self.checks.submit(fid, sha)
        if ids:
            log.info("re-queued the checks of %d file(s) left checking", len(ids))
        return len(ids)

    # ------------------------------------------------------------ proposals

    def _proposal_of(self, s: Session, user: Identity, request_id: str,
                     file_id: Any) -> tuple[Request, File, dict[str, Any]]:
        req = self._load(s, request_id)
        require_view(user, req, self._project(req.project))
        f = s.get(File, file_id) if isinstance(file_id, int) else None
        if f is None or f.request_id != req.id:
            raise NotFound(f"request {req.id} has no file {file_id}")
        require_file_view(user, req, self._project(req.project), FileView.PROPOSAL, f.version)
        proposal = f.proposal_dict()
        if proposal is None:
            raise NotFound(f"no fixed version is proposed for {f.name} (only a file that "
                           "failed its checks gets one)")
        return req, f, proposal

    def get_proposal(self, user: Identity, request_id: str, file_id: int) -> dict[str, Any]:
        """The fixed version the airlock proposes for a ``fail`` table (its text and what
        changed), or why none can be made: the requester only, like the preview."""
        with self._guard(user, "read_proposal", request_id), self.sessions() as s:
            req, f, proposal = self._proposal_of(s, user, request_id, file_id)
            out = {"file_id": f.id, "name": f.name, "version": f.version,
                   "sha256": f.sha256, **{k: proposal[k] for k in (
                       "method", "notes", "verdict", "text", "size", "error")
                       if k in proposal}}
        self._audit(EVENTS["proposal_view"], user, req, version=out["version"],
                    file=out["name"], sha256=out["sha256"], method=out.get("method"))
        return out

    def accept_proposal(self, user: Identity, request_id: str, file_id: int) -> dict[str, Any]:
        """Put the proposed fixed version in place of the file, in the request's current
        version (a draft, or the new version opened when changes were requested): it is
        staged and checked again like any upload (the requester's quota applies)."""
        with self._guard(user, "accept_proposal", request_id), self.sessions() as s:
            req, f, proposal = self._proposal_of(s, user, request_id, file_id)
            require_editable(user, req)
            if f.version != req.version:
                raise InvalidTransition(
                    f"{f.name} is a file of version {f.version}; request {req.id} is at "
                    f"version {req.version}: accept the proposal of its current file")
            if "text" not in proposal:
                raise PolicyViolation(proposal.get("error") or
                                      f"no fixed version is proposed for {f.name}")
            name, old_sha = f.name, f.sha256
        data = str(proposal["text"]).encode("utf-8")
        sha, size = self.upload_writer(user, request_id, name).write_all([data])
        try:
            out = self.attach_file(user, request_id, name, sha, size, replacing=old_sha,
                                   check_now=True)
        except InvalidTransition:
            self._drop_unreferenced(sha)
            raise
        with self.sessions() as s:
            req = self._load(s, request_id)
        self._audit(EVENTS["proposal_accept"], user, req, version=out["version"], file=name,
                    replaced_sha256=old_sha, sha256=sha, method=proposal.get("method"),
                    notes=proposal.get("notes") or [], verdict=out["verdict"])
        return out

    def remove_file(self, user: Identity, request_id: str, filename: Any) -> None:
        name = clean_filename(filename)
        with self._guard(user, "remove_file", request_id), self._tx() as s:
            req = self._load(s, request_id, lock=True)
            require_view(user, req, self._project(req.project))
            require_editable(user, req)
            f = s.scalars(_FILE_NAMED, {"request_id": req.id, "version": req.version,
                                        "name": name}).first()
            if f is None:
                raise NotFound(f"request {req.id} has no file {name!r} in version {req.version}")
            sha = f.sha256
            s.delete(f)
            req.updated_at = utcnow()
            s.flush()
            s.refresh(req, ["files"])
            self._later(s, EVENTS["file_remove"], user, req, version=req.version, file=name,
                        sha256=sha)
        self._drop_unreferenced(sha)
        self._redifference(request_id)

    def describe_file(
        self, user: Identity, request_id: str, file_id: Any, *, context: Any = None,
        controls: Any = None, supporting: Any = None,
    ) -> dict[str, Any]:
        """Set a file's context, the statistical controls applied to it, and whether it
        is a supporting file (checkers see it, it is never released): the requester,
        on a file of the current version while the request is editable. ``None``
        leaves a field as it is; an empty string clears it."""
        if context is None and controls is None and supporting is None:
            raise InvalidInput("give context, controls or supporting (nothing to change)")
        limit = self.settings.max_text_chars
        if context is not None:
            context = self._text(context, "context", required=False, limit=limit)
        if controls is not None:
            controls = self._text(controls, "controls", required=False, limit=limit)
        supporting = _flag(supporting, "supporting")
        with self._guard(user, "describe_file", request_id), self._tx() as s:
            req = self._load(s, request_id, lock=True)
            require_view(user, req, self._project(req.project))
            f = s.get(File, file_id) if isinstance(file_id, int) else None
            if f is None or f.request_id != req.id:
                raise NotFound(f"request {req.id} has no file {file_id}")
            require_editable(user, req)
            if f.version != req.version:
                raise InvalidTransition(
                    f"{f.name} is a file of version {f.version}; request {req.id} is at "
                    f"version {req.version}: describe the file of the current version")
            changed = {}
            for field, value in (("context", context), ("controls", controls),
                                 ("supporting", supporting)):
                if value is not None and getattr(f, field) != value:
                    setattr(f, field, value)
                    changed[field] = value
            if changed:
                req.updated_at = utcnow()
                # the texts are the researcher's words about the output: the audit keeps
                # what changed and their length, the record at release keeps the texts
                self._later(s, EVENTS["file_describe"], user, req, version=req.version,
                            file=f.name, sha256=f.sha256, supporting=f.supporting,
                            context_chars=len(f.context), controls_chars=len(f.controls),
                            changed=sorted(changed))
            fid = f.id
        if supporting is not None:
            self._redifference(request_id)
        with self.sessions() as s:
            req = self._load(s, request_id)
            f = s.get(File, fid)
            return self._file(f, file_views(user, req, self._project(req.project), f.version))

    def open_file(self, user: Identity, request_id: str, file_id: int) -> FileContent:
        """Bytes of one file: only the requester, once released, of the released version.

        Checkers never get bytes (they review the stored previews). Released
        files are re-hashed before they leave.
        """
        with self._guard(user, "read_file", request_id), self.sessions() as s:
            req = self._load(s, request_id)
            require_view(user, req, self._project(req.project))
            f = s.get(File, file_id) if isinstance(file_id, int) else None
            if f is None or f.request_id != req.id:
                raise NotFound(f"request {req.id} has no file {file_id}")
            purpose = require_file_content(user, req, self._project(req.project), f.version)
            if f.supporting:
                raise PermissionDenied(
                    f"{f.name} is a supporting file of request {req.id}: checkers saw it, "
                    "it was not released, and its bytes never leave the airlock")
            if not f.released:
                raise PermissionDenied(
                    f"{f.name} was held back when request {req.id} was released in part "
                    "(only its approved files left): its bytes stay in the airlock")
            name, sha, size, version = f.name, f.sha256, f.size, f.version
        self._verify_or_audit(user, req, name, sha)
        self._audit(EVENTS["download"], user, req, version=version, file=name, sha256=sha,
                    size=size)
        return FileContent(name, sha, size, purpose, self.staging.iter_bytes(sha))

    def _verify_or_audit(self, user: Identity, req: Request, name: str, sha: str) -> None:
        try:
            self.staging.verify(sha, name=name)
        except Exception as e:
            self._audit(EVENTS["integrity"], user, req, outcome="failure", file=name,
                        sha256=sha, reason=getattr(e, "log_message", str(e)))
            raise

    # ------------------------------------------------------------ transitions

    def submit(self, user: Identity, request_id: str, comment: Any = "") -> dict[str, Any]:
        return self._simple(user, request_id, Action.SUBMIT, comment, needs_files=True)

    def resubmit(self, user: Identity, request_id: str, comment: Any = "") -> dict[str, Any]:
        return self._simple(user, request_id, Action.RESUBMIT, comment, needs_files=True)

    def withdraw(self, user: Identity, request_id: str, comment: Any = "") -> dict[str, Any]:
        return self._simple(user, request_id, Action.WITHDRAW, comment)

    def _simple(
        self, user: Identity, request_id: str, action: Action, comment: Any,
        needs_files: bool = False,
    ) -> dict[str, Any]:
        comment = self._text(comment, "comment", required=False)
        plan = None
        if action in (Action.SUBMIT, Action.RESUBMIT):
            # the ledger may have grown since the files came: judged again, first outside
            # the transaction (for those who may act only)
            with self._guard(user, action.value, request_id), self.sessions() as s:
                req = self._load(s, request_id)
                require_view(user, req, self._project(req.project))
                require_transition(user, req, self._project(req.project), action)
            # stored at once: a submission refused for a file the set judgement fails
            # (its context missing) shows why on the file
            plan = self._redifference(request_id)
        with self._guard(user, action.value, request_id), self._tx() as s:
            req = self._load(s, request_id, lock=True)
            require_view(user, req, self._project(req.project))
            t = require_transition(user, req, self._project(req.project), action)
            files = req.current_files()
            if needs_files and not files:
                raise PolicyViolation(f"request {req.id} has no files: add at least one first")
            if needs_files and all(f.supporting for f in files):
                raise PolicyViolation(
                    f"request {req.id} has only supporting files, which are never released: "
                    "add the output to release, or unmark one file as supporting")
            if needs_files:
                _require_checked(req, files)
            before = req.state
            req.state = t.target.value
            req.updated_at = utcnow()
            if t.target is State.SUBMITTED:
                req.submitted_at = req.updated_at
                self._difference(s, req, plan)
                _require_context(req, files)
            self._history(s, req, user, action.value, before, comment)
            self._later(s, t.event, user, req, version=req.version, from_state=before,
                        to_state=req.state, sha256=[f.sha256 for f in files], comment=comment)
        return self.get_request(user, request_id, record_view=False)

    def review(
        self,
        user: Identity,
        request_id: str,
        *,
        decision: Any,
        comment: Any = "",
        overrides: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record a checker's decision on the current version.

        ``overrides`` maps a file name to the written reason for approving a file
        that failed its checks. Approving a blocked file is refused whatever the
        reason; each checker reviews a version once.
        """
        if decision not in DECISIONS:
            raise InvalidInput("decision: expected approve, request_changes or reject")
        action = DECISIONS[decision]
        comment = self._text(comment, "comment", required=action is not Action.APPROVE)
        if overrides is not None and not isinstance(overrides, Mapping):
            raise InvalidInput("overrides: expected an object mapping file names to reasons")
        reasons = {
            str(k): self._text(v, f"overrides.{k}", required=False)
            for k, v in (overrides or {}).items()
        }
        with self._guard(user, action.value, request_id), self._tx() as s:
            user = self._as_person(user)
            req = self._load(s, request_id, lock=True)
            require_view(user, req, self._project(req.project))
            self._persons(req)
            # state and actor checks (approve's target is refined below)
            require_transition(user, req, self._project(req.project), action)
            self._require_first_review(user, req)
            files = req.current_files()
            unknown = set(reasons) - {f.name for f in files}
            if unknown:
                raise InvalidInput(
                    f"overrides: no file named {sorted(unknown)[0]!r} in version {req.version}"
                )
            mine = {d.file_name: d for d in req.current_file_decisions()
                    if user.person.same_as(self._decider(d)) is not None}
            if action is Action.APPROVE:
                outputs = {f.name for f in files if not f.supporting}
                asked = sorted(n for n, d in mine.items() if d.decision == "request_changes"
                               and n in outputs)
                if asked:
                    raise PolicyViolation(
                        f"you asked for changes to {', '.join(asked)} in version "
                        f"{req.version}: request changes to the whole request, or let the "
                        "approved files be released in part; approving it all is refused")
                for f in files:
                    if f.supporting:  # never released: nothing of it to approve
                        continue
                    # a per-file approval's reason stands for the file
                    if not reasons.get(f.name) and f.name in mine:
                        reasons[f.name] = mine[f.name].comment
                    require_approvable(f.name, f.verdict, reasons.get(f.name))
                # people, not names: one person's approvals under two names count once
                approvals = len(distinct([*self._approvers(req), user.person]))
                target = (
                    State.APPROVED
                    if approvals >= self.settings.required_approvals
                    else State.IN_REVIEW
                )
            else:
                target = transitions_for(action, State(req.state))[0].target
            t = require_transition(user, req, self._project(req.project), action, target)
            s.add(
                Review(
                    request_id=req.id, version=req.version, reviewer=user.name,
                    reviewer_dn=user.dn, reviewer_uid_number=user.uid_number,
                    decision=decision, comment=comment,
                    overrides=json.dumps({k: v for k, v in reasons.items() if v}),
                    created_at=utcnow(),
                )
            )
            before = req.state
            req.state = target.value
            req.updated_at = utcnow()
            shas = [f.sha256 for f in files]
            old_version = req.version
            if target is State.CHANGES_REQUESTED:
                self._new_version(s, req, files)
            self._history(s, req, user, decision, before, comment)
            self._later(
                s, t.event, user, req, version=old_version, from_state=before,
                to_state=req.state, decision=decision, sha256=shas, comment=comment,
                overrides={k: v for k, v in reasons.items() if v},
                **({"reviewer_dn": user.dn, "reviewer_uid_number": user.uid_number}
                   if user.dn else {}),
            )
        return self.get_request(user, request_id, record_view=False)

    def _require_first_review(self, user: Identity, req: Request) -> None:
        """One person reviews a version once, under whichever of their names."""
        me = user.person
        for r in req.current_reviews():
            why = me.same_as(self._reviewer(r))
            if why is None:
                continue
            if r.reviewer == user.name:
                raise PolicyViolation(
                    f"you have already reviewed version {req.version} of request {req.id}")
            raise PolicyViolation(
                f"you have already reviewed version {req.version} of request {req.id} as "
                f"{r.reviewer!r}: the directory says {user.name!r} and {r.reviewer!r} are one "
                f"person ({why}); one person is one reviewer, under any name")

    def _require_approvers(self, req: Request) -> None:
        """Checked again at release: every file approved by enough distinct people
        (approving the version, or the file), none of them the requester (reviews
        recorded before people were told apart included), and nothing held."""
        need = self.settings.required_approvals
        for f in _outputs(req):  # a supporting file is never released: no approval needed
            approvers = self._file_approvers(req, f)
            if len(approvers) < need:
                names = sorted({r.reviewer for r in req.current_reviews()
                                if r.decision == "approve"} | {
                    d.reviewer for d in req.current_file_decisions()
                    if d.file_name == f.name and d.decision == "approve"})
                raise PolicyViolation(
                    f"request {req.id} cannot be released: {len(approvers)} distinct "
                    f"person(s) other than the requester approved {f.name} in version "
                    f"{req.version} (approvals by {', '.join(names) or 'nobody'}; one "
                    f"person's names count once), {need} needed")
            held = self._held_reasons(req, f)
            if held:
                raise PolicyViolation(
                    f"request {req.id} cannot be released whole: {f.name} is held "
                    f"({held[0]['decision'].replace('_', ' ')}); release the approved files "
                    "in part, or request changes")

    def _release_record(self, req: Request, files: list[File]) -> list[dict[str, Any]]:
        """Per released file: its verdict, the policy pack it was judged under and every
        approver's written reason (the release record of the audit log, SATRE 3.3.09)."""
        approvals = [r for r in req.current_reviews() if r.decision == "approve"]
        decisions = [d for d in req.current_file_decisions() if d.decision == "approve"]
        # the disclosure policy pack each verdict was reached under (the project's, when
        # the checker gave no report of its policy)
        pack = str(getattr(self.policy_for(req.project), "pack", ""))
        return [
            {
                "file": f.name, "sha256": f.sha256, "verdict": f.verdict,
                "policy_pack": str((f.report_dict().get("policy") or {}).get("pack") or pack),
                "approved_by": [p.name for p in self._file_approvers(req, f)],
                "override_reasons": {
                    **{d.reviewer: d.comment for d in decisions
                       if d.file_name == f.name and d.sha256 == f.sha256 and d.comment},
                    **{r.reviewer: r.overrides_dict()[f.name]
                       for r in approvals if r.overrides_dict().get(f.name)},
                },
            }
            for f in files
        ]

    def _record(self, req: Request, files: list[File], released_by: str, comment: str,
                held: list[tuple[File, list[dict[str, Any]]]] | None = None) -> dict[str, Any]:
        """The release record (``ecluse.airlock.release``): what left, under which
        policy, judged how, approved by whom and why; for a partial release, which
        files were held back and why (``held``: never their content)."""
        policy = self.policy_for(req.project)
        names = {v: sorted(f.name for f in req.files if f.version == v and not f.supporting)
                 for v in range(1, req.version + 1)}
        return {
            "format": release.RECORD_FORMAT,
            "tool": {"name": "ecluse", "version": release.tool_version()},
            "request": {
                "id": req.id, "project": req.project, "requester": req.requester,
                "title": req.title, "justification": req.justification,
                "version": req.version, "created_at": _iso(req.created_at),
                "submitted_at": _iso(req.submitted_at), "released_at": _iso(req.released_at),
                "released_by": released_by, "release_comment": comment,
            },
            "policy": {"pack": str(getattr(policy, "pack", "") or ""),
                       "values": release.policy_values(policy)},
            "required_approvals": self.settings.required_approvals,
            "files": [
                {
                    "name": f.name, "sha256": f.sha256, "size": f.size, "format": f.format,
                    "verdict": f.verdict, "findings": f.report_dict().get("findings", []),
                    "report": f.report_dict(), "uploaded_by": f.uploaded_by,
                    "uploaded_at": _iso(f.created_at), "context": f.context,
                    "controls": f.controls,
                }
                for f in files
            ],
            # seen by the checkers, never released: named and hashed, none of their
            # content (no findings, no report: they may quote the unrounded figures)
            "supporting_files": [
                {
                    "name": f.name, "sha256": f.sha256, "size": f.size, "format": f.format,
                    "verdict": f.verdict, "released": False, "context": f.context,
                    "uploaded_by": f.uploaded_by, "uploaded_at": _iso(f.created_at),
                }
                for f in req.current_files() if f.supporting
            ],
            "reviews": [
                {
                    "reviewer": r.reviewer, "version": r.version, "decision": r.decision,
                    "comment": r.comment, "override_reasons": r.overrides_dict(),
                    "created_at": _iso(r.created_at), "files": names.get(r.version, []),
                }
                for r in req.reviews
            ],
            "history": [
                {"ts": _iso(h.ts), "actor": h.actor, "action": h.action,
                 "from_state": h.from_state, "to_state": h.to_state, "version": h.version,
                 "comment": h.comment}
                for h in req.history
            ],
            "partial": bool(held),
            "released_files": [f.name for f in files],
            "held": [
                {"name": f.name, "sha256": f.sha256, "size": f.size, "verdict": f.verdict,
                 "reasons": why}
                for f, why in held or []
            ],
            "file_decisions": [
                {"reviewer": d.reviewer, "version": d.version, "file": d.file_name,
                 "sha256": d.sha256, "decision": d.decision, "comment": d.comment,
                 "created_at": _iso(d.created_at)}
                for d in req.file_decisions
            ],
        }

    def get_record(self, user: Identity, request_id: str) -> bytes:
        """The release record of a released request, byte for byte as hashed into the
        audit log: for whoever may see the request (its project's members, checkers,
        staff); 404 for anybody else, 409 before release."""
        with self._guard(user, "read_record", request_id), self.sessions() as s:
            req = self._load(s, request_id)
            require_view(user, req, self._project(req.project))
            if req.release_record is None:
                raise InvalidTransition(
                    f"request {req.id} has no release record: it is {req.state}, and a "
                    "record is written when a request is released")
            return req.release_record.encode()

    def release_package(self, user: Identity, request_id: str) -> FileContent:
        """The release package (a zip: the released files, the record, SHA256SUMS,
        ACRO ``results.json``, ``ro-crate-metadata.json``): the requester only, as for
        the files' bytes. Every file is re-hashed before it leaves."""
        with self._guard(user, "read_package", request_id), self.sessions() as s:
            req = self._load(s, request_id)
            require_view(user, req, self._project(req.project))
            if req.release_record is None:
                raise InvalidTransition(
                    f"request {req.id} has no release package: it is {req.state}")
            # supporting files are never released (nor marked so)
            files = [(f.name, f.sha256, f.version) for f in req.current_files()
                     if f.released and not f.supporting]
            for _name, _sha, version in files:
                require_file_content(user, req, self._project(req.project), version)
            record = req.release_record.encode()
        for name, sha, _version in files:
            self._verify_or_audit(user, req, name, sha)
        out = tempfile.TemporaryFile(dir=self.staging.tmp)
        try:
            release.write_package(out, record, [(name, self.staging.iter_bytes(sha))
                                                for name, sha, _v in files])
            size = out.tell()
        except BaseException:
            out.close()
            raise
        self._audit(EVENTS["download"], user, req, version=req.version,
                    file=f"{req.id}-release.zip", sha256=[sha for _n, sha, _v in files],
                    record_sha256=release.sha256_of(record), size=size)
        return FileContent(f"{req.id}-release.zip", release.sha256_of(record), size,
                           "download", release.chunks_of(out))

    def _new_version(self, s: Session, req: Request, files: list[File]) -> None:
        """Open version N+1 with the same files; version N stays as it was reviewed."""
        req.version += 1
        for f in files:
            s.add(
                File(
                    request_id=req.id, version=req.version, name=f.name, sha256=f.sha256,
                    size=f.size, verdict=f.verdict, format=f.format, report=f.report,
                    preview=f.preview, proposal=f.proposal, uploaded_by=f.uploaded_by,
                    created_at=f.created_at, context=f.context, controls=f.controls,
                    supporting=f.supporting,
                )
            )

    def release(self, user: Identity, request_id: str, comment: Any = "") -> dict[str, Any]:
        """Re-hash every staged file, then mark the request released."""
        comment = self._text(comment, "comment", required=False)
        return self._release(user, request_id, comment, partial=False)

    def release_partial(self, user: Identity, request_id: str,
                        comment: Any = "") -> dict[str, Any]:
        """Release only the files of the current version that have the required
        approvals of their own (per-file decisions); every other file must be held
        with a reason (a checker asked for changes to it, or it is blocked). The
        release record and its audit event say which files left, which were held and
        why. A written comment is required."""
        comment = self._text(comment, "comment", required=True)
        return self._release(user, request_id, comment, partial=True)

    def _release(self, user: Identity, request_id: str, comment: str,
                 partial: bool) -> dict[str, Any]:
        action = Action.RELEASE_PARTIAL if partial else Action.RELEASE
        with self._guard(user, action.value, request_id), self._tx() as s:
            user = self._as_person(user)
            req = self._load(s, request_id, lock=True)
            require_view(user, req, self._project(req.project))
            self._persons(req)
            t = require_transition(user, req, self._project(req.project), action)
            held: list[tuple[File, list[dict[str, Any]]]] = []
            if partial:
                files, held = self._require_partial(req)
            else:
                self._require_approvers(req)
                # supporting files stay: they are recorded as such, never released
                files = _outputs(req)
                if not files:
                    raise PolicyViolation(f"request {req.id} has only supporting files: "
                                          "nothing to release")
            for f in files:
                require_approvable(f.name, f.verdict, "(checked at approval)")
                self._verify_or_audit(user, req, f.name, f.sha256)
            before = req.state
            req.state = t.target.value
            req.updated_at = req.released_at = utcnow()
            for f in files:
                f.released = True
            self._history(s, req, user, action.value, before, comment)
            ledger.record_release(s, req, files, ledger.scopes_of(
                req.project, self._project(req.project)))
            s.flush()
            s.refresh(req, ["history"])
            record = release.encode(self._record(req, files, user.name, comment, held))
            req.release_record = record.decode()
            self._later(s, t.event, user, req, version=req.version, from_state=before,
                        to_state=req.state, sha256=[f.sha256 for f in files], comment=comment,
                        files=self._release_record(req, files),
                        not_released=[{"file": f.name, "sha256": f.sha256,
                                       "reason": "supporting file"}
                                      for f in req.current_files() if f.supporting],
                        record_sha256=release.sha256_of(record), partial=partial,
                        held=[{"file": f.name, "sha256": f.sha256, "verdict": f.verdict,
                               "reasons": why} for f, why in held])
        return self.get_request(user, request_id, record_view=False)

    # ------------------------------------------------------------ per-file decisions

    @staticmethod
    def _decider(d: FileDecision) -> Person:
        return Person(d.reviewer, d.reviewer_dn, d.reviewer_uid_number)

    def _file_approvers(self, req: Request, f: File) -> list[Person]:
        """The distinct people other than the requester who approved ``f`` (a file of
        the current version): by a per-file decision on these bytes, or by approving
        the whole version."""
        people = [self._reviewer(r) for r in req.current_reviews() if r.decision == "approve"]
        people += [self._decider(d) for d in req.current_file_decisions()
                   if d.file_name == f.name and d.sha256 == f.sha256
                   and d.decision == "approve"]
        requester = requester_of(req)
        return [p for p in distinct(people) if p.same_as(requester) is None]

    @staticmethod
    def _held_reasons(req: Request, f: File) -> list[dict[str, Any]]:
        """Why ``f`` is held back: its changes requests, or its ``block`` verdict."""
        out: list[dict[str, Any]] = []
        if f.verdict == Verdict.BLOCK.value:
            out.append({"reviewer": None, "decision": "blocked",
                        "comment": "blocked by the disclosure checks (row-level or "
                                   "identifying output is never released)"})
        out += [{"reviewer": d.reviewer, "decision": d.decision, "comment": d.comment}
                for d in req.current_file_decisions()
                if d.file_name == f.name and d.decision == "request_changes"]
        return out

    def _file_states(self, req: Request) -> dict[str, dict[str, Any]]:
        """Per file of the current version: its approvers, why it is held (if it is)
        and whether it may be released (enough approvals, nothing holding it). Not the
        supporting files: they are never released, so never approved nor held."""
        need = self.settings.required_approvals
        out = {}
        for f in _outputs(req):
            approvers = self._file_approvers(req, f)
            held = self._held_reasons(req, f)
            out[f.name] = {"approvers": approvers, "held": held,
                           "releasable": not held and len(approvers) >= need}
        return out

    def _partial_plan(self, req: Request) -> tuple[
            list[File], list[tuple[File, list[dict[str, Any]]]], list[str]]:
        """(files released, files held with their reasons, files neither)."""
        states = self._file_states(req)
        need = self.settings.required_approvals
        out, held, undecided = [], [], []
        for f in _outputs(req):  # supporting files: neither released nor held
            st = states[f.name]
            if st["releasable"]:
                out.append(f)
            elif st["held"]:
                held.append((f, st["held"]))
            else:
                undecided.append(f"{f.name} ({len(st['approvers'])} of {need} approvals)")
        return out, held, undecided

    def _require_partial(self, req: Request) -> tuple[
            list[File], list[tuple[File, list[dict[str, Any]]]]]:
        files, held, undecided = self._partial_plan(req)
        need = self.settings.required_approvals
        if undecided:
            raise PolicyViolation(
                f"request {req.id} cannot be released in part: {', '.join(undecided)} "
                f"neither has {need} approvals nor is held by a changes request; every "
                "file must be approved or held before the approved ones are released")
        if not files:
            raise PolicyViolation(
                f"request {req.id} cannot be released in part: no file of version "
                f"{req.version} has {need} approvals from distinct people other than the "
                "requester")
        if not held:
            raise PolicyViolation(
                f"request {req.id}: every file is approved, nothing is held; release the "
                "whole request once it is approved")
        return files, held

    def decide_file(self, user: Identity, request_id: str, file_id: Any, *,
                    decision: Any, comment: Any = "") -> dict[str, Any]:
        """Record one checker's decision on one file of the current version:
        ``approve`` (a written reason needed where approving the whole request needs
        one; never a ``block`` file) or ``request_changes`` (a comment required).
        Each person decides a file once, under whichever of their names, and not
        after reviewing the whole version. When every file then has the required
        approvals, the request is approved. A supporting file takes no decision (it is
        never released): refused."""
        if decision not in FILE_DECISIONS:
            raise InvalidInput("decision: expected approve or request_changes")
        comment = self._text(comment, "comment", required=decision == "request_changes")
        action = Action.APPROVE if decision == "approve" else Action.REQUEST_CHANGES
        with self._guard(user, f"file_{decision}", request_id), self._tx() as s:
            user = self._as_person(user)
            req = self._load(s, request_id, lock=True)
            project = self._project(req.project)
            require_view(user, req, project)
            self._persons(req)
            require_transition(user, req, project, action)
            f = s.get(File, file_id) if isinstance(file_id, int) else None
            if f is None or f.request_id != req.id:
                raise NotFound(f"request {req.id} has no file {file_id}")
            if f.version != req.version:
                raise InvalidTransition(
                    f"{f.name} is a file of version {f.version}; request {req.id} is at "
                    f"version {req.version}: decisions are on the current version's files")
            if f.supporting:
                raise PolicyViolation(
                    f"{f.name} is a supporting file of request {req.id}: it is never "
                    "released, so it takes no per-file decision; to have it changed, "
                    "request changes to the whole request")
            self._require_first_review(user, req)
            me = user.person
            for d in req.current_file_decisions():
                if d.file_name != f.name:
                    continue
                why = me.same_as(self._decider(d))
                if why is not None:
                    as_ = "" if d.reviewer == user.name else (
                        f" as {d.reviewer!r} (one person: {why})")
                    raise PolicyViolation(
                        f"you have already decided on {f.name} in version {req.version} of "
                        f"request {req.id}{as_}: {d.decision.replace('_', ' ')}; each "
                        "checker decides a file once")
            if decision == "approve":
                require_approvable(f.name, f.verdict, comment)
            s.add(FileDecision(
                request_id=req.id, version=req.version, file_name=f.name, sha256=f.sha256,
                reviewer=user.name, reviewer_dn=user.dn, reviewer_uid_number=user.uid_number,
                decision=decision, comment=comment, created_at=utcnow()))
            req.updated_at = utcnow()
            s.flush()
            s.refresh(req, ["file_decisions"])
            self._history(s, req, user, f"file_{decision}", "", f"{f.name}: {comment}"
                          if comment else f.name)
            self._later(s, FILE_DECISIONS[decision], user, req, version=req.version,
                        file=f.name, sha256=f.sha256, decision=decision, comment=comment,
                        **({"reviewer_dn": user.dn, "reviewer_uid_number": user.uid_number}
                           if user.dn else {}))
            states = self._file_states(req)
            if decision == "approve" and all(st["releasable"] for st in states.values()):
                t = require_transition(user, req, project, Action.APPROVE, State.APPROVED)
                before = req.state
                req.state = t.target.value
                self._history(s, req, user, "approve", before,
                              "every file has its approvals (per-file decisions)")
                self._later(s, t.event, user, req, version=req.version, from_state=before,
                            to_state=req.state, decision="approve",
                            sha256=[x.sha256 for x in _outputs(req)],
                            comment="every file has its approvals (per-file decisions)",
                            overrides={})
        return self.get_request(user, request_id, record_view=False)

    # ------------------------------------------------------------ comparing versions

    def compare_versions(self, user: Identity, request_id: str, old: Any = None,
                         new: Any = None) -> dict[str, Any]:
        """What changed between two versions of a request (default: the one before the
        current one, and the current one), computed from the previews and check results
        the viewer may see of both, never from the staged bytes."""
        with self._guard(user, "compare", request_id), self.sessions() as s:
            req = self._load(s, request_id)
            project = self._project(req.project)
            require_view(user, req, project)
            try:
                new_v = req.version if new in (None, "") else int(new)
                old_v = new_v - 1 if old in (None, "") else int(old)
            except (TypeError, ValueError):
                raise InvalidInput("from, to: expected version numbers") from None
            if not (1 <= old_v < new_v <= req.version):
                raise InvalidInput(
                    f"from, to: expected 1 <= from < to <= {req.version} (request {req.id} "
                    f"has {req.version} version(s)); got from={old_v}, to={new_v}")
            for v in (old_v, new_v):
                require_file_view(user, req, project, FileView.PREVIEW, v)
            sides = {v: [self._file(f, file_views(user, req, project, v))
                         for f in req.files if f.version == v] for v in (old_v, new_v)}
            summary = self._summary(req)
        files = compare_files(sides[old_v], sides[new_v])
        shown = [f["id"] for v in sides.values() for f in v if "preview" in f]
        self._audit(EVENTS["compare"], user, req, version=req.version, compared=[old_v, new_v],
                    previews=shown)
        return {"request": summary, "from": old_v, "to": new_v, "files": files}

    # ------------------------------------------------------------ previews

    def render_missing_previews(self) -> int:
        """Render, once, the previews of files staged before previews were stored
        (schema 0001) whose request is still open; returns how many were stored.

        The verdict and report recorded at upload stay as they were; only the
        preview is added. Files whose staged copy is gone are skipped.
        """
        open_states = [st.value for st in State if st not in PURGEABLE_STATES
                       and st is not State.RELEASED]
        with self.sessions() as s:
            todo = [
                (f.id, f.sha256, f.name, f.request.project)
                for f in s.scalars(
                    select(File).join(Request, File.request_id == Request.id).where(
                        File.preview.is_(None), Request.state.in_(open_states))
                ).all()
            ]
        done = 0
        for fid, sha, name, project in todo:
            if not self.staging.exists(sha):
                continue
            _, preview, _ = self._inspect(sha, name, project)
            with self._write_sessions() as s, s.begin():
                f = s.get(File, fid)
                if f is not None and f.preview is None:
                    f.preview = json.dumps(preview, default=str)
                    done += 1
        if done:
            log.info("rendered %d missing preview(s)", done)
        return done

    # ------------------------------------------------------------ purge

    def purge(self, *, actor: str = "airlock", now: datetime | None = None,
              dry_run: bool = False) -> list[dict[str, Any]]:
        """Delete the staged files of requests withdrawn or rejected more than
        ``purge_after_days`` ago; audit each request (``airlock.request.purged``).

        An object shared with a request that is not purged (identical bytes
        exported again) is kept. The audit record is written before anything is
        deleted, inside the transaction that marks the request purged and drops
        its previews. Returns what was (or, with ``dry_run``, would be) purged.
        """
        now = now or utcnow()
        cutoff = now - timedelta(days=self.settings.purge_after_days)
        system = Identity(name=actor)
        if dry_run:
            with self.sessions() as s:
                return [plan for _, plan in self._purge_plan(s, cutoff)]
        done: list[dict[str, Any]] = []
        with self._tx() as s:
            plans = self._purge_plan(s, cutoff, lock=True)
            for req, plan in plans:
                req.purged_at = now
                for f in req.files:
                    f.preview = None
                self._history(s, req, system, "purge", req.state,
                              f"staged files purged after {self.settings.purge_after_days:g} days")
                s.flush()
                # recorded before the deletion: nothing disappears without its record
                self._audit(EVENTS["purge"], system, req, state=req.state,
                            closed_at=_iso(req.updated_at),
                            retention_days=self.settings.purge_after_days,
                            deleted=plan["deleted"], kept_shared=plan["kept_shared"])
                for sha in plan["deleted"]:
                    self.staging.delete(sha)
                done.append(plan)
        return done

    def _purge_plan(self, s: Session, cutoff: datetime,
                    lock: bool = False) -> list[tuple[Request, dict[str, Any]]]:
        q = select(Request).where(
            Request.state.in_([st.value for st in PURGEABLE_STATES]),
            Request.purged_at.is_(None),
            Request.updated_at <= cutoff,
        ).options(selectinload(Request.files)).order_by(Request.updated_at)
        if lock:
            q = q.with_for_update()
        due = list(s.scalars(q).all())
        if not due:
            return []
        ids = [r.id for r in due]
        shas = {f.sha256 for r in due for f in r.files}
        needed = set(s.scalars(
            select(File.sha256).join(Request, File.request_id == Request.id).where(
                File.sha256.in_(shas), Request.id.not_in(ids), Request.purged_at.is_(None),
            )
        ).all())
        plans = []
        deleting: set[str] = set()
        for r in due:
            mine = sorted({f.sha256 for f in r.files})
            deleted = [x for x in mine if x not in needed and x not in deleting]
            deleting.update(deleted)
            plans.append((r, {
                "request_id": r.id, "project": r.project, "state": r.state,
                "closed_at": _iso(r.updated_at), "deleted": deleted,
                "kept_shared": [x for x in mine if x in needed],
            }))
        return plans

    # ------------------------------------------------------------ views

    def _summary(self, r: Request) -> dict[str, Any]:
        current = r.current_reviews()
        return {
            "id": r.id,
            "project": r.project,
            "requester": r.requester,
            "title": r.title,
            "state": r.state,
            "version": r.version,
            "approvals": sum(1 for v in current if v.decision == "approve"),
            "required_approvals": self.settings.required_approvals,
            "created_at": as_utc(r.created_at).isoformat(),
            "updated_at": as_utc(r.updated_at).isoformat(),
            "submitted_at": _iso(r.submitted_at),
            "released_at": _iso(r.released_at),
        }

    def _file(self, f: File, views: set[FileView]) -> dict[str, Any]:
        """A file as ``views`` allow: the report and the preview only when listed."""
        out: dict[str, Any] = {
            "id": f.id,
            "name": f.name,
            "version": f.version,
            "sha256": f.sha256,
            "size": f.size,
            "verdict": f.verdict,
            "format": f.format,
            "needs_override_reason": _needs_reason(f.verdict) and not f.supporting,
            "downloadable": FileView.CONTENT in views and f.released and not f.supporting,
            "released": bool(f.released) and not f.supporting,
            "uploaded_by": f.uploaded_by,
            "created_at": as_utc(f.created_at).isoformat(),
            "supporting": bool(f.supporting),
            "needs_context": _needs_context(f),
        }
        if FileView.REPORT in views:
            # the researcher's words about the file go with its report (not shown once
            # the request is withdrawn or rejected, like the findings)
            out["context"] = f.context
            out["controls"] = f.controls
            report = f.report_dict()
            out["findings"] = report.get("findings", [])
            out["report"] = report
        if FileView.PREVIEW in views:
            out["preview"] = f.preview_dict()
        proposal = f.proposal_dict()
        if proposal is not None and views & {FileView.REPORT, FileView.PROPOSAL}:
            # that a fix is proposed (and why not) is part of the report; what it says
            # and its bytes go to the requester only (get_proposal)
            out["proposal"] = {"available": "text" in proposal,
                               "method": proposal.get("method")}
            if "error" in proposal:
                out["proposal"]["error"] = proposal["error"]
            if FileView.PROPOSAL in views and "text" in proposal:
                out["proposal"]["notes"] = proposal.get("notes") or []
        return out

    def _detail(self, r: Request, user: Identity, actors: set[Actor]) -> dict[str, Any]:
        data = self._summary(r)
        data["justification"] = r.justification
        project = self._project(r.project)
        data["files"] = [self._file(f, file_views(user, r, project, f.version))
                         for f in r.current_files()]
        _acro_beside(data["files"])
        self._decisions_beside(r, user, data)
        data["versions"] = {
            str(v): [self._file(f, file_views(user, r, project, f.version))
                     for f in r.files if f.version == v]
            for v in range(1, r.version)
        }
        data["purged_at"] = _iso(r.purged_at)
        data["reviews"] = [
            {
                "reviewer": v.reviewer, "version": v.version, "decision": v.decision,
                "comment": v.comment, "overrides": v.overrides_dict(),
                "created_at": as_utc(v.created_at).isoformat(),
            }
            for v in r.reviews
        ]
        data["history"] = [
            {
                "ts": as_utc(h.ts).isoformat(), "actor": h.actor, "action": h.action,
                "from_state": h.from_state, "to_state": h.to_state, "version": h.version,
                "comment": h.comment,
            }
            for h in r.history
        ]
        data["your_roles"] = sorted(a.value for a in actors)
        data["allowed_actions"] = self._allowed(user, r, actors)
        if "release_partial" in data["allowed_actions"] and data["partial_release"][
                "blocked_by"]:
            data["allowed_actions"].remove("release_partial")
        return data

    def _decisions_beside(self, r: Request, user: Identity, data: dict[str, Any]) -> None:
        """Per file of the current version: the checkers' decisions, its approvals,
        whether it may be released and why it is held; and what a partial release
        would release now (``partial_release``)."""
        states = self._file_states(r)
        me = user.person
        for f in data["files"]:
            st = states.get(f["name"])
            if st is None:
                continue
            ds = [d for d in r.current_file_decisions() if d.file_name == f["name"]]
            f["decisions"] = [
                {"reviewer": d.reviewer, "decision": d.decision, "comment": d.comment,
                 "created_at": as_utc(d.created_at).isoformat()}
                for d in ds
            ]
            f["approvals"] = len(st["approvers"])
            f["approved_by"] = [p.name for p in st["approvers"]]
            f["releasable"] = st["releasable"]
            f["held"] = st["held"]
            mine = [d.decision for d in ds if me.same_as(self._decider(d)) is not None]
            f["your_decision"] = mine[0] if mine else None
        files, held, undecided = self._partial_plan(r)
        blocked_by = []
        if undecided:
            blocked_by.append("undecided: " + ", ".join(undecided))
        if not files:
            blocked_by.append("no file has its approvals")
        if not held:
            blocked_by.append("nothing is held")
        data["partial_release"] = {
            "release": [f.name for f in files],
            "hold": [f.name for f, _ in held],
            "blocked_by": blocked_by,
        }

    def _allowed(self, user: Identity, r: Request, actors: set[Actor]) -> list[str]:
        out = []
        state = State(r.state)
        for action in Action:
            for t in transitions_for(action, state):
                if actors & t.actors and action.value not in out:
                    if action is Action.APPROVE or action in (
                        Action.REQUEST_CHANGES, Action.REJECT
                    ):
                        if any(v.reviewer == user.name for v in r.current_reviews()):
                            continue
                    out.append(action.value)
        return out


def _difference_here(files: list[dict[str, Any]], released: list[dict[str, Any]], policy: Any,
                tmp_dir: Any = None) -> list[list[dict[str, Any]]]:
    """Differencing in the service's own process (``check_runner: process``)."""
    return ledger.difference(files, released, policy)


#: verdicts whose files need the researcher's context and controls before submission
CONTEXT_VERDICTS = frozenset({Verdict.FAIL.value, Verdict.REVIEW.value})


def _outputs(req: Request) -> list[File]:
    """The files of the current version that may be released: not the supporting ones
    (checkers see those, the checks use them, they never leave)."""
    return [f for f in req.current_files() if not f.supporting]


def _checking(req: Request) -> bool:
    return any(f.verdict == CHECKING for f in req.current_files())


def _require_checked(req: Request, files: list[File]) -> None:
    """Submission waits until every file has its verdict (checks run after the upload
    answered, :mod:`.background`)."""
    waiting = [f.name for f in files if f.verdict == CHECKING]
    if waiting:
        raise StillChecking(
            f"request {req.id} cannot be submitted yet: {len(waiting)} of its "
            f"{len(files)} file(s) {'is' if len(waiting) == 1 else 'are'} still being "
            "checked (verdict 'checking'). Wait until every file has its verdict (read "
            f"GET .../requests/{req.id}), then submit again",
            log_message=f"submit of {req.id} while checking: {', '.join(waiting)}")


def _needs_context(f: File) -> bool:
    """A file to be released whose verdict asks for context and controls that lacks one."""
    return (not f.supporting and f.verdict in CONTEXT_VERDICTS
            and not (f.context.strip() and f.controls.strip()))


def _require_context(req: Request, files: list[File]) -> None:
    """Submission waits until every ``fail``/``review`` file to be released says what it
    is and which statistical controls were applied (OpenSAFELY's context and controls)."""
    missing = []
    for f in files:
        if _needs_context(f):
            lacks = [w for w, v in (("context", f.context), ("statistical controls", f.controls))
                     if not v.strip()]
            missing.append(f"{f.name} (file {f.id}, verdict {f.verdict}) has no "
                           + " and no ".join(lacks))
    if missing:
        raise PolicyViolation(
            f"request {req.id} cannot be submitted: " + "; ".join(missing) + ". A file that "
            "failed the checks or that they could not judge needs its context (what it is, "
            "what each number counts) and the statistical controls applied (rounding, "
            "suppression, thresholds) for the checkers: set them with PATCH "
            f".../requests/{req.id}/files/<file id> or on the request's page, or mark the "
            "file as supporting (never released)")


def _flag(value: Any, field: str) -> bool | None:
    """A yes/no input: JSON booleans, or ``true``/``false``/``1``/``0`` from a query."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    raise InvalidInput(f"{field}: expected true or false")


def _needs_reason(verdict: str) -> bool:
    try:
        return VERDICT_RULES[Verdict(verdict)][1]
    except ValueError:
        return True


def _sized(n: int) -> str:
    """``1000 bytes``, ``1073741824 bytes (1.0 GiB)``: exact, and readable when large."""
    if n < 1024:
        return f"{n} bytes"
    x, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while x >= 1024 and len(units) > 1:
        x, units = x / 1024, units[1:]
    return f"{n} bytes ({x:.1f} {units[0]})"


def _iso(value: Any) -> str | None:
    v = as_utc(value)
    return v.isoformat() if v else None


def _acro_beside(files: list[dict[str, Any]]) -> None:
    """ACRO's judgements, from an ACRO ``results.json`` of the request, put beside the
    files they are about (``acro``: status, summary, command, the researcher's
    exception). Only reports the viewer may see are read; the verdicts stay ours."""
    from ..sdc.acro import entries_by_file  # deferred: pandas, loaded by sdc

    by_name = entries_by_file([f["report"] for f in files if "report" in f])
    for f in files:
        if "report" in f and f["name"].rsplit("/", 1)[-1] in by_name:
            f["acro"] = by_name[f["name"].rsplit("/", 1)[-1]]
