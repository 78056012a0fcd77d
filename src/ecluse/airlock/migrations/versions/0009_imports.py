"""Import requests (controlled ingress, issue 24 item 1).

``airlock_imports`` and ``airlock_import_files`` (:mod:`ecluse.airlock.ingress_models`).

Revision ID: 0009_imports
Revises: 0008_file_decisions (to be re-chained on 0009 when it merges)
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_imports"
down_revision = "0008_file_decisions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "airlock_imports",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("requester", sa.String(128), nullable=False),
        sa.Column("requester_dn", sa.String(512), nullable=True),
        sa.Column("requester_uid_number", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("code", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("decision_comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_airlock_imports_project", "airlock_imports", ["project"])
    op.create_index("ix_airlock_imports_requester", "airlock_imports", ["requester"])
    op.create_index("ix_airlock_imports_state", "airlock_imports", ["state"])
    op.create_table(
        "airlock_import_files",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("import_id", sa.String(32),
                  sa.ForeignKey("airlock_imports.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_airlock_import_files_import_id", "airlock_import_files",
                    ["import_id"])


def downgrade() -> None:
    op.drop_index("ix_airlock_import_files_import_id", "airlock_import_files")
    op.drop_table("airlock_import_files")
    for col in ("state", "requester", "project"):
        op.drop_index(f"ix_airlock_imports_{col}", "airlock_imports")
    op.drop_table("airlock_imports")
