"""Submissions: hidden_seeds_json, the seeds of the hidden instances drawn per submission.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL on submissions stored before: their hidden instances were drawn
    # from the instance's seed (engine.instance.legacy_hidden_seeds).
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hidden_seeds_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_column("hidden_seeds_json")
