"""event ids of server-side events, to count a repeated one once

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from app.base.db import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_ids",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("site", "id_hash", name=op.f("pk_event_ids")),
    )
    op.create_index("ix_event_ids_seen_at", "event_ids", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_event_ids_seen_at", table_name="event_ids")
    op.drop_table("event_ids")
