"""Problem ownership and authors: problems.spec_id and problems.course_id (a problem
is shared, or one course's own; the spec id is unique per owner), and
problem_versions.author_id and problem_versions.origin.

Existing problems are shared ones whose key is their spec id: ``spec_id = id``.
Instances keep pointing at the same versions.

On SQLite the columns are added with plain ``ALTER TABLE ... ADD COLUMN``
(foreign keys written inline), not by recreating the tables: with foreign keys
on, dropping the old ``problems`` table would delete its versions in cascade.
SQLite does not reflect the options of an inline foreign key, so neither key
has an ON DELETE action (courses and users are not deleted; enrollments are).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE problems ADD COLUMN spec_id VARCHAR(100) NOT NULL DEFAULT ''")
        op.execute("ALTER TABLE problems ADD COLUMN course_id INTEGER REFERENCES courses (id)")
        op.execute("ALTER TABLE problem_versions ADD COLUMN author_id INTEGER "
                   "REFERENCES users (id)")
        op.execute("ALTER TABLE problem_versions ADD COLUMN origin VARCHAR(16)")
        op.execute("UPDATE problems SET spec_id = id")
    else:
        op.add_column("problems", sa.Column("spec_id", sa.String(length=100), nullable=True))
        op.add_column("problems", sa.Column("course_id", sa.Integer(), nullable=True))
        op.execute("UPDATE problems SET spec_id = id")
        op.alter_column("problems", "spec_id", nullable=False)
        op.create_foreign_key(op.f("fk_problems_course_id_courses"), "problems", "courses",
                              ["course_id"], ["id"])
        op.add_column("problem_versions", sa.Column("author_id", sa.Integer(), nullable=True))
        op.add_column("problem_versions",
                      sa.Column("origin", sa.String(length=16), nullable=True))
        op.create_foreign_key(op.f("fk_problem_versions_author_id_users"), "problem_versions",
                              "users", ["author_id"], ["id"])
    op.create_index("uq_problems_shared_spec_id", "problems", ["spec_id"], unique=True,
                    sqlite_where=sa.text("course_id IS NULL"),
                    postgresql_where=sa.text("course_id IS NULL"))
    op.create_index("uq_problems_course_spec_id", "problems", ["course_id", "spec_id"],
                    unique=True, sqlite_where=sa.text("course_id IS NOT NULL"),
                    postgresql_where=sa.text("course_id IS NOT NULL"))


def downgrade() -> None:
    # Course problems cannot be represented before this revision: they go, with
    # their versions (instances drawn from them block this, as they should).
    op.execute("DELETE FROM problem_versions WHERE problem_id IN "
               "(SELECT id FROM problems WHERE course_id IS NOT NULL)")
    op.execute("DELETE FROM problems WHERE course_id IS NOT NULL")
    op.drop_index("uq_problems_course_spec_id", table_name="problems")
    op.drop_index("uq_problems_shared_spec_id", table_name="problems")
    with op.batch_alter_table("problem_versions", schema=None) as batch_op:
        if op.get_bind().dialect.name != "sqlite":
            batch_op.drop_constraint(op.f("fk_problem_versions_author_id_users"),
                                     type_="foreignkey")
        batch_op.drop_column("origin")
        batch_op.drop_column("author_id")
    with op.batch_alter_table("problems", schema=None) as batch_op:
        if op.get_bind().dialect.name != "sqlite":
            batch_op.drop_constraint(op.f("fk_problems_course_id_courses"), type_="foreignkey")
        batch_op.drop_column("course_id")
        batch_op.drop_column("spec_id")
