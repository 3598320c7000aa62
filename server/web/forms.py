"""Flask-WTF forms (each carries a CSRF token)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from flask import current_app
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    FieldList,
    FloatField,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import EqualTo, InputRequired, Length, NumberRange, Optional

DATETIME_FORMAT = "%Y-%m-%dT%H:%M"


class LoginForm(FlaskForm):
    email = StringField("Email", validators=[InputRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=1024)])
    next = HiddenField()


class ConfirmForm(FlaskForm):
    """A button-only form (logout, revoke): just the CSRF token."""


class SetPasswordForm(FlaskForm):
    """A new password, twice (a set-password link; the profile's change adds the current)."""

    new_password = PasswordField("New password", validators=[InputRequired(), Length(max=1024)])
    confirm = PasswordField(
        "New password again",
        validators=[
            InputRequired(),
            EqualTo("new_password", message="does not match the new password"),
        ],
    )


class ChangePasswordForm(SetPasswordForm):
    current_password = PasswordField("Current password", validators=[InputRequired()])


class NewTokenForm(FlaskForm):
    name = StringField(
        "Token name", validators=[InputRequired(), Length(max=100)],
        description="Where you will use it, e.g. 'laptop notebook'.",
    )


class ProblemRowForm(Form):
    """One bank problem on the assignment form (a sub-form: no CSRF of its own)."""

    problem_id = HiddenField(validators=[InputRequired()])
    include = BooleanField("Include")
    # The problems' order on the assignment: smallest first (ties keep the form's order).
    position = IntegerField(
        "Order", validators=[Optional(), NumberRange(min=1, max=1000, message="must be 1 to 1000")],
    )
    weight = FloatField(
        "Weight",
        default=1.0,
        validators=[
            Optional(),
            NumberRange(min=0.01, max=1000, message="must be between 0.01 and 1000"),
        ],
    )


class AssignmentForm(FlaskForm):
    title = StringField("Title", validators=[InputRequired(), Length(max=200)])
    open_at = DateTimeLocalField("Opens", format=DATETIME_FORMAT, validators=[InputRequired()])
    due_at = DateTimeLocalField("Due", format=DATETIME_FORMAT, validators=[InputRequired()])
    late_until = DateTimeLocalField(
        "Late submissions until", format=DATETIME_FORMAT, validators=[Optional()],
        description="Leave empty for no late period.",
    )
    late_credit = IntegerField(
        "Late credit (%)",
        default=0,
        validators=[
            InputRequired(),
            NumberRange(min=0, max=100, message="must be between 0 and 100"),
        ],
    )
    max_attempts = IntegerField(
        "Attempts per problem", validators=[Optional(), NumberRange(min=1, max=1000)],
        description="Leave empty for unlimited attempts.",
    )
    score_policy = SelectField(
        "Score that counts (best or last attempt)", choices=["best", "last"], default="best",
    )
    points = FloatField("Points", default=100.0, validators=[Optional()])
    canvas_id = StringField("Canvas assignment id", validators=[Optional(), Length(max=64)])
    problems = FieldList(FormField(ProblemRowForm))


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=["student", "ta", "instructor"])


class RosterImportForm(FlaskForm):
    csv_file = FileField("CSV file")
    csv_text = TextAreaField(
        "…or paste CSV", validators=[Length(max=500_000)],
        description="One line per person: email,name,role (role: student, ta or instructor; "
        "default student). A header line 'email,name,role' is allowed.",
    )
    email_domain = StringField(
        "Email domain (Canvas exports whose SIS Login IDs are not emails)",
        validators=[Optional(), Length(max=200)])


class AnswerForm(FlaskForm):
    """An answer to a problem; the text is checked by services.grading (clear messages)."""

    answer = TextAreaField("Your answer")
    # A random key per rendering of the form: a double click sends the same key
    # twice and the second request finds the first one's submission.
    submission_key = HiddenField()


class OverrideForm(FlaskForm):
    score = StringField("Score (0 to 1, or a percentage)", validators=[InputRequired(),
                                                                      Length(max=20)])
    reason = StringField("Reason", validators=[InputRequired(), Length(max=2000)])


class RemoveOverrideForm(FlaskForm):
    reason = StringField("Reason", validators=[InputRequired(), Length(max=2000)])


class ExtensionForm(FlaskForm):
    """One student's dates on one assignment, in the site's time zone (to_utc)."""

    due_at = DateTimeLocalField("Due", format=DATETIME_FORMAT, validators=[InputRequired()])
    late_until = DateTimeLocalField("Late until", format=DATETIME_FORMAT,
                                    validators=[Optional()],
                                    description="Empty: no late period.")

    def with_ids(self, suffix: str) -> ExtensionForm:
        """Its inputs' ids (and their labels') with ``suffix``: a page has one of these
        forms per assignment, and ids must be unique. The names stay the same."""
        for field in self:
            field.id = field.label.field_id = f"{field.name}-{suffix}"
        return self


class RegradeForm(FlaskForm):
    target = StringField(validators=[InputRequired(), Length(max=120)])  # a<id> or p<problem>
    redraw = BooleanField("Redraw the instances on the problem's current spec (seeds kept)")
    reason = StringField("Reason", validators=[Optional(), Length(max=2000)])


# --- times in forms: naive, in the site's time zone --------------------------------


def to_utc(local: dt.datetime | None) -> dt.datetime | None:
    """A form's naive local time, read in the site's time zone, as aware UTC."""
    if local is None:
        return None
    zone = ZoneInfo(current_app.config["NABLA_TIMEZONE"])
    return local.replace(tzinfo=zone).astimezone(dt.UTC)


def to_local(value: dt.datetime | None) -> dt.datetime | None:
    """An aware time as the naive local time a form shows, in the site's time zone."""
    if value is None:
        return None
    zone = ZoneInfo(current_app.config["NABLA_TIMEZONE"])
    return value.astimezone(zone).replace(tzinfo=None)
