"""report cells: aggregates that reports read, kept up to date by the `reports` job

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

Every day that has events is marked for building: until the job has built it, reports count
it from raw events as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_cells",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("grain", sa.String(length=1), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("campaign", sa.String(length=128), nullable=True),
        sa.Column("influencer", sa.String(length=128), nullable=True),
        sa.Column("machine", sa.Boolean(), nullable=True),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.Column("anonymous_hits", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Numeric(precision=24, scale=4), nullable=True),
        sa.Column("members", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("site", "grain", "period", "n", name=op.f("pk_report_cells")),
    )
    op.create_index(
        "ix_report_cells_read", "report_cells", ["site", "dimension", "grain", "period"]
    )
    op.create_table(
        "report_dirty",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("mark", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site", "day", name=op.f("pk_report_dirty")),
    )
    op.create_table(
        "subject_numbers",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("site", "subject", name=op.f("pk_subject_numbers")),
    )
    op.create_index("ux_subject_numbers_number", "subject_numbers", ["site", "number"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        day = "date(timezone('UTC', occurred_at))"
    else:
        day = "date(occurred_at)"
    op.execute(
        f"INSERT INTO report_dirty (site, day, mark) SELECT DISTINCT site, {day}, 0 FROM events"  # noqa: S608
    )


def downgrade() -> None:
    op.drop_table("subject_numbers")
    op.drop_table("report_dirty")
    op.drop_index("ix_report_cells_read", table_name="report_cells")
    op.drop_table("report_cells")
