"""Per-file context, statistical controls and supporting files (issue 21 item 3).

Revision ID: 0007_file_context
Revises: 0006_release_record
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_file_context"
down_revision = "0006_release_record"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("airlock_files") as batch:
        batch.add_column(sa.Column("context", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("controls", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("supporting", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("airlock_files") as batch:
        batch.drop_column("supporting")
        batch.drop_column("controls")
        batch.drop_column("context")
