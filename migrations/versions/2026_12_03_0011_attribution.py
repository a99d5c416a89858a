"""last-touch attribution: clicks found by subject, rollups keep the credited influencer

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

Reports credit a subject's visit or conversion to the campaign and influencer of their last
click within the policy's attribution window: a partial index finds that click. A rollup row
keeps the campaign and influencer credited when it was rolled up, which reports read as they
are (rows rolled up before have the hit's own campaign and no influencer).
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollup_detail") as batch:
        batch.add_column(sa.Column("influencer", sa.String(length=128), nullable=True))
    clicks = sa.text("kind = 'click'")
    op.create_index(
        "ix_events_clicks_by_subject",
        "events",
        ["site", "subject", "occurred_at"],
        postgresql_where=clicks,
        sqlite_where=clicks,
    )


def downgrade() -> None:
    op.drop_index("ix_events_clicks_by_subject", table_name="events")
    with op.batch_alter_table("rollup_detail") as batch:
        batch.drop_column("influencer")
