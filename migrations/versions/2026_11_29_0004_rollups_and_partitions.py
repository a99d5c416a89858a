"""rollups, consent expiry, monthly partitions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from app.base.db import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollup_daily",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("campaign", sa.String(length=128), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.Column("subjects", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site", "day", "kind", "campaign", name=op.f("pk_rollup_daily")),
    )
    op.create_table(
        "rollup_detail",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("page", sa.String(length=512), nullable=True),
        sa.Column("campaign", sa.String(length=128), nullable=True),
        sa.Column("utm_source", sa.String(length=128), nullable=True),
        sa.Column("utm_medium", sa.String(length=128), nullable=True),
        sa.Column("utm_campaign", sa.String(length=128), nullable=True),
        sa.Column("utm_content", sa.String(length=128), nullable=True),
        sa.Column("utm_term", sa.String(length=128), nullable=True),
        sa.Column("referrer", sa.String(length=255), nullable=True),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("browser", sa.String(length=64), nullable=False),
        sa.Column("os", sa.String(length=64), nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.Column("subjects", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site", "day", "kind", "n", name=op.f("pk_rollup_detail")),
    )
    with op.batch_alter_table("consent_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expired_at", UTCDateTime(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _partition_events()
    op.create_index("ix_events_site_kind_time", "events", ["site", "kind", "occurred_at"])


def _partition_events() -> None:
    """Events by month on PostgreSQL, so that retention can drop a whole expired month. Rows
    outside every monthly partition (the jobs create them ahead) land in events_default."""
    op.execute("ALTER TABLE events RENAME TO events_unpartitioned")
    op.execute("ALTER TABLE events_unpartitioned RENAME CONSTRAINT pk_events TO pk_events_old")
    op.execute("ALTER INDEX ix_events_site_subject RENAME TO ix_events_old_site_subject")
    op.execute(
        "CREATE TABLE events (LIKE events_unpartitioned INCLUDING DEFAULTS)"
        " PARTITION BY RANGE (occurred_at)"
    )
    op.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (site, occurred_at, id)")
    op.execute("CREATE INDEX ix_events_site_subject ON events (site, subject)")
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    # This month and the next two, so the first events already land in their month; the
    # retention job keeps creating them ahead from then on.
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(3):
        end = (month + timedelta(days=32)).replace(day=1)
        op.execute(
            f"CREATE TABLE events_{month:%Y_%m} PARTITION OF events"
            f" FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
        )
        month = end
    op.execute("INSERT INTO events SELECT * FROM events_unpartitioned")
    op.execute("DROP TABLE events_unpartitioned")


def _unpartition_events() -> None:
    op.execute("ALTER TABLE events RENAME TO events_partitioned")
    op.execute("ALTER TABLE events_partitioned RENAME CONSTRAINT pk_events TO pk_events_old")
    op.execute("ALTER INDEX ix_events_site_subject RENAME TO ix_events_old_site_subject")
    op.execute("CREATE TABLE events (LIKE events_partitioned INCLUDING DEFAULTS)")
    op.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (site, occurred_at, id)")
    op.execute("CREATE INDEX ix_events_site_subject ON events (site, subject)")
    op.execute("INSERT INTO events SELECT * FROM events_partitioned")
    op.execute("DROP TABLE events_partitioned")


def downgrade() -> None:
    op.drop_index("ix_events_site_kind_time", table_name="events")
    if op.get_bind().dialect.name == "postgresql":
        _unpartition_events()
    with op.batch_alter_table("consent_state", schema=None) as batch_op:
        batch_op.drop_column("expired_at")

    op.drop_table("rollup_detail")
    op.drop_table("rollup_daily")
