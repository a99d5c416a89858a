"""data subject requests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from app.base.db import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dsar_exports",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("site", "request_id", name=op.f("pk_dsar_exports")),
    )
    with op.batch_alter_table("dsar_exports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_dsar_exports_subject_hash", ["site", "subject_hash"], unique=False
        )

    op.create_table(
        "dsar_requests",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("regulation", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("subject_hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("export_expires_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("site", "id", name=op.f("pk_dsar_requests")),
    )
    with op.batch_alter_table("dsar_requests", schema=None) as batch_op:
        batch_op.create_index("ix_dsar_requests_status", ["status", "received_at"], unique=False)
        batch_op.create_index(
            "ix_dsar_requests_subject_hash", ["site", "subject_hash"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("dsar_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_dsar_requests_subject_hash")
        batch_op.drop_index("ix_dsar_requests_status")

    op.drop_table("dsar_requests")
    with op.batch_alter_table("dsar_exports", schema=None) as batch_op:
        batch_op.drop_index("ix_dsar_exports_subject_hash")

    op.drop_table("dsar_exports")
