"""The release record kept with a released request (issue 21 item 2).

Revision ID: 0006_release_record
Revises: 0005_fix_proposals
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_release_record"
down_revision = "0005_fix_proposals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("airlock_requests") as batch:
        batch.add_column(sa.Column("release_record", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("airlock_requests") as batch:
        batch.drop_column("release_record")
