"""services.staff_invitations (issue 22): an instructor who is not a site administrator
cannot make an existing account TA or instructor of their course without the account
holder's acceptance; administrators, the command line, student roles, lowered roles and
accounts a roster import creates are as before."""

from __future__ import annotations

import pytest

from server.models import StaffInvitation
from server.services import courses, staff_invitations
from server.services.errors import NotFound

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def people(session, make_user, make_course):
    teacher = make_user(session, "teacher@example.edu", "Teacher")
    admin = make_user(session, "admin@example.edu", "Admin", is_admin=True)
    other = make_user(session, "other@example.edu", "Someone Else")
    student = make_user(session, "student@example.edu", "A Student")
    course = make_course(session, members={teacher: "instructor", student: "student"})
    return {"teacher": teacher, "admin": admin, "other": other, "student": student,
            "course": course}


def roles(session, course):
    return {e.user.email: e.role for e in courses.roster(session, course)}


@pytest.mark.parametrize(("actor", "current", "role", "invited"), [
    ("teacher", None, "ta", True), ("teacher", None, "instructor", True),
    ("teacher", "student", "ta", True), ("teacher", "ta", "instructor", True),
    ("teacher", None, "student", False), ("teacher", "instructor", "ta", False),
    ("teacher", "ta", "student", False), ("admin", None, "instructor", False),
    ("admin", "student", "ta", False), (None, None, "instructor", False),
])
def test_who_needs_to_accept(people, actor, current, role, invited):
    who = people[actor] if actor else None
    assert staff_invitations.needs_acceptance(who, current, role) is invited


def test_a_roster_import_invites_existing_accounts_as_staff_and_they_accept(session, people):
    course, teacher, other = people["course"], people["teacher"], people["other"]
    text = ("other@example.edu,Someone Else,ta\nstudent@example.edu,A Student,instructor\n"
            "new@example.edu,New Person,instructor\nnew2@example.edu,New Two,student\n")
    result = courses.import_roster(session, course, text, actor=teacher)
    assert result.invited == ["other@example.edu", "student@example.edu"]
    # Accounts the import creates get their role (their holder sets a password first).
    assert result.created == ["new@example.edu", "new2@example.edu"]
    assert roles(session, course) == {
        "teacher@example.edu": "instructor", "student@example.edu": "student",
        "new@example.edu": "instructor", "new2@example.edu": "student"}
    pending = staff_invitations.pending_for_course(session, course)
    assert [(i.user.email, i.role, i.invited_by) for i in pending] == [
        ("other@example.edu", "ta", teacher), ("student@example.edu", "instructor", teacher)]
    again = courses.import_roster(session, course, text, actor=teacher)
    assert again.invited == [] and again.changed_nothing
    assert session.query(StaffInvitation).count() == 2

    (invitation,) = staff_invitations.pending_for_user(session, other)
    assert invitation.course is course
    staff_invitations.accept(session, other, invitation.id)
    assert roles(session, course)["other@example.edu"] == "ta"
    assert staff_invitations.pending_for_user(session, other) == []
    with pytest.raises(NotFound, match="invitation: there is no invitation"):
        staff_invitations.accept(session, other, invitation.id)


def test_the_role_menu_invites_and_declining_changes_nothing(session, people):
    course, teacher, student = people["course"], people["teacher"], people["student"]
    invitation = courses.change_role(session, course, student.id, "ta", actor=teacher)
    assert isinstance(invitation, StaffInvitation) and invitation.role == "ta"
    again = courses.change_role(session, course, student.id, "instructor", actor=teacher)
    assert again is invitation and invitation.role == "instructor"  # the offer replaced
    assert roles(session, course)["student@example.edu"] == "student"
    with pytest.raises(NotFound, match="no invitation"):
        staff_invitations.decline(session, people["other"], invitation.id)  # not theirs
    with pytest.raises(NotFound, match="no invitation"):
        staff_invitations.accept(session, teacher, invitation.id)
    staff_invitations.decline(session, student, invitation.id)
    assert roles(session, course)["student@example.edu"] == "student"
    assert session.query(StaffInvitation).count() == 0


def test_administrators_the_command_line_and_lowered_roles_change_at_once(session, people):
    course, admin, student = people["course"], people["admin"], people["student"]
    enrollment = courses.change_role(session, course, student.id, "ta", actor=admin)
    assert enrollment.role == "ta"
    courses.change_role(session, course, student.id, "student", actor=people["teacher"])
    assert roles(session, course)["student@example.edu"] == "student"
    courses.change_role(session, course, student.id, "instructor", actor=None)
    result = courses.import_roster(session, course, "other@example.edu,Someone Else,ta\n",
                                   actor=admin)
    assert result.enrolled == ["other@example.edu"] and result.invited == []
    assert roles(session, course) == {"teacher@example.edu": "instructor",
                                      "student@example.edu": "instructor",
                                      "other@example.edu": "ta"}
    assert session.query(StaffInvitation).count() == 0


def test_accepting_never_lowers_a_role_and_withdrawn_invitations_are_gone(
        session, people, make_course):
    course, teacher, other = people["course"], people["teacher"], people["other"]
    invitation, made = staff_invitations.invite(session, course, other, "ta", teacher,
                                                 people["student"].created_at)
    assert made
    courses.enroll(session, course, other, "instructor")  # an administrator, meanwhile
    staff_invitations.accept(session, other, invitation.id)
    assert roles(session, course)["other@example.edu"] == "instructor"

    elsewhere = make_course(session, "CS202", "Elsewhere")
    second, _ = staff_invitations.invite(session, course, people["student"], "ta", teacher,
                                         people["student"].created_at)
    with pytest.raises(NotFound, match="CS202 has no pending invitation"):
        staff_invitations.withdraw(session, elsewhere, second.id)
    assert staff_invitations.withdraw(session, course, second.id) is second
    with pytest.raises(NotFound, match="there is no invitation"):
        staff_invitations.accept(session, people["student"], second.id)
