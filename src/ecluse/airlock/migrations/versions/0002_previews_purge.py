"""Stored previews of checked files; purge time of withdrawn/rejected requests.

Revision ID: 0002_previews_purge
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_previews_purge"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("airlock_files") as batch:
        batch.add_column(sa.Column("preview", sa.Text(), nullable=True))
    with op.batch_alter_table("airlock_requests") as batch:
        batch.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("airlock_requests") as batch:
        batch.drop_column("purged_at")
    with op.batch_alter_table("airlock_files") as batch:
        batch.drop_column("preview")
