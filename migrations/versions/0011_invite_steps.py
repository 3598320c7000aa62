"""Set-password links: the step a link is exchanged for (its nonce's SHA-256 and end).

Opening a set-password link stores a nonce in the browser's session and its hash
here, then redirects to /set-password, so the token leaves the address bar (and
every later log line and Referer) at once. Existing links keep working: their
step is made when they are next opened.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("password_invites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("step_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("step_expires_at", sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("password_invites", schema=None) as batch_op:
        batch_op.drop_column("step_expires_at")
        batch_op.drop_column("step_hash")
