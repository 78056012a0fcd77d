"""Runs as data: statuses, allowed transitions, audit events, and the queue table.

Rules are tables (the airlock's pattern); ``tests/batch/test_runs_rules.py`` checks
they are complete. The queue is one SQL table (SQLite in WAL mode by default,
any SQLAlchemy URL otherwise); the service is its only writer.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, create_engine
from sqlalchemy.engine import Engine

from ..auditevents import AuditEvent
from ..sqlite import sqlite_pragmas


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed-out"


FINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT})

#: status -> statuses it may move to
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED, Status.FAILED}),
    Status.RUNNING: frozenset(
        {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT}
    ),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.TIMED_OUT: frozenset(),
}

#: what happened -> audit event name
EVENTS: dict[str, str] = {
    "submit": AuditEvent.BATCH_SUBMIT,
    "start": AuditEvent.BATCH_START,
    "finish": AuditEvent.BATCH_FINISH,
    "cancel": AuditEvent.BATCH_CANCEL,
    "export": AuditEvent.BATCH_EXPORT,
    "share": AuditEvent.BATCH_SHARE,
    "read": AuditEvent.BATCH_READ,
    "denied": AuditEvent.BATCH_DENIED,
}

#: final status -> audit outcome of batch.finish
OUTCOMES: dict[Status, str] = {
    Status.SUCCEEDED: "success",
    Status.FAILED: "failure",
    Status.CANCELLED: "cancelled",
    Status.TIMED_OUT: "timeout",
}

#: the run's inputs: written by the service into the run record store
#: (``<state_dir>/batch-records/<run-id>/input/``, root-owned), mounted read-only
#: at INPUT_MOUNT in the sandbox; never in the project folder
INPUT_NOTEBOOK = "input.ipynb"
PARAMETERS = "parameters.json"
INPUT_DIR = "input"
INPUT_MOUNT = "/batch-input"
#: what the record store keeps after the run (root only): the executed notebook
#: and what the sandbox printed outside the project log (the driver's own errors)
SANDBOX_LOG = "sandbox.log"
#: files the driver writes in /project/batch/<run-id>/ (not outputs of the notebook)
OUTPUT_NOTEBOOK = "output.ipynb"
LOG = "log.txt"
PROGRESS = "progress.json"
RESULT = "result.json"
BOOKKEEPING = frozenset({INPUT_NOTEBOOK, PARAMETERS, LOG, PROGRESS, RESULT})

metadata = MetaData()
runs_table = Table(
    "batch_runs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(40), unique=True, nullable=False),
    Column("project", String(64), nullable=False, index=True),
    Column("notebook", String(255), nullable=False),
    Column("notebook_sha256", String(64), nullable=False),
    Column("parameters", Text, nullable=False),
    Column("submitted_by", String(128), nullable=False),
    Column("run_as", String(128), nullable=False),
    Column("status", String(20), nullable=False, index=True),
    Column("timeout", Float, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("started_at", String(40)),
    Column("finished_at", String(40)),
    Column("cells_done", Integer, nullable=False, default=0),
    Column("cells_total", Integer, nullable=False, default=0),
    Column("exit_code", Integer),
    Column("failed_cell", Integer),
    Column("error", Text),
    Column("sandbox_id", String(40)),
    Column("cancelled_by", String(128)),
    Column("output_sha256", String(64)),
    Column("shared_by", String(128)),
    Column("shared_at", String(40)),
)

#: columns added after the first release: added to an existing table at start
_ADDED_COLUMNS = ("output_sha256", "shared_by", "shared_at")


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def make_engine(url: str) -> Engine:
    """An engine with the schema created (SQLite: WAL, foreign keys, busy timeout)."""
    engine = create_engine(url, future=True)
    if url.startswith("sqlite"):
        sqlite_pragmas(engine, "journal_mode=WAL", "busy_timeout=10000")
    metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """Queues created by an earlier version lack the newer (nullable) columns."""
    from sqlalchemy import inspect, text

    present = {c["name"] for c in inspect(engine).get_columns(runs_table.name)}
    with engine.begin() as c:
        for name in _ADDED_COLUMNS:
            if name not in present:
                col = runs_table.c[name]
                c.execute(text(f"ALTER TABLE {runs_table.name} ADD COLUMN {name} "
                               f"{col.type.compile(engine.dialect)}"))


def run_dict(row: Any) -> dict[str, Any]:
    """A run as the API shows it."""
    m = dict(row._mapping)
    m.pop("seq", None)
    m["parameters"] = json.loads(m["parameters"])
    done, total = m.pop("cells_done") or 0, m.pop("cells_total") or 0
    m["progress"] = {
        "cells_done": done,
        "cells_total": total,
        "fraction": round(done / total, 4) if total else 0.0,
    }
    m["output_dir"] = f"/project/batch/{m['id']}"
    m["shared"] = m.get("shared_by") is not None
    m["final"] = Status(m["status"]) in FINAL
    return m
