"""Database engine and Alembic migrations of the airlock.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` transactions (one writer at
a time, readers never blocked); PostgreSQL is used as is. :func:`upgrade`
applies the migrations shipped in this package up to ``head``; the service
calls it at start.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ..sqlite import sqlite_pragmas

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "airlock_alembic_version"


def make_engine(url: str, *, pool_size: int = 8, readonly: bool = False) -> Engine:
    """An engine for ``url``; SQLite files get WAL and immediate write locks.

    ``readonly`` (SQLite): transactions start deferred, so reads never wait for
    the write lock; use it only for sessions that do not write.
    """
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        sqlite_pragmas(engine, "journal_mode=WAL", "busy_timeout=30000", "synchronous=NORMAL",
                       "foreign_keys=ON", begin="BEGIN" if readonly else "BEGIN IMMEDIATE")
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def head_revision() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
