"""SQLite as Écluse's stores use it (the audit log, the airlock, the batch queue).

:func:`sqlite_pragmas` runs ``PRAGMA`` statements (WAL, busy timeout...) on
every new connection of an engine. With ``begin`` it also turns the driver's
own transaction handling off and starts each transaction with that statement:
``BEGIN IMMEDIATE`` takes the write lock first, so writers queue on the busy
timeout instead of failing to upgrade a read lock.

Writers of one process queue on a lock of the database file first
(:func:`writer_lock`), then take SQLite's: SQLite's own busy handler polls
with sleeps of up to 100 ms, so threads of one service that waited on it
answered up to a tenth of a second after the lock was free (issue 21 item 1:
the airlock's p99). Between processes SQLite's lock and busy timeout decide,
as before; a writer that waited ``busy_timeout`` for the process's lock goes
on to SQLite's (which then says ``database is locked`` if it must): never a
wait without end, never a transaction without SQLite's own lock.

Switching a database to WAL (``PRAGMA journal_mode=WAL``) needs SQLite's
exclusive lock, and SQLite asks for it once, without its busy handler: a
connection opened while another process or thread of a fresh deployment holds
the database said ``database is locked`` at once (the hub and its services
starting together, seen in CI). :func:`run_pragma` retries that statement for
as long as the busy timeout allows.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def writer_lock(engine: Engine) -> threading.Lock:
    """The lock the writers of ``engine``'s database file queue on in this process
    (one per file: two engines of one file share it)."""
    key = engine.url.database or ""
    if key in ("", ":memory:"):
        key = f"{key}#{id(engine)}"
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _busy_seconds(pragmas: tuple[str, ...]) -> float:
    for p in pragmas:
        name, _, value = p.partition("=")
        if name.strip().lower() == "busy_timeout" and value.strip().isdigit():
            return int(value) / 1000
    return 5.0


def _locked(err: BaseException) -> bool:
    text = str(err).lower()
    return "locked" in text or "busy" in text


def run_pragma(dbapi_conn: Any, pragma: str, patience: float = 5.0) -> None:
    """``PRAGMA <pragma>`` on a DB-API connection, retried while the database is locked
    for up to ``patience`` seconds (SQLite's busy handler does not cover every lock a
    pragma takes: a journal-mode switch asks once)."""
    deadline = time.monotonic() + patience
    pause = 0.002
    while True:
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA {pragma}")
            cur.fetchall()
            return
        except sqlite3.OperationalError as e:
            if not _locked(e) or time.monotonic() + pause > deadline:
                raise
        finally:
            cur.close()
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _ordered(pragmas: tuple[str, ...]) -> list[str]:
    """busy_timeout first: the statements after it wait on locks instead of failing."""
    return sorted(pragmas, key=lambda p: p.partition("=")[0].strip().lower() != "busy_timeout")


def sqlite_pragmas(engine: Engine, *pragmas: str, begin: str | None = None) -> None:
    """Run ``PRAGMA <pragma>`` on each new connection; with ``begin``, issue it per transaction
    (writers of this process first queue on :func:`writer_lock`)."""

    patience = _busy_seconds(pragmas)
    ordered = _ordered(pragmas)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if begin is not None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        for pragma in ordered:
            run_pragma(dbapi_conn, pragma, patience)

    if begin is None:
        return
    writes = begin.upper().split()[1:2] in (["IMMEDIATE"], ["EXCLUSIVE"])
    lock = writer_lock(engine) if writes else None

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        held = lock is not None and lock.acquire(timeout=patience)
        try:
            conn.exec_driver_sql(begin)
        except BaseException:
            if held:
                lock.release()
            raise
        conn.info["ecluse_writer_lock"] = held

    if lock is None:
        return

    def _end(conn: Any) -> None:
        if conn.info.pop("ecluse_writer_lock", False):
            lock.release()

    event.listen(engine, "commit", _end)
    event.listen(engine, "rollback", _end)
