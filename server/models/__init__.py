"""SQLAlchemy models, one module per concept; importing this registers them all."""

from server.models.assignment import Assignment, AssignmentProblem, ScorePolicy
from server.models.base import Base, utcnow
from server.models.counter import RateCounter
from server.models.course import (
    ROLE_VALUES,
    STAFF_ROLE_VALUES,
    Course,
    Enrollment,
    Role,
    StaffInvitation,
)
from server.models.grades import Extension, OverrideEvent, ScoreOverride
from server.models.instance import Instance
from server.models.invite import PasswordInvite
from server.models.job import JOB_STATES, Job, JobState
from server.models.problem import Problem, ProblemVersion
from server.models.submission import STATUS_VALUES, Regrade, Submission, SubmissionStatus
from server.models.token import ApiToken
from server.models.user import User
from server.models.verdict import SubmissionVerdict

__all__ = [
    "JOB_STATES",
    "ROLE_VALUES",
    "STAFF_ROLE_VALUES",
    "STATUS_VALUES",
    "ApiToken",
    "Assignment",
    "AssignmentProblem",
    "Base",
    "Course",
    "Enrollment",
    "Extension",
    "Instance",
    "Job",
    "JobState",
    "OverrideEvent",
    "PasswordInvite",
    "Problem",
    "ProblemVersion",
    "RateCounter",
    "Regrade",
    "Role",
    "ScoreOverride",
    "ScorePolicy",
    "StaffInvitation",
    "Submission",
    "SubmissionStatus",
    "SubmissionVerdict",
    "User",
    "utcnow",
]
