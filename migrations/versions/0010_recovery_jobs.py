"""Recovery of pending submissions as a job: at most one recovery job queued or running
at a time (a partial UNIQUE index on jobs), the job's reported result, and an index
on the pending submissions that the periodic look reads.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 12:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_EXCLUSIVE = "kind IN ('recover') AND state IN ('queued', 'running')"
PENDING = "status = 'pending'"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("result_json", sa.Text(), nullable=True))
    op.create_index("uq_jobs_one_active_exclusive", "jobs", ["kind"], unique=True,
                    sqlite_where=sa.text(ACTIVE_EXCLUSIVE),
                    postgresql_where=sa.text(ACTIVE_EXCLUSIVE))
    op.create_index("ix_submissions_pending_created_at", "submissions", ["created_at"],
                    sqlite_where=sa.text(PENDING), postgresql_where=sa.text(PENDING))


def downgrade() -> None:
    op.drop_index("ix_submissions_pending_created_at", table_name="submissions")
    op.drop_index("uq_jobs_one_active_exclusive", table_name="jobs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("result_json")
