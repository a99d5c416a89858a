"""consent changes, announced to every process on SQLite

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

SQLite has no LISTEN/NOTIFY: a consent change or an erasure committed by another process
(`pixelgate jobs run`, a second CLI) is written here in its own transaction, and each
server's writer reads the rows after the last one it saw before deciding a batch.
"""

import sqlalchemy as sa
from alembic import op

from app.base.db import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consent_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_changes")),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("consent_changes")
