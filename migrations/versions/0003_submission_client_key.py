"""Submissions: client_key, unique per user and problem (one submission per double click).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 04:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_key", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_submissions_user_id_assignment_problem_id_client_key"),
            ["user_id", "assignment_problem_id", "client_key"],
        )


def downgrade() -> None:
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("uq_submissions_user_id_assignment_problem_id_client_key"), type_="unique"
        )
        batch_op.drop_column("client_key")
