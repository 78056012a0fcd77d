"""The directory entry (DN) and uidNumber of each requester and reviewer.

Reviews are told apart by person, not by name (issue 14, item 5). Existing rows
get their values from ``ecluse migrate identities``.

Revision ID: 0003_reviewer_identity
Revises: 0002_previews_purge
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_reviewer_identity"
down_revision = "0002_previews_purge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("airlock_requests") as batch:
        batch.add_column(sa.Column("requester_dn", sa.String(512), nullable=True))
        batch.add_column(sa.Column("requester_uid_number", sa.Integer(), nullable=True))
    with op.batch_alter_table("airlock_reviews") as batch:
        batch.add_column(sa.Column("reviewer_dn", sa.String(512), nullable=True))
        batch.add_column(sa.Column("reviewer_uid_number", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("airlock_reviews") as batch:
        batch.drop_column("reviewer_uid_number")
        batch.drop_column("reviewer_dn")
    with op.batch_alter_table("airlock_requests") as batch:
        batch.drop_column("requester_uid_number")
        batch.drop_column("requester_dn")
