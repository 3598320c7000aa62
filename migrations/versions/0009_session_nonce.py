"""Users: session_nonce, part of every login session's id (logout ends sessions).

Logging out, "log out everywhere" and a password change give the user a new
nonce, which ends every session that carries the old one. Existing users get
a random nonce here; their sessions (which carried a password fingerprint)
end, and they log in again.

Revision ID: 0009
Revises: 0006 (0007 and 0008 come from other branches; re-chained at merge)
Create Date: 2026-11-29 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN with a default on both databases (no table rebuild).
    op.add_column("users", sa.Column("session_nonce", sa.String(length=32), nullable=False,
                                     server_default=""))
    if op.get_bind().dialect.name == "sqlite":
        op.execute("UPDATE users SET session_nonce = lower(hex(randomblob(16)))")
    else:
        op.execute("UPDATE users SET session_nonce = md5(random()::text || id::text)")


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("session_nonce")
