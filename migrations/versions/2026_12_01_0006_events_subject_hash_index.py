"""events are found by subject through a hash index (PostgreSQL)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Every recorded hit inserts its subject into this index, at a place of its own (pseudonyms
are random), and only access and erasure requests read it, always for one subject. A hash
index answers those as well and costs PostgreSQL a fifth to a third less a row to insert
into than the B-tree on (site, subject) did; the subject alone names the site (pseudonyms are
keyed by site). SQLite has no hash index: there it is a B-tree on the subject alone. The
index is rebuilt, holding a lock on events while it is.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_events_site_subject", table_name="events")
    op.create_index("ix_events_subject", "events", ["subject"], postgresql_using="hash")


def downgrade() -> None:
    op.drop_index("ix_events_subject", table_name="events")
    op.create_index("ix_events_site_subject", "events", ["site", "subject"])
