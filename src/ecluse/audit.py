"""Append-only, hash-chained audit log.

Every component (hub authenticator, spawner, airlock, batch) records what it
did here. Each record carries the hash of the previous record, so an edited,
deleted, inserted or reordered record breaks the chain and
:meth:`AuditLog.verify` says which. Records live in a database table (SQLite
in WAL mode by default, PostgreSQL supported) and are mirrored, one JSON
object per line, to a JSON Lines file that can be shipped to a SIEM.

Writers in several processes append safely: each append runs in one
transaction that first takes a write lock (``BEGIN IMMEDIATE`` on SQLite, a
transaction-scoped advisory lock on PostgreSQL), reads the head of the chain
and inserts the next record.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    select,
    text,
)

from .sqlite import sqlite_pragmas

log = logging.getLogger(__name__)

GENESIS = "0" * 64

metadata = MetaData()
audit_table = Table(
    "audit_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", String(40), nullable=False),
    Column("event", String(80), nullable=False, index=True),
    Column("actor", String(128), index=True),
    Column("project", String(64), index=True),
    Column("outcome", String(20), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

FIELDS = ("seq", "ts", "event", "actor", "project", "outcome", "details", "prev_hash")


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: str
    event: str
    actor: str | None
    project: str | None
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "event": self.event,
            "actor": self.actor,
            "project": self.project,
            "outcome": self.outcome,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def record_hash(
    seq: int,
    ts: str,
    event: str,
    actor: str | None,
    project: str | None,
    outcome: str,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    """sha256 over the canonical JSON of a record's fields (including the previous hash)."""
    payload = json.dumps(
        [seq, ts, event, actor, project, outcome, details, prev_hash],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class VerifyResult:
    count: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    """The audit log of one deployment.

    ``database_url`` is a SQLAlchemy URL; ``jsonl_path`` the mirror file (None:
    no mirror). Creating an ``AuditLog`` creates the table when missing.
    """

    def __init__(self, database_url: str, jsonl_path: str | os.PathLike | None = None):
        self.database_url = database_url
        self.jsonl_path = Path(jsonl_path) if jsonl_path else None
        self.engine = create_engine(database_url, future=True)
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self._sqlite:
            sqlite_pragmas(self.engine, "journal_mode=WAL", "busy_timeout=10000",
                           "synchronous=NORMAL", begin="BEGIN IMMEDIATE")
        metadata.create_all(self.engine)

    @classmethod
    def from_settings(cls, settings: Any) -> AuditLog:
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(settings.audit_db_url, settings.audit_jsonl_path)

    # ------------------------------------------------------------ writing

    def record(
        self,
        event: str,
        *,
        actor: str | None,
        project: str | None = None,
        outcome: str = "success",
        **details: Any,
    ) -> AuditRecord:
        """Append one event and return it. Never silently drops: errors propagate."""
        details = json.loads(json.dumps(details, default=str))
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(4242424242)"))
            head = conn.execute(
                select(audit_table.c.seq, audit_table.c.hash)
                .order_by(audit_table.c.seq.desc())
                .limit(1)
            ).first()
            seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
            ts = datetime.now(UTC).isoformat(timespec="microseconds")
            digest = record_hash(seq, ts, event, actor, project, outcome, details, prev)
            rec = AuditRecord(seq, ts, event, actor, project, outcome, details, prev, digest)
            conn.execute(
                audit_table.insert().values(
                    seq=seq,
                    ts=ts,
                    event=event,
                    actor=actor,
                    project=project,
                    outcome=outcome,
                    details=json.dumps(details, sort_keys=True, ensure_ascii=False),
                    prev_hash=prev,
                    hash=digest,
                )
            )
            # mirror inside the transaction so the file order follows the chain
            self._mirror(rec)
        return rec

    def _mirror(self, rec: AuditRecord) -> None:
        if not self.jsonl_path:
            return
        self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.jsonl_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, (json.dumps(rec.to_dict(), ensure_ascii=False) + "\n").encode())
        finally:
            os.close(fd)

    # ------------------------------------------------------------ reading

    def records(
        self,
        *,
        user: str | None = None,
        since: datetime | None = None,
        event: str | None = None,
        project: str | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        q = select(audit_table).order_by(audit_table.c.seq)
        if user:
            q = q.where(audit_table.c.actor == user)
        if event:
            q = q.where(audit_table.c.event == event)
        if project:
            q = q.where(audit_table.c.project == project)
        if since:
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
            q = q.where(audit_table.c.ts >= since.astimezone(UTC).isoformat(timespec="microseconds"))
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [self._row(r) for r in conn.execute(q)]

    @staticmethod
    def _row(r: Any) -> AuditRecord:
        try:
            details = json.loads(r.details)
        except ValueError:
            details = {"_unparseable": r.details}
        return AuditRecord(
            r.seq, r.ts, r.event, r.actor, r.project, r.outcome, details, r.prev_hash, r.hash
        )

    def _all_rows(self) -> Iterator[Any]:
        with self.engine.connect() as conn:
            # physical order (rowid on SQLite) is how an attacker's edits show up
            order = text("rowid") if self._sqlite else audit_table.c.seq
            yield from conn.execute(select(audit_table).order_by(order))

    # ------------------------------------------------------------ verifying

    def verify(self) -> VerifyResult:
        """Check the chain in the database, then the JSON Lines mirror against it."""
        result = VerifyResult()
        db_records = list(self._all_rows())
        result.problems.extend(verify_chain(self._row(r) for r in db_records))
        result.count = len(db_records)
        if self.jsonl_path and self.jsonl_path.exists():
            result.problems.extend(self._verify_mirror([self._row(r) for r in db_records]))
        return result

    def _verify_mirror(self, db: list[AuditRecord]) -> list[str]:
        problems: list[str] = []
        mirror: list[AuditRecord] = []
        with open(self.jsonl_path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    d = json.loads(line)
                    mirror.append(AuditRecord(**d))
                except (ValueError, TypeError) as e:
                    problems.append(f"mirror {self.jsonl_path} line {lineno}: unreadable ({e})")
        for p in verify_chain(mirror):
            problems.append(f"mirror {self.jsonl_path}: {p}")
        by_seq = {r.seq: r for r in db}
        for m in mirror:
            d = by_seq.get(m.seq)
            if d is None:
                problems.append(f"record {m.seq}: in the mirror but missing from the database")
            elif d.to_dict() != m.to_dict():
                problems.append(f"record {m.seq}: database and mirror differ")
        if len(db) > len(mirror):
            mirrored = {m.seq for m in mirror}
            missing = [r.seq for r in db if r.seq not in mirrored]
            if missing:
                problems.append(f"records {missing[:10]}: in the database but not in the mirror")
        return problems


def verify_chain(records: Iterable[AuditRecord]) -> list[str]:
    """Walk records in stored order; return one message per break found."""
    problems: list[str] = []
    prev_hash = GENESIS
    expected_seq = 1
    for rec in records:
        computed = record_hash(
            rec.seq, rec.ts, rec.event, rec.actor, rec.project, rec.outcome, rec.details,
            rec.prev_hash,
        )
        if computed != rec.hash:
            problems.append(f"record {rec.seq}: edited (its content does not match its hash)")
        if rec.seq != expected_seq:
            if rec.seq > expected_seq:
                gap = (
                    f"{expected_seq}" if rec.seq == expected_seq + 1
                    else f"{expected_seq}-{rec.seq - 1}"
                )
                problems.append(f"record {gap}: deleted (sequence jumps to {rec.seq})")
            else:
                problems.append(
                    f"record {rec.seq}: inserted or reordered (expected sequence {expected_seq})"
                )
        elif rec.prev_hash != prev_hash:
            problems.append(
                f"record {rec.seq}: inserted or reordered (previous-hash link is broken)"
            )
        prev_hash = rec.hash
        expected_seq = rec.seq + 1
    return problems
