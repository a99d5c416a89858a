"""campaigns and links

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from app.base.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("influencer", sa.String(length=128), nullable=True),
        sa.Column("sends", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("site", "id", name=op.f("pk_campaigns")),
    )
    op.create_table(
        "links",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.String(length=2048), nullable=False),
        sa.Column("campaign", sa.String(length=128), nullable=True),
        sa.Column("influencer", sa.String(length=128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("site", "code", name=op.f("pk_links")),
    )
    op.create_index("uq_links_code", "links", ["code"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_links_code", table_name="links")

    op.drop_table("links")
    op.drop_table("campaigns")
