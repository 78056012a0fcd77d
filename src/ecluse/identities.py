"""Identity migration: names from before canonical hub names, mapped to one person each.

Before the hub named every person by their directory entry's canonical uid
(:meth:`ecluse.directory.Directory.canonical_name`), a person could have a hub
account per login name (``carol``, ``c.petit``) or per spelling (``Carol``),
airlock requests and reviews under either, and audit records with either as
actor. :class:`IdentityMigration` maps every such name through the directory:

* **hub** (JupyterHub's database): an alias account is renamed to the canonical
  name, or merged into the canonical account when one exists (its named
  servers that do not clash move over; its tokens are revoked, its group
  memberships dropped: the directory sets them again at the next sign-in). An
  alias account with a running server stops the whole migration (stop it
  first);
* **homes**: ``<projects_root>/<project>/home/<alias>`` becomes
  ``…/home/<canonical>`` when that does not exist yet (otherwise reported);
* **airlock**: requesters, reviewers, history actors and uploaders are
  rewritten to the canonical name, and each request and review records the
  entry's DN and uidNumber; a version reviewed twice by one person keeps both
  rows (reported; they count once), and an ``approved`` request left with too
  few distinct approvers goes back to ``in_review``;
* **audit**: the log is append-only and HMAC-chained, so nothing in it is
  rewritten: one ``identity.alias_migrated`` record per alias says which
  person it is, and :meth:`ecluse.audit.AuditLog.records` resolves a name to
  all the names of its person through those records.

Everything is resolved before anything changes: a directory that does not
answer stops the migration with nothing migrated (fail closed). A name the
directory does not know is left as it is (reported). Running it again
changes nothing (idempotent). ``dry_run`` reports what would change and
writes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .airlock import db
from .airlock.models import File, HistoryEntry, Request, Review
from .airlock.rules import State
from .audit import ALIAS_EVENT, AuditLog, audit_table
from .auditevents import AuditEvent
from .directory import DirectoryError, DirectoryUnavailable
from .people import People, Person, distinct
from .settings.airlock import airlock_settings

log = logging.getLogger(__name__)

MIGRATION_EVENT = AuditEvent.IDENTITY_MIGRATION
#: audit events whose actor is whatever was typed at the login form (not a person yet)
_TYPED_NAMES = (AuditEvent.LOGIN_FAILURE, AuditEvent.LOGIN_THROTTLED)


class MigrationError(RuntimeError):
    """The migration was refused; nothing was changed."""


@dataclass
class MigrationReport:
    dry_run: bool
    #: alias -> canonical name, DN and uidNumber
    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: names the directory does not know (left as they are)
    unknown: list[str] = field(default_factory=list)
    hub: list[dict[str, Any]] = field(default_factory=list)
    homes: list[dict[str, Any]] = field(default_factory=list)
    airlock: dict[str, Any] = field(default_factory=dict)
    #: aliases recorded in the audit log by this run
    audit: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.hub or self.homes or self.audit
                    or any(v for k, v in self.airlock.items() if k != "duplicate_reviews"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        verb = "would " if self.dry_run else ""
        out = [f"{a} -> {m['name']} ({m['dn']}, uidNumber {m['uid_number']})"
               for a, m in sorted(self.aliases.items())]
        for h in self.hub:
            extra = ""
            if h["action"] == "merge":
                extra = (f": servers moved {h['servers_moved'] or 'none'}, dropped "
                         f"{h['servers_dropped'] or 'none'}, {h['tokens_revoked']} token(s) "
                         "revoked")
            out.append(f"hub: {verb}{h['action']} {h['user']!r} into {h['canonical']!r}{extra}")
        for h in self.homes:
            out.append(f"home: {verb}move {h['from']} to {h['to']}" if h["moved"]
                       else f"home: {h['from']} and {h['to']} both exist: merge them by hand")
        counts = {k: v for k, v in self.airlock.items() if isinstance(v, int) and v}
        if counts:
            out.append(f"airlock: {verb}rewrite " + ", ".join(
                f"{n} {k.replace('_', ' ')}" for k, v in counts.items() for n in [v]))
        for rid in self.airlock.get("reopened", []):
            out.append(f"airlock: {verb}put {rid} back in review (too few distinct approvers)")
        for d in self.airlock.get("duplicate_reviews", []):
            out.append(f"airlock: {d}")
        for a in self.audit:
            out.append(f"audit: {verb}record {ALIAS_EVENT} for {a!r}")
        out += [f"note: {n}" for n in self.notes]
        if self.unknown:
            out.append("not in the directory (left as they are): " + ", ".join(self.unknown))
        if not self.changed:
            out.append("nothing to migrate")
        return out


def _sqlite_missing(url: str) -> bool:
    """A SQLite database file that does not exist (nothing to migrate there)."""
    return url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists()


class IdentityMigration:
    """Maps the names of one deployment to canonical names (see the module docstring)."""

    def __init__(self, settings: Any, *, people: Callable[[str], Person] | None = None,
                 audit: Any | None = None, actor: str = "ecluse-migrate") -> None:
        self.settings = settings
        self.people = people or People(settings)
        self._audit = audit
        #: the audit log is ours to close (opened here, not given)
        self._own_audit = audit is None
        self.actor = actor

    @property
    def audit(self) -> Any:
        if self._audit is None:
            self._audit = AuditLog.from_settings(self.settings)
        return self._audit

    def close(self) -> None:
        """Let go of the audit database when this migration opened it (a connection
        left open keeps the state volume busy: ``ecluse up`` could not unmount it)."""
        if self._own_audit and self._audit is not None:
            self._audit.engine.dispose()
            self._audit = None

    # ------------------------------------------------------------ resolving

    def _resolve(self, names: set[str]) -> tuple[dict[str, Person], list[str]]:
        """name -> Person for every name the directory knows; raises MigrationError
        (nothing changed) when it does not answer."""
        known: dict[str, Person] = {}
        unknown: list[str] = []
        for name in sorted(names):
            person = None
            for attempt in dict.fromkeys([name, name.strip().lower()]):
                try:
                    person = self.people(attempt)
                    break
                except DirectoryUnavailable as e:
                    raise MigrationError(
                        f"the directory (LDAP) does not answer ({e}): nothing was migrated; "
                        "run `ecluse migrate identities` again once it does") from None
                except DirectoryError:
                    continue
            if person is None:
                unknown.append(name)
            else:
                known[name] = person
        return known, unknown

    # ------------------------------------------------------------ reading names

    def _hub_engine(self) -> Any | None:
        """JupyterHub's own engine (SQLite foreign keys on); refuses a hub database
        JupyterHub has not upgraded (``jupyterhub upgrade-db`` first)."""
        from jupyterhub import orm

        url = self.settings.hub_database_url
        if _sqlite_missing(url):
            return None
        try:
            return orm.new_session_factory(url).kw["bind"]
        except orm.DatabaseSchemaMismatch as e:
            raise MigrationError(f"the hub database is not at JupyterHub's schema: {e}") from None

    def _airlock_url(self) -> str | None:
        url = airlock_settings(self.settings).resolved_database_url(self.settings.db_dir)
        return None if _sqlite_missing(url) else url

    def _hub_names(self, engine: Any) -> set[str]:
        from jupyterhub import orm

        with Session(engine) as s:
            return set(s.scalars(select(orm.User.name)).all())

    @staticmethod
    def _airlock_names(engine: Any) -> set[str]:
        names: set[str] = set()
        with engine.connect() as conn:
            for col in (Request.requester, Review.reviewer, HistoryEntry.actor,
                        File.uploaded_by):
                names.update(conn.execute(select(col).distinct()).scalars())
        return names

    def _audit_actors(self) -> dict[str, int]:
        from sqlalchemy import func


        t = audit_table
        with self.audit.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.actor, func.count()).where(
                    t.c.actor.is_not(None), t.c.event.not_in(_TYPED_NAMES),
                    ~t.c.event.startswith("identity."))
                .group_by(t.c.actor)).all()
        return {a: n for a, n in rows}

    # ------------------------------------------------------------ the run

    def run(self, *, dry_run: bool = False) -> MigrationReport:
        """Migrate (or, with ``dry_run``, say what would be migrated)."""
        report = MigrationReport(dry_run=dry_run)
        if dry_run and self._audit is None:  # a reader: creates no key, writes nothing
            self._audit = AuditLog.from_settings(self.settings, writer=False)
        hub = self._hub_engine()
        airlock_url = self._airlock_url()
        airlock = None
        if airlock_url:
            airlock = db.make_engine(airlock_url)
        try:
            actors = self._audit_actors()
            names = set(actors)
            if hub is not None:
                names |= self._hub_names(hub)
            if airlock is not None:
                names |= self._airlock_names(airlock)
            names.discard("")
            try:
                people, report.unknown = self._resolve(names)
            except MigrationError as e:
                if not dry_run:
                    self.audit.record(MIGRATION_EVENT, actor=self.actor, outcome="failure",
                                      error=str(e))
                raise
            aliases = {n: p for n, p in people.items() if p.name != n}
            report.aliases = {a: {"name": p.name, "dn": p.dn, "uid_number": p.uid_number}
                              for a, p in aliases.items()}
            self._apply(report, people, aliases, actors, hub, airlock, dry_run)
        finally:
            for engine in (hub, airlock):
                if engine is not None:
                    engine.dispose()
            self.close()
        return report

    def _apply(self, report: MigrationReport, people: dict[str, Person],
               aliases: dict[str, Person], actors: dict[str, int], hub: Any, airlock: Any,
               dry_run: bool) -> None:
        hub_session = Session(hub) if hub is not None else None
        airlock_session = None
        schema_ready = False
        if airlock is not None:
            if not dry_run:
                db.upgrade(airlock)  # the DN/uidNumber columns
            schema_ready = db.current_revision(airlock) == db.head_revision()
            airlock_session = Session(airlock)
        try:
            if hub_session is not None:
                report.hub = self._hub(hub_session, aliases)
            report.homes = self._homes(aliases, dry_run)
            if airlock_session is not None:
                report.airlock = self._airlock(airlock_session, people, aliases,
                                               schema_ready=schema_ready)
            recorded = self._recorded_aliases()
            report.audit = sorted(a for a in aliases if (a, aliases[a].name) not in recorded)
            if dry_run:
                return
            for s in (hub_session, airlock_session):
                if s is not None:
                    s.flush()
            # the audit records first: nothing changes without its record
            hub_by = {h["user"]: h for h in report.hub}
            for a in report.audit:
                p = aliases[a]
                self.audit.record(ALIAS_EVENT, actor=self.actor, alias=a, canonical=p.name,
                                  dn=p.dn, uid_number=p.uid_number,
                                  hub=hub_by.get(a, {}).get("action"),
                                  audit_records=actors.get(a, 0))
            if report.changed:
                self.audit.record(MIGRATION_EVENT, actor=self.actor, outcome="success",
                                  hub=report.hub, homes=report.homes,
                                  airlock=report.airlock, aliases=sorted(report.aliases))
            for s in (hub_session, airlock_session):
                if s is not None:
                    s.commit()
            self._move_homes(report.homes)
        finally:
            for s in (hub_session, airlock_session):
                if s is not None:
                    s.rollback()
                    s.close()

    # ------------------------------------------------------------ hub

    @staticmethod
    def _hub(s: Session, aliases: dict[str, Person]) -> list[dict[str, Any]]:
        from jupyterhub import orm

        users = {u.name: u for u in s.scalars(select(orm.User)).all()}
        running = sorted(f"{name} (server {sp.name or 'default'!r})"
                         for name, u in users.items() if name in aliases
                         for sp in u._orm_spawners if sp.server_id is not None)
        if running:
            raise MigrationError(
                "hub accounts named by an alias have running servers: "
                + ", ".join(running) + "; stop them first (nothing was migrated)")
        out = []
        for name in sorted(n for n in users if n in aliases):
            u, canonical = users[name], aliases[name].name
            target = users.get(canonical)
            if target is None:
                u.name = canonical
                users[canonical] = u
                out.append({"user": name, "canonical": canonical, "action": "rename"})
                continue
            taken = {sp.name for sp in target._orm_spawners}
            moved, dropped = [], []
            for sp in list(u._orm_spawners):
                if sp.name in taken:
                    dropped.append(sp.name)
                else:
                    moved.append(sp.name)
                    sp.user = target
            tokens = len(u.api_tokens)
            s.flush()
            s.delete(u)
            out.append({"user": name, "canonical": canonical, "action": "merge",
                        "servers_moved": moved, "servers_dropped": dropped,
                        "tokens_revoked": tokens})
        return out

    # ------------------------------------------------------------ homes

    def _homes(self, aliases: dict[str, Person], dry_run: bool) -> list[dict[str, Any]]:
        root = Path(self.settings.projects_root)
        out = []
        for slug in sorted(getattr(self.settings, "projects", {}) or {}):
            for alias, p in sorted(aliases.items()):
                src, dst = root / slug / "home" / alias, root / slug / "home" / p.name
                if src.is_dir() and not src.is_symlink():
                    out.append({"from": str(src), "to": str(dst), "moved": not dst.exists()})
        return out

    @staticmethod
    def _move_homes(homes: list[dict[str, Any]]) -> None:
        for h in homes:
            if h["moved"]:
                Path(h["from"]).rename(h["to"])

    # ------------------------------------------------------------ airlock

    def _airlock(self, s: Session, people: dict[str, Person], aliases: dict[str, Person],
                 *, schema_ready: bool) -> dict[str, Any]:
        def canon(name: str) -> str:
            return aliases[name].name if name in aliases else name

        out: dict[str, Any] = {"requests": 0, "reviews": 0, "history": 0, "files": 0,
                               "identities_recorded": 0, "reopened": [],
                               "duplicate_reviews": []}
        if not schema_ready:  # a dry run on a database not upgraded yet: names only
            for key, col in (("requests", Request.requester), ("reviews", Review.reviewer),
                             ("history", HistoryEntry.actor), ("files", File.uploaded_by)):
                out[key] = len(s.execute(select(col).where(col.in_(list(aliases)))).all())
            return out
        for h in s.scalars(select(HistoryEntry).where(
                HistoryEntry.actor.in_(list(aliases)))).all():
            h.actor = canon(h.actor)
            out["history"] += 1
        for f in s.scalars(select(File).where(File.uploaded_by.in_(list(aliases)))).all():
            f.uploaded_by = canon(f.uploaded_by)
            out["files"] += 1
        for req in s.scalars(select(Request)).all():
            p = people.get(req.requester)
            if req.requester in aliases:
                req.requester = canon(req.requester)
                out["requests"] += 1
            if p is not None and (req.requester_dn, req.requester_uid_number) != (
                    p.dn, p.uid_number):
                req.requester_dn, req.requester_uid_number = p.dn, p.uid_number
                out["identities_recorded"] += 1
            by_version: dict[int, list[Review]] = {}
            for r in req.reviews:
                by_version.setdefault(r.version, []).append(r)
            for version, reviews in sorted(by_version.items()):
                self._reviews(req, version, reviews, people, aliases, out)
            if req.state == State.APPROVED.value and self._too_few(req):
                req.state = State.IN_REVIEW.value
                s.add(HistoryEntry(
                    request_id=req.id, actor=self.actor, action="recount",
                    from_state=State.APPROVED.value, to_state=State.IN_REVIEW.value,
                    version=req.version,
                    comment="identity migration: approvals by one person under two names "
                            "count once"))
                out["reopened"].append(req.id)
        return out

    def _reviews(self, req: Any, version: int, reviews: list[Any], people: dict[str, Person],
                 aliases: dict[str, Person], out: dict[str, Any]) -> None:
        taken = {r.reviewer for r in reviews}
        for r in reviews:
            p = people.get(r.reviewer)
            if r.reviewer in aliases:
                canonical = aliases[r.reviewer].name
                if canonical in taken:  # the same person reviewed this version twice
                    out["duplicate_reviews"].append(
                        f"{req.id} version {version}: reviewed by {canonical!r} and by "
                        f"{r.reviewer!r}, one person: the review stays under "
                        f"{r.reviewer!r} and counts once")
                else:
                    taken.discard(r.reviewer)
                    taken.add(canonical)
                    r.reviewer = canonical
                    out["reviews"] += 1
            if p is not None and (r.reviewer_dn, r.reviewer_uid_number) != (
                    p.dn, p.uid_number):
                r.reviewer_dn, r.reviewer_uid_number = p.dn, p.uid_number
                out["identities_recorded"] += 1

    def _too_few(self, req: Any) -> bool:
        requester = Person(req.requester, req.requester_dn, req.requester_uid_number)
        approvers = distinct([Person(r.reviewer, r.reviewer_dn, r.reviewer_uid_number)
                              for r in req.current_reviews() if r.decision == "approve"])
        approvers = [p for p in approvers if p.same_as(requester) is None]
        return len(approvers) < airlock_settings(self.settings).required_approvals

    # ------------------------------------------------------------ audit

    def _recorded_aliases(self) -> set[tuple[str, str]]:
        return {(r.details.get("alias"), r.details.get("canonical"))
                for r in self.audit.records(event=ALIAS_EVENT)}


def run_once(settings: Any, marker: Path | None = None) -> MigrationReport | None:
    """The migration at start-up (``ecluse up``): once per state directory, recorded
    in ``identity-migration.json``; ``None`` when it ran before."""
    marker = marker or Path(settings.state_dir) / "identity-migration.json"
    if marker.exists():
        return None
    report = IdentityMigration(settings, actor="ecluse-up").run()
    marker.write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    return report
