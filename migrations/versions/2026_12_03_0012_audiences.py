"""retargeting audiences: a site's named rules over its recent hits

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

Members are not stored: they are found from the events and the consent state when asked.
"""

import sqlalchemy as sa
from alembic import op

from app.base.db import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audiences",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("site", "id", name=op.f("pk_audiences")),
    )


def downgrade() -> None:
    op.drop_table("audiences")
