"""Append-only, keyed, checkpointed audit log.

Every component (hub authenticator, spawner, airlock, batch) records what it
did here. Each record carries the hash of the previous record; the hash is an
HMAC-SHA256 under a key kept outside the state directory, so an edited,
deleted, inserted or reordered record breaks the chain — and recomputing the
hashes needs the key. After each record the writer signs a checkpoint
(Ed25519: log id, count, head hash, time) into a second sink outside the
state directory (:mod:`ecluse.auditkeys`), which catches dropped last records.
:meth:`AuditLog.verify` says what broke where. Records live in a database
table (SQLite in WAL mode by default, PostgreSQL supported) and are mirrored,
one JSON object per line, to a JSON Lines file that can be shipped to a SIEM.

Logs of earlier versions (plain sha256 chain) are keyed at the first start
with a key: an ``audit.keyed`` record, itself HMAC-chained, carries the head
of the legacy chain, and a checkpoint pins it. Records before the marker
verify as legacy (sha256), records from the marker on as HMAC. The legacy
records are not re-hashed: that would give an HMAC to whatever an attacker
might have changed before the upgrade, and would break the hashes already
shipped to a SIEM.

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
import secrets
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

from .auditevents import AuditEvent, is_event
from .auditkeys import (
    AuditKeyError,
    AuditKeys,
    AuditSettings,
    Checkpoint,
    CheckpointSink,
    FileCheckpointSink,
    SyslogCheckpointSink,
    default_checkpoint_file,
    default_key_dir,
    ensure_keys,
    load_keys,
    open_append,
    read_checkpoints,
)
from .sqlite import sqlite_pragmas

log = logging.getLogger(__name__)

GENESIS = "0" * 64
#: the record that starts the HMAC chain (first start with an audit key)
KEYED_EVENT = AuditEvent.AUDIT_KEYED
#: "this name is that person" (``ecluse migrate identities``): records are never
#: rewritten, queries by actor follow these
ALIAS_EVENT = AuditEvent.IDENTITY_ALIAS_MIGRATED

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

#: the statements every record runs, built once: each writer of the platform holds its
#: write lock while it records (issue 21 item 1: the airlock's throughput)
_HEAD = (select(audit_table.c.seq, audit_table.c.hash)
         .order_by(audit_table.c.seq.desc()).limit(1))
_INSERT = audit_table.insert()


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


def _payload(
    seq: int,
    ts: str,
    event: str,
    actor: str | None,
    project: str | None,
    outcome: str,
    details: dict[str, Any],
    prev_hash: str,
) -> bytes:
    return json.dumps(
        [seq, ts, event, actor, project, outcome, details, prev_hash],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    ).encode()


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
    """sha256 over the canonical JSON of a record's fields (the legacy, unkeyed chain)."""
    return hashlib.sha256(
        _payload(seq, ts, event, actor, project, outcome, details, prev_hash)
    ).hexdigest()


def record_mac(keys: AuditKeys, rec: AuditRecord) -> str:
    """HMAC-SHA256 under the audit key over the same canonical JSON."""
    return keys.mac(_payload(rec.seq, rec.ts, rec.event, rec.actor, rec.project, rec.outcome,
                             rec.details, rec.prev_hash))


def _legacy_hash(rec: AuditRecord) -> str:
    return record_hash(rec.seq, rec.ts, rec.event, rec.actor, rec.project, rec.outcome,
                       rec.details, rec.prev_hash)


class AuditError(RuntimeError):
    """The audit log cannot be written as configured (fail closed)."""


@dataclass
class VerifyResult:
    count: int = 0
    problems: list[str] = field(default_factory=list)
    #: facts an auditor wants next to "OK": where the keyed chain starts, the last checkpoint
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    """The audit log of one deployment.

    ``database_url`` is a SQLAlchemy URL; ``jsonl_path`` the mirror file (None:
    no mirror). Creating an ``AuditLog`` creates the table when missing.

    ``keys`` (:class:`~ecluse.auditkeys.AuditKeys`) make it keyed: records are
    HMAC-chained and, with a ``sink``, each ``checkpoint_every``-th record is
    followed by a signed checkpoint. A writer (keys with a signing key, and a
    sink) keys an unkeyed log when it opens it (the ``audit.keyed`` record).
    Without keys (unit tests, tools) the log is the plain sha256 chain of
    earlier versions, and writing into a log that is already keyed is refused.
    ``checkpoint_path`` and ``public_key`` say where :meth:`verify` reads
    checkpoints.
    """

    def __init__(
        self,
        database_url: str,
        jsonl_path: str | os.PathLike | None = None,
        *,
        keys: AuditKeys | None = None,
        sink: CheckpointSink | None = None,
        checkpoint_every: int = 1,
        checkpoint_path: str | os.PathLike | None = None,
    ):
        self.database_url = database_url
        self.jsonl_path = Path(jsonl_path) if jsonl_path else None
        self.keys = keys
        self.sink = sink
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.engine = create_engine(database_url, future=True)
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self._sqlite:
            # the WAL switch is retried while a writer starting alongside holds the file
            sqlite_pragmas(self.engine, "busy_timeout=10000", "journal_mode=WAL",
                           "synchronous=NORMAL", begin="BEGIN IMMEDIATE")
        metadata.create_all(self.engine)
        #: (seq of the audit.keyed record, log id) once known
        self._keyed: tuple[int, str] | None = None
        if keys is not None:
            self._open_keyed()

    @classmethod
    def from_settings(cls, settings: Any, *, writer: bool = True) -> AuditLog:
        """The deployment's log. A ``writer`` creates missing keys (first start) and
        keys an unkeyed log; a reader (``writer=False``: ``ecluse audit``) only
        loads the keys, never creates them."""
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = audit_settings(settings)
        key_dir = conf.key_dir or default_key_dir(settings.state_dir)
        checkpoint_file = conf.checkpoint_file or default_checkpoint_file(settings.state_dir)
        if writer:
            keys = ensure_keys(key_dir)
            sink: CheckpointSink
            if conf.checkpoint_sink == "syslog":
                sink = SyslogCheckpointSink(conf.syslog_address, conf.syslog_facility)
            else:
                sink = FileCheckpointSink(checkpoint_file)
        else:
            keys = load_keys(key_dir, signing=False) if (key_dir / "audit-hmac.key").exists() \
                else None
            sink = None
        return cls(settings.audit_db_url, settings.audit_jsonl_path, keys=keys, sink=sink,
                   checkpoint_every=conf.checkpoint_every,
                   checkpoint_path=checkpoint_file if conf.checkpoint_sink == "file" else None)

    # ------------------------------------------------------------ keying

    def _marker(self, conn: Any) -> Any:
        return conn.execute(
            select(audit_table).where(audit_table.c.event == KEYED_EVENT)
            .order_by(audit_table.c.seq).limit(1)
        ).first()

    def _open_keyed(self) -> None:
        """Find the log's audit.keyed record (checking it is ours), or write it."""
        assert self.keys is not None
        with self.engine.connect() as conn:
            row = self._marker(conn)
        if row is None and (self.sink is None or self.keys.signing_key is None):
            return  # a reader of a log not keyed yet: verify() says so
        if row is None:
            with self.engine.begin() as conn:
                self._lock(conn)
                row = self._marker(conn)
                if row is None:
                    head = self._head(conn)
                    rec = self._append(
                        conn, KEYED_EVENT, actor=None, project=None, outcome="success",
                        details={
                            "log": secrets.token_hex(8),
                            "key_id": self.keys.key_id,
                            "legacy_records": head.seq if head else 0,
                            "legacy_head": head.hash if head else GENESIS,
                        },
                        legacy=head.seq if head else 0, force_checkpoint=True,
                    )
                    self._keyed = (rec.seq, rec.details["log"])
                    return
        marker = self._row(row)
        if marker.details.get("key_id") != self.keys.key_id:
            raise AuditKeyError(
                f"the audit key in {self.keys.key_dir} is not the key this log was keyed with "
                f"(record {marker.seq} names key id {marker.details.get('key_id')}, this key is "
                f"{self.keys.key_id}): restore the log's key from backup"
            )
        if record_mac(self.keys, marker) != marker.hash:
            # tampered with: keep recording (evidence), verify() reports it
            log.error("audit record %s (%s) does not match its HMAC: the log was tampered "
                      "with; run `ecluse audit verify`", marker.seq, KEYED_EVENT)
        self._keyed = (marker.seq, str(marker.details.get("log")))

    # ------------------------------------------------------------ writing

    def _lock(self, conn: Any) -> None:
        if self.engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(4242424242)"))

    @staticmethod
    def _head(conn: Any) -> Any:
        return conn.execute(_HEAD).first()

    def record(
        self,
        event: AuditEvent | str,
        *,
        actor: str | None,
        project: str | None = None,
        outcome: str = "success",
        **details: Any,
    ) -> AuditRecord:
        """Append one event and return it. Never silently drops: errors propagate,
        and a checkpoint that cannot be delivered rolls the record back.

        ``event`` is a member of :class:`~ecluse.auditevents.AuditEvent` (or its value);
        any other name is refused with ValueError, nothing written."""
        if not is_event(event):
            raise ValueError(
                f"{event!r} is not an audit event: add it to ecluse.auditevents.AuditEvent "
                "and regenerate docs/reference/audit-events.md")
        event = AuditEvent(event).value
        details = json.loads(json.dumps(details, default=str))
        if self.keys is not None and self._keyed is None:
            raise AuditError("this audit log is not keyed: open it as a writer "
                             "(AuditLog.from_settings) to key it")
        with self.engine.begin() as conn:
            self._lock(conn)
            if self.keys is None and self._marker(conn) is not None:
                raise AuditError(
                    f"the audit log {self.database_url} is keyed: writing needs its key "
                    "(open it with AuditLog.from_settings)")
            return self._append(conn, event, actor=actor, project=project, outcome=outcome,
                                details=details)

    def _append(self, conn: Any, event: str, *, actor: str | None, project: str | None,
                outcome: str, details: dict[str, Any], legacy: int | None = None,
                force_checkpoint: bool = False) -> AuditRecord:
        """Insert the next record inside the caller's locked transaction."""
        head = self._head(conn)
        seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
        ts = datetime.now(UTC).isoformat(timespec="microseconds")
        rec = AuditRecord(seq, ts, event, actor, project, outcome, details, prev, "")
        if self.keys is None:
            digest = _legacy_hash(rec)
        else:
            digest = record_mac(self.keys, rec)
        rec = AuditRecord(seq, ts, event, actor, project, outcome, details, prev, digest)
        conn.execute(_INSERT, {
            "seq": seq, "ts": ts, "event": event, "actor": actor, "project": project,
            "outcome": outcome, "details": json.dumps(details, sort_keys=True, ensure_ascii=False),
            "prev_hash": prev, "hash": digest,
        })
        # mirror and checkpoint inside the transaction: their order follows the
        # chain, and a failed checkpoint rolls the record back (fail closed)
        self._mirror(rec)
        if self.keys is not None:
            if self.sink is None or self.keys.signing_key is None:
                raise AuditError("a keyed audit log needs a checkpoint sink and the "
                                 "signing key to write")
            if force_checkpoint or seq % self.checkpoint_every == 0:
                if legacy is None:
                    assert self._keyed is not None
                    legacy, log_id = self._keyed[0] - 1, self._keyed[1]
                else:
                    log_id = details["log"]
                cp = Checkpoint(log=log_id, count=seq, head=digest, legacy=legacy, ts=ts)
                self.sink.write(cp.signed_line(self.keys.signing_key))
        return rec

    def _mirror(self, rec: AuditRecord) -> None:
        if not self.jsonl_path:
            return
        fd = open_append(self.jsonl_path)
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
        aliases: bool = True,
    ) -> list[AuditRecord]:
        """Records in chain order; ``user``: by that person under any of their names
        (``aliases``, from the ``identity.alias_migrated`` records), or by that name only."""
        q = select(audit_table).order_by(audit_table.c.seq)
        if user:
            names = self.names_of(user) if aliases else {user}
            q = q.where(audit_table.c.actor.in_(sorted(names)))
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

    def names_of(self, name: str) -> set[str]:
        """``name`` and every name recorded as the same person by
        ``identity.alias_migrated`` records (followed transitively)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(audit_table.c.details)
                                .where(audit_table.c.event == ALIAS_EVENT)).scalars().all()
        links: dict[str, set[str]] = {}
        for raw in rows:
            try:
                d = json.loads(raw)
                a, c = str(d["alias"]), str(d["canonical"])
            except (ValueError, KeyError, TypeError):
                continue
            links.setdefault(a, set()).add(c)
            links.setdefault(c, set()).add(a)
        seen, todo = {name}, [name]
        while todo:
            for other in links.get(todo.pop(), ()):
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen

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

    def verify(
        self,
        *,
        checkpoints: str | os.PathLike | None = None,
        public_key: Any = None,
    ) -> VerifyResult:
        """Check the chain in the database, the JSON Lines mirror against it and,
        for a keyed log, the records against the signed checkpoints (read from
        ``checkpoints``, default :attr:`checkpoint_path`, with ``public_key``,
        default the deployment's)."""
        result = VerifyResult()
        db = [self._row(r) for r in self._all_rows()]
        result.count = len(db)
        result.problems.extend(verify_chain(db, self.keys))
        if self.jsonl_path and self.jsonl_path.exists():
            result.problems.extend(self._verify_mirror(db))
        if self.keys is None:
            return result
        marker = next((r for r in db if r.event == KEYED_EVENT), None)
        if marker is None:
            result.problems.append(
                f"no {KEYED_EVENT} record: the log was never keyed, or its keyed part was "
                "removed")
            return result
        legacy = marker.seq - 1
        result.notes.append(
            f"records 1-{legacy} are the legacy sha256 chain, HMAC-chained from record "
            f"{marker.seq} on" if legacy else f"HMAC-chained from record {marker.seq}")
        source = Path(checkpoints) if checkpoints else self.checkpoint_path
        if source is None:
            result.problems.append(
                "checkpoints go to syslog: name the file holding them (--checkpoints FILE)")
            return result
        public_key = public_key or self.keys.public_key
        read = read_checkpoints(source, public_key)
        result.problems.extend(read.problems)
        result.problems.extend(
            verify_against_checkpoints(db, read.checkpoints, marker, str(source), result.notes))
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
        for p in verify_chain(mirror, self.keys):
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


def audit_settings(settings: Any) -> AuditSettings:
    """The ``audit:`` section (defaults when a settings object has none)."""
    return getattr(settings, "audit", None) or AuditSettings()


def verify_chain(records: Iterable[AuditRecord], keys: AuditKeys | None = None) -> list[str]:
    """Walk records in stored order; return one message per break found.

    With ``keys``, records from the first ``audit.keyed`` record on must carry
    an HMAC under the key; records before it the legacy sha256.
    """
    problems: list[str] = []
    prev_hash = GENESIS
    expected_seq = 1
    keyed = False
    for rec in records:
        if keys is not None and rec.event == KEYED_EVENT:
            keyed = True
        computed = record_mac(keys, rec) if keyed else _legacy_hash(rec)
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


def _ranges(numbers: list[int]) -> str:
    out: list[str] = []
    for n in sorted(numbers):
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def verify_against_checkpoints(
    db: list[AuditRecord], checkpoints: list[Checkpoint], marker: AuditRecord, source: str,
    notes: list[str] | None = None,
) -> list[str]:
    """Compare the stored records with the signed checkpoints of their log."""
    problems: list[str] = []
    log_id = str(marker.details.get("log"))
    mine = [cp for cp in checkpoints if cp.log == log_id]
    if not mine:
        return [f"no signed checkpoint of this log (id {log_id}) in {source}: the records "
                "cannot be vouched for"]
    legacy = marker.seq - 1
    for value in sorted({cp.legacy for cp in mine}):
        if value != legacy:
            problems.append(
                f"checkpoints in {source} say the log was keyed after {value} legacy record(s), "
                f"the log says {legacy} (its keyed-chain marker was moved)")
    by_seq: dict[int, AuditRecord] = {}
    for r in db:
        by_seq.setdefault(r.seq, r)
    last = max(mine, key=lambda cp: cp.count)
    top = max(by_seq, default=0)
    if last.count > top:
        problems.append(
            f"records {_ranges(list(range(top + 1, last.count + 1)))} are missing: the "
            f"checkpoint of {last.ts} vouches for {last.count} records, the log ends at "
            f"{top} (truncated)")
    differ = sorted({cp.count for cp in mine
                     if cp.count in by_seq and by_seq[cp.count].hash != cp.head})
    if differ:
        problems.append(
            f"records {_ranges(differ)}: hash differs from their signed checkpoint (rewritten, "
            "or records before them deleted, inserted or reordered)")
    if notes is not None:
        notes.append(f"last checkpoint: record {last.count} at {last.ts} ({len(mine)} "
                     f"checkpoint(s) in {source})")
        if top > last.count:
            notes.append(f"records {last.count + 1}-{top} were written after the last "
                         "checkpoint found (HMAC-chained, not yet vouched for by a checkpoint)")
    return problems
