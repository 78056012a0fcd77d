"""Database tables of the airlock (SQLAlchemy 2 ORM).

The schema is created and upgraded by the Alembic migrations in
``ecluse/airlock/migrations`` only (never ``create_all``), so the ORM classes
and the migrations must agree: ``tests/airlock/test_migrations.py``
compares them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite drops the time zone: every stored time is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Request(Base):
    __tablename__ = "airlock_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    requester: Mapped[str] = mapped_column(String(128), index=True)
    #: the requester's directory entry and uidNumber (one person under any name)
    requester_dn: Mapped[str | None] = mapped_column(String(512), nullable=True)
    requester_uid_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    title: Mapped[str] = mapped_column(String(300))
    justification: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: when the staged files of a withdrawn or rejected request were purged
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: the release record (JSON, ``ecluse.airlock.release``), byte for byte as hashed
    #: into the audit log at release
    release_record: Mapped[str | None] = mapped_column(Text, nullable=True)

    files: Mapped[list[File]] = relationship(
        back_populates="request", order_by="File.id", cascade="all, delete-orphan"
    )
    reviews: Mapped[list[Review]] = relationship(
        back_populates="request", order_by="Review.id", cascade="all, delete-orphan"
    )
    history: Mapped[list[HistoryEntry]] = relationship(
        back_populates="request", order_by="HistoryEntry.id", cascade="all, delete-orphan"
    )
    file_decisions: Mapped[list[FileDecision]] = relationship(
        back_populates="request", order_by="FileDecision.id", cascade="all, delete-orphan"
    )

    def current_files(self) -> list[File]:
        return [f for f in self.files if f.version == self.version]

    def current_reviews(self) -> list[Review]:
        return [r for r in self.reviews if r.version == self.version]

    def current_file_decisions(self) -> list[FileDecision]:
        return [d for d in self.file_decisions if d.version == self.version]


class File(Base):
    __tablename__ = "airlock_files"
    __table_args__ = (UniqueConstraint("request_id", "version", "name", name="uq_file_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("airlock_requests.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    verdict: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(32), default="")
    report: Mapped[str] = mapped_column(Text)
    #: the checker's preview, rendered once when the file was checked (JSON)
    preview: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: for a ``fail`` table, the fixed version the check proposed (JSON: method,
    #: notes, verdict of its re-check, text), or why none could be made (``error``)
    proposal: Mapped[str | None] = mapped_column(Text, nullable=True)
    uploaded_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: what the researcher says the output is (required to submit a ``fail``/``review``
    #: file): how it was made, what each number counts
    context: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: the statistical disclosure controls the researcher applied (rounding, suppression…)
    controls: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: a supporting file (e.g. the unrounded counts behind a rounded table): checkers see
    #: it, the checks use it, it is never released
    supporting: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: released: a file of the released version that left (a partial release holds
    #: back the files that lack two approvals; a supporting file never is)
    released: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    request: Mapped[Request] = relationship(back_populates="files")

    def proposal_dict(self) -> dict[str, Any] | None:
        if not self.proposal:
            return None
        try:
            data = json.loads(self.proposal)
        except ValueError:
            return {"error": "unreadable stored proposal"}
        return data if isinstance(data, dict) else None

    def preview_dict(self) -> dict[str, Any]:
        if not self.preview:
            return {"kind": "none"}
        try:
            data = json.loads(self.preview)
        except ValueError:
            return {"kind": "none", "error": "unreadable stored preview"}
        return data if isinstance(data, dict) else {"kind": "none"}

    def report_dict(self) -> dict[str, Any]:
        try:
            return json.loads(self.report)
        except ValueError:
            return {"verdict": "review", "findings": [], "_error": "unreadable stored report"}


class Review(Base):
    __tablename__ = "airlock_reviews"
    __table_args__ = (
        UniqueConstraint("request_id", "version", "reviewer", name="uq_review_once"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("airlock_requests.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    reviewer: Mapped[str] = mapped_column(String(128))
    #: the reviewer's directory entry and uidNumber: two names of one person review once
    reviewer_dn: Mapped[str | None] = mapped_column(String(512), nullable=True)
    reviewer_uid_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decision: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str] = mapped_column(Text, default="")
    overrides: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    request: Mapped[Request] = relationship(back_populates="reviews")

    def overrides_dict(self) -> dict[str, str]:
        try:
            return {str(k): str(v) for k, v in json.loads(self.overrides or "{}").items()}
        except (ValueError, AttributeError):
            return {}


class FileDecision(Base):
    """One checker's decision on one file of one version: ``approve`` or
    ``request_changes`` (with its comment); each person decides a file once."""

    __tablename__ = "airlock_file_decisions"
    __table_args__ = (
        UniqueConstraint("request_id", "version", "file_name", "reviewer",
                         name="uq_file_decision_once"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("airlock_requests.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))
    #: the file's sha256 when decided (a decision is about those bytes)
    sha256: Mapped[str] = mapped_column(String(64))
    reviewer: Mapped[str] = mapped_column(String(128))
    reviewer_dn: Mapped[str | None] = mapped_column(String(512), nullable=True)
    reviewer_uid_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decision: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    request: Mapped[Request] = relationship(back_populates="file_decisions")


class HistoryEntry(Base):
    __tablename__ = "airlock_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("airlock_requests.id", ondelete="CASCADE"), index=True
    )
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")

    request: Mapped[Request] = relationship(back_populates="history")


class LedgerEntry(Base):
    """A count table of a released file, kept to check later requests against it
    (differencing across releases, :mod:`ecluse.airlock.ledger`)."""

    __tablename__ = "airlock_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: the source data it was computed from: ``dataset:<host path>`` (or ``project:<slug>``)
    scope: Mapped[str] = mapped_column(String(600), index=True)
    request_id: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer)
    project: Mapped[str] = mapped_column(String(64))
    file: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    #: the count table (groups, counts), as :class:`ecluse.sdc.differencing.CountTable` JSON
    table: Mapped[str] = mapped_column(Text)
    released_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# the import requests' tables share this metadata (the migrations compare it)
from . import ingress_models  # noqa: E402,F401
