"""ecluse.sqlite: writers of one process queue on the file's lock, then on SQLite's."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from ecluse.sqlite import run_pragma, sqlite_pragmas, writer_lock


def _engine(path: Path, busy_ms: int = 10000):
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
    sqlite_pragmas(engine, f"busy_timeout={busy_ms}", "journal_mode=WAL",
                   begin="BEGIN IMMEDIATE")
    return engine


def test_concurrent_writers_of_one_process_all_commit(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "db.sqlite")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for i in range(20):
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": k * 100 + i})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 160
    assert not writer_lock(engine).locked()
    engine.dispose()


def test_a_failed_transaction_frees_the_lock(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "db.sqlite")
    with pytest.raises(OperationalError), engine.begin() as conn:
        conn.execute(text("INSERT INTO missing VALUES (1)"))
    assert not writer_lock(engine).locked()
    with engine.begin() as conn:  # the next writer is not held up
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    engine.dispose()


def test_engines_of_one_file_share_the_lock(tmp_path: Path) -> None:
    a, b = _engine(tmp_path / "db.sqlite"), _engine(tmp_path / "db.sqlite")
    assert writer_lock(a) is writer_lock(b)
    assert writer_lock(a) is not writer_lock(_engine(tmp_path / "other.sqlite"))
    a.dispose()
    b.dispose()


def test_a_nested_writer_is_refused_by_sqlite_not_held_forever(tmp_path: Path) -> None:
    """A thread that opens a second write transaction while it holds one waits the busy
    timeout on the process's lock, then SQLite refuses it (as without the lock)."""
    engine = _engine(tmp_path / "db.sqlite", busy_ms=200)
    with engine.begin() as outer:
        outer.execute(text("CREATE TABLE t (n INTEGER)"))
        with pytest.raises(OperationalError, match="locked"), engine.begin() as inner:
            inner.execute(text("INSERT INTO t VALUES (1)"))
    assert not writer_lock(engine).locked()
    engine.dispose()


def test_readers_do_not_take_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    writer = _engine(path)
    reader = create_engine(f"sqlite:///{path}")
    sqlite_pragmas(reader, "busy_timeout=1000", begin="BEGIN")
    with writer.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    lock = writer_lock(writer)
    with lock:  # a writer of this process is busy: a reader still reads
        with reader.begin() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
    writer.dispose()
    reader.dispose()


def _held_fresh_database(path: Path) -> sqlite3.Connection:
    """A database in rollback-journal mode (as first created) with a writer inside a
    transaction: what a service starting beside another one meets."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (n INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    return holder


def test_the_wal_switch_waits_for_a_writer_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    holder = _held_fresh_database(path)
    late = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
    # SQLite asks for the switch's lock once, busy timeout or not
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        late.execute("PRAGMA journal_mode=WAL")
    release = threading.Timer(0.3, holder.execute, args=("COMMIT",))
    release.start()
    started = time.monotonic()
    run_pragma(late, "journal_mode=WAL", 5)
    release.join()
    assert time.monotonic() - started >= 0.25  # it waited for the commit
    assert late.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert late.execute("SELECT n FROM t").fetchall() == [(1,)]  # the writer's row kept
    late.close()
    holder.close()


def test_the_wal_switch_gives_up_after_its_patience(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    holder = _held_fresh_database(path)
    late = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        run_pragma(late, "journal_mode=WAL", 0.2)
    assert time.monotonic() - started < 2  # never a wait without end
    late.close()
    holder.execute("ROLLBACK")
    holder.close()


def test_an_engine_opened_beside_a_writer_of_a_fresh_database_connects(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    holder = _held_fresh_database(path)
    threading.Timer(0.2, holder.execute, args=("COMMIT",)).start()
    engine = _engine(path)  # busy_timeout and the WAL switch on connect
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1
    engine.dispose()
    holder.close()
