"""SQLite as Écluse's stores use it (the audit log, the airlock, the batch queue).

:func:`sqlite_pragmas` runs ``PRAGMA`` statements (WAL, busy timeout...) on
every new connection of an engine. With ``begin`` it also turns the driver's
own transaction handling off and starts each transaction with that statement:
``BEGIN IMMEDIATE`` takes the write lock first, so writers queue on the busy
timeout instead of failing to upgrade a read lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


def sqlite_pragmas(engine: Engine, *pragmas: str, begin: str | None = None) -> None:
    """Run ``PRAGMA <pragma>`` on each new connection; with ``begin``, issue it per transaction."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - trivial
        if begin is not None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        for pragma in pragmas:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    if begin is not None:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:  # pragma: no cover - trivial
            conn.exec_driver_sql(begin)
