"""Per-file decisions of the output checkers and partial release (issue 21 item 4).

``airlock_file_decisions``: each checker's ``approve`` / ``request_changes`` of one
file of one version; ``airlock_files.released``: which files of a released request
left (a partial release holds some back). Files of requests released before this
revision were all released: they are marked so (never a supporting file,
``0007_file_context``: those never leave).

Revision ID: 0008_file_decisions
Revises: 0007_file_context
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_file_decisions"
down_revision = "0007_file_context"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "airlock_file_decisions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(32),
                  sa.ForeignKey("airlock_requests.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("reviewer_dn", sa.String(512), nullable=True),
        sa.Column("reviewer_uid_number", sa.Integer(), nullable=True),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "version", "file_name", "reviewer",
                            name="uq_file_decision_once"),
    )
    op.create_index("ix_airlock_file_decisions_request_id", "airlock_file_decisions",
                    ["request_id"])
    with op.batch_alter_table("airlock_files") as batch:
        batch.add_column(sa.Column("released", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    # every file of the released version of a request released before per-file decisions
    # (supporting files excepted: they never left)
    op.execute(
        "UPDATE airlock_files SET released = TRUE WHERE EXISTS ("
        "SELECT 1 FROM airlock_requests r WHERE r.id = airlock_files.request_id "
        "AND r.state = 'released' AND r.version = airlock_files.version) "
        "AND NOT airlock_files.supporting"
    )


def downgrade() -> None:
    with op.batch_alter_table("airlock_files") as batch:
        batch.drop_column("released")
    op.drop_index("ix_airlock_file_decisions_request_id", "airlock_file_decisions")
    op.drop_table("airlock_file_decisions")
