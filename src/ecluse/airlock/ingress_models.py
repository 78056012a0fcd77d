"""Database tables of import requests (controlled ingress, issue 24 item 1).

``airlock_imports``: one request to bring files into a project; ``airlock_import_files``:
its files, each with the verdict of the ingress checks (:mod:`ecluse.airlock.ingress`).
Created by the migration ``0009_imports``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .models import Base, utcnow


class ImportRequest(Base):
    __tablename__ = "airlock_imports"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    requester: Mapped[str] = mapped_column(String(128), index=True)
    requester_dn: Mapped[str | None] = mapped_column(String(512), nullable=True)
    requester_uid_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: ``upload`` (through the API or the page) or ``load`` (``ecluse airlock import``)
    source: Mapped[str] = mapped_column(String(16))
    #: a code import may hold executable content (scripts, notebooks, a git bundle)
    code: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    title: Mapped[str] = mapped_column(String(300))
    justification: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32), index=True)
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decision_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)

    files: Mapped[list[ImportFile]] = relationship(
        back_populates="request", order_by="ImportFile.id", cascade="all, delete-orphan")


class ImportFile(Base):
    __tablename__ = "airlock_import_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    import_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("airlock_imports.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    #: the type found by content (``csv``, ``zip``, ``elf`` …)
    kind: Mapped[str] = mapped_column(String(40))
    #: ``accepted`` or ``refused``
    verdict: Mapped[str] = mapped_column(String(16))
    #: JSON list of the reasons of a refusal (empty when accepted)
    reasons: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    request: Mapped[ImportRequest] = relationship(back_populates="files")
