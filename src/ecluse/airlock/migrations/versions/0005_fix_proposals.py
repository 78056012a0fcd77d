"""The airlock's proposal of a fixed version of a ``fail`` table (issue 20 item 4).

Revision ID: 0005_fix_proposals
Revises: 0004_release_ledger
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_fix_proposals"
down_revision = "0004_release_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("airlock_files") as batch:
        batch.add_column(sa.Column("proposal", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("airlock_files") as batch:
        batch.drop_column("proposal")
