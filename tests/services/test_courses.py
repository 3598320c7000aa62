import pytest

from server.models import Enrollment
from server.services import accounts, courses
from server.services.errors import Conflict, ValidationError

pytestmark = pytest.mark.usefixtures("db_backend")


def test_create_course_and_enroll(session, make_user, make_course):
    alice = make_user(session, email="alice@example.edu")
    course = make_course(session, members={alice: "student"})
    assert courses.role_in_course(session, alice, course) == "student"
    courses.enroll(session, course, alice, "TA")
    assert courses.role_in_course(session, alice, course) == "ta"
    assert session.query(Enrollment).count() == 1
    assert courses.courses_for_user(session, alice) == [(course, "ta")]


def test_bad_course_code_and_role_name_the_field(session, make_user, make_course):
    with pytest.raises(ValidationError) as excinfo:
        courses.create_course(session, "CS 101/../x", "Title")
    assert excinfo.value.field == "code"
    course = make_course(session)
    with pytest.raises(Conflict, match="CS101 already exists"):
        courses.create_course(session, "CS101", "Again")
    user = make_user(session)
    with pytest.raises(ValidationError, match="role: 'professor' is not one of"):
        courses.enroll(session, course, user, "professor")


def test_roster_import_creates_enrolls_and_updates(session, make_user, make_course):
    existing = make_user(session, email="old@example.edu", name="Old Timer")
    course = make_course(session, members={existing: "student"})
    text = (
        "\ufeffemail,name,role\n"
        "old@example.edu,Old Timer,ta\n"
        "NEW@example.edu, New Person ,\n"
        "\n"
        "prof@example.edu,Prof,instructor\n"
    )
    result = courses.import_roster(session, course, text, actor=None)
    assert result.created == ["new@example.edu", "prof@example.edu"]
    assert result.enrolled == ["new@example.edu", "prof@example.edu"]
    assert result.role_changed == ["old@example.edu"]
    roles = {e.user.email: e.role for e in courses.roster(session, course)}
    assert roles == {"old@example.edu": "ta", "new@example.edu": "student",
                     "prof@example.edu": "instructor"}
    assert accounts.get_user_by_email(session, "new@example.edu").password_hash is None
    again = courses.import_roster(session, course, text, actor=None)
    assert again.created == [] and again.enrolled == [] and len(again.unchanged) == 3


def test_roster_with_errors_imports_nothing_and_names_each_line(session, make_course):
    course = make_course(session)
    text = "a@example.edu,A,student\nnot-an-email,B\nc@example.edu,C,wizard\na@example.edu,A2\nx\n"
    with pytest.raises(courses.RosterError) as excinfo:
        courses.import_roster(session, course, text, actor=None)
    errors = excinfo.value.errors
    assert errors[0].startswith("line 2: email:")
    assert errors[1].startswith("line 3: role: 'wizard'")
    assert errors[2] == "line 4: email a@example.edu already appears on line 1"
    assert errors[3].startswith("line 5: expected 2 or 3 columns")
    assert courses.roster(session, course) == []
    assert accounts.get_user_by_email(session, "a@example.edu") is None


def test_empty_roster_is_an_error(session, make_course):
    course = make_course(session)
    with pytest.raises(courses.RosterError, match="no rows"):
        courses.import_roster(session, course, "email,name,role\n", actor=None)


def test_change_role_and_unenroll_keep_one_instructor(session, make_user, make_course):
    from server.services.errors import NotFound

    prof = make_user(session, email="prof@example.edu")
    ta = make_user(session, email="ta@example.edu")
    course = make_course(session, members={prof: "instructor", ta: "ta"})
    with pytest.raises(Conflict, match="role: prof@example.edu is the only instructor"):
        courses.change_role(session, course, prof.id, "ta", actor=None)
    with pytest.raises(Conflict, match="only instructor"):
        courses.unenroll(session, course, prof.id)
    courses.change_role(session, course, ta.id, "instructor", actor=None)
    courses.change_role(session, course, prof.id, "ta", actor=None)  # now allowed
    assert courses.role_in_course(session, prof, course) == "ta"
    assert courses.unenroll(session, course, prof.id) is prof
    assert courses.role_in_course(session, prof, course) is None
    with pytest.raises(NotFound, match="not enrolled"):
        courses.unenroll(session, course, prof.id)
    with pytest.raises(ValidationError, match="role: 'boss'"):
        courses.change_role(session, course, ta.id, "boss", actor=None)
