"""rollups that keep what every report needs of a purged day

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

A rollup_detail row now also holds its hour of the day, the jurisdiction and currency it
groups by, its hits without a subject, the sum of its values, and a HyperLogLog sketch of its
subjects, so that distinct counts over many purged days are a merge, not a sum. Rows rolled up
before have none of them: reports count their hour as 0 and their `subjects` as their sketch.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = (
    ("hour", sa.SmallInteger()),
    ("jurisdiction", sa.String(length=16)),
    ("currency", sa.String(length=3)),
    ("anonymous_hits", sa.BigInteger()),
    ("value", sa.Numeric(24, 4)),
    ("sketch", sa.LargeBinary()),
)


def upgrade() -> None:
    with op.batch_alter_table("rollup_detail") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollup_detail") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
