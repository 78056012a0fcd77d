"""The ledger of released count tables (differencing across releases, issue 20 item 2).

Revision ID: 0004_release_ledger
Revises: 0003_reviewer_identity
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_release_ledger"
down_revision = "0003_reviewer_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "airlock_ledger",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(600), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("file", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("table", sa.Text(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_airlock_ledger_scope", "airlock_ledger", ["scope"])
    op.create_index("ix_airlock_ledger_request_id", "airlock_ledger", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_airlock_ledger_request_id", "airlock_ledger")
    op.drop_index("ix_airlock_ledger_scope", "airlock_ledger")
    op.drop_table("airlock_ledger")
