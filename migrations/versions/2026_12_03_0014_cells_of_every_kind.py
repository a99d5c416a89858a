"""report cells of every kind together: the days built before them are built again

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

A breakdown without a kind filter reads the cells of kind "*" for its dimension; a day built
before this revision has none, so it is marked for the `reports` job, and counted from raw
events until the job has built it again.
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO report_dirty (site, day, mark) "
        "SELECT DISTINCT site, period, 0 FROM report_cells WHERE grain = 'd' "
        "ON CONFLICT (site, day) DO NOTHING"
    )


def downgrade() -> None:
    op.execute("DELETE FROM report_cells WHERE kind = '*'")
