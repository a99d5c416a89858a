"""a site's controller identity (Kantara consent receipts, notices, exports)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

The organisation responsible for the processing on a site: its name, contact e-mail,
postal address, phone and homepage. Nullable: sites created before it have none until
`pixelgate sites update` gives them one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = (
    ("controller", 200),
    ("contact_email", 254),
    ("address", 500),
    ("phone", 50),
    ("homepage", 2048),
)


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        for name, length in COLUMNS:
            batch.add_column(sa.Column(name, sa.String(length=length), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
