"""Grades: assignment points and Canvas id, enrollment section and Canvas/SIS ids,
extensions, score overrides and their audit, background jobs (and regrades.job_id),
one-time set-password links.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 08:49:06.618580

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=True),
        sa.Column("args_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("chunks_done", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed')", name=op.f("ck_jobs_state")
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_jobs_actor_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["course_id"],
            ["courses.id"],
            name=op.f("fk_jobs_course_id_courses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_course_id"), ["course_id"], unique=False)

    op.create_table(
        "password_invites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_password_invites_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_invites")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_invites_token_hash")),
    )
    with op.batch_alter_table("password_invites", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_password_invites_user_id"), ["user_id"], unique=False)

    op.create_table(
        "extensions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("late_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "late_until IS NULL OR late_until >= due_at", name=op.f("ck_extensions_late_after_due")
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name=op.f("fk_extensions_actor_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["assignment_id"],
            ["assignments.id"],
            name=op.f("fk_extensions_assignment_id_assignments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_extensions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_extensions")),
        sa.UniqueConstraint(
            "user_id", "assignment_id", name=op.f("uq_extensions_user_id_assignment_id")
        ),
    )
    with op.batch_alter_table("extensions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_extensions_assignment_id"), ["assignment_id"], unique=False
        )

    op.create_table(
        "override_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("assignment_problem_id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("old_score", sa.Double(), nullable=True),
        sa.Column("new_score", sa.Double(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name=op.f("fk_override_events_actor_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["assignment_problem_id"],
            ["assignment_problems.id"],
            name=op.f("fk_override_events_assignment_problem_id_assignment_problems"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_override_events_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_override_events")),
    )
    with op.batch_alter_table("override_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_override_events_assignment_problem_id"),
            ["assignment_problem_id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_override_events_user_id"), ["user_id"], unique=False)

    op.create_table(
        "score_overrides",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("assignment_problem_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 1", name=op.f("ck_score_overrides_score_unit")),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name=op.f("fk_score_overrides_actor_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["assignment_problem_id"],
            ["assignment_problems.id"],
            name=op.f("fk_score_overrides_assignment_problem_id_assignment_problems"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_score_overrides_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_score_overrides")),
        sa.UniqueConstraint(
            "user_id",
            "assignment_problem_id",
            name=op.f("uq_score_overrides_user_id_assignment_problem_id"),
        ),
    )
    with op.batch_alter_table("score_overrides", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_score_overrides_assignment_problem_id"),
            ["assignment_problem_id"],
            unique=False,
        )

    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("points", sa.Double(), server_default="100", nullable=False))
        batch_op.add_column(sa.Column("canvas_id", sa.String(length=64), nullable=True))

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("section", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("canvas_user_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("sis_user_id", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("sis_login_id", sa.String(length=254), nullable=True))

    with op.batch_alter_table("regrades", schema=None) as batch_op:
        batch_op.add_column(sa.Column("job_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_regrades_job_id"), ["job_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_regrades_job_id_jobs"), "jobs", ["job_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("regrades", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_regrades_job_id_jobs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_regrades_job_id"))
        batch_op.drop_column("job_id")

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_column("sis_login_id")
        batch_op.drop_column("sis_user_id")
        batch_op.drop_column("canvas_user_id")
        batch_op.drop_column("section")

    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_column("canvas_id")
        batch_op.drop_column("points")

    with op.batch_alter_table("score_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_score_overrides_assignment_problem_id"))

    op.drop_table("score_overrides")
    with op.batch_alter_table("override_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_override_events_user_id"))
        batch_op.drop_index(batch_op.f("ix_override_events_assignment_problem_id"))

    op.drop_table("override_events")
    with op.batch_alter_table("extensions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_extensions_assignment_id"))

    op.drop_table("extensions")
    with op.batch_alter_table("password_invites", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_password_invites_user_id"))

    op.drop_table("password_invites")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_course_id"))

    op.drop_table("jobs")
