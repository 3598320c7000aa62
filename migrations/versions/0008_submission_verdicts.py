"""Submission verdicts for analytics: one row per graded submission and asked
gradient, with the submission's first mistake; filled from the stored results.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 10:05:00

"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000


def upgrade() -> None:
    op.create_table(
        "submission_verdicts",
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("gradient", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("assignment_problem_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("first_line", sa.Integer(), nullable=True),
        sa.Column("first_step", sa.Integer(), nullable=True),
        sa.Column("first_target", sa.String(length=64), nullable=True),
        sa.Column("first_text", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["assignment_problem_id"], ["assignment_problems.id"],
            name=op.f("fk_submission_verdicts_assignment_problem_id_assignment_problems"),
            ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["submission_id"], ["submissions.id"],
            name=op.f("fk_submission_verdicts_submission_id_submissions"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_submission_verdicts_user_id_users"),
            ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("submission_id", "gradient", name=op.f("pk_submission_verdicts")),
    )
    with op.batch_alter_table("submission_verdicts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_submission_verdicts_problem_gradient",
            ["assignment_problem_id", "gradient", "verdict", "user_id", "position"], unique=False)
        batch_op.create_index("ix_submission_verdicts_problem_user",
                              ["assignment_problem_id", "user_id", "verdict"], unique=False)
        batch_op.create_index("ix_submission_verdicts_problem_step",
                              ["assignment_problem_id", "position", "first_step"], unique=False)
    backfill(op.get_bind())


def backfill(connection: sa.Connection) -> None:
    """Rows for every graded submission, from its stored result JSON (in batches)."""
    from server.services.verdicts import model_steps, verdict_rows

    table = sa.table(
        "submission_verdicts", *(sa.column(name) for name in (
            "submission_id", "gradient", "position", "verdict", "assignment_problem_id",
            "user_id", "first_line", "first_step", "first_target", "first_text")))
    query = sa.text(
        "SELECT s.id, s.user_id, s.assignment_problem_id, s.result_json, s.answer, "
        "v.spec_text, v.spec_hash, i.choices_json FROM submissions s "
        "JOIN instances i ON i.id = s.instance_id "
        "JOIN problem_versions v ON v.id = i.problem_version_id "
        "WHERE s.status = 'graded' AND s.result_json IS NOT NULL AND s.id > :after "
        "ORDER BY s.id LIMIT :batch")
    after = 0
    while True:
        batch = connection.execute(query, {"after": after, "batch": BATCH}).all()
        if not batch:
            return
        rows = []
        for sid, user_id, problem_id, result_json, answer, text, spec_hash, choices in batch:
            try:
                result = json.loads(result_json)
            except ValueError:
                continue
            if isinstance(result, dict):
                rows += verdict_rows(sid, user_id, problem_id, result, answer,
                                     model_steps(text, spec_hash, choices))
        if rows:
            connection.execute(table.insert(), rows)
        after = batch[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("submission_verdicts", schema=None) as batch_op:
        batch_op.drop_index("ix_submission_verdicts_problem_step")
        batch_op.drop_index("ix_submission_verdicts_problem_user")
        batch_op.drop_index("ix_submission_verdicts_problem_gradient")
    op.drop_table("submission_verdicts")
