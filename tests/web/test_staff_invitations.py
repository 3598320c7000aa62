"""Staff invitations on the pages (issue 22): an instructor who adds an existing account
as TA or instructor (roster import or role menu) makes an invitation, listed on the
course's page (with Withdraw) and on the invitee's dashboard (with Accept and Decline,
CSRF-protected POST forms); the role is theirs only once they accept. A site
administrator still gives the role at once."""

from __future__ import annotations

import html
import re

import pytest

from server.models import Enrollment, StaffInvitation

from .helpers import login, post_form

pytestmark = pytest.mark.usefixtures("db_backend")
COURSE = "/staff/CS101/"
IMPORT = "/instructor/CS101/roster/import"


@pytest.fixture
def people(app_session, make_user, make_course):
    teacher = make_user(app_session, "teacher@example.edu", "Tina Teacher")
    make_user(app_session, "admin@example.edu", "Ada Admin", is_admin=True)
    colleague = make_user(app_session, "colleague@example.edu", "Carl Colleague")
    student = make_user(app_session, "student@example.edu", "Sam Student")
    make_user(app_session, "bystander@example.edu", "Bea Bystander")
    make_course(app_session, members={teacher: "instructor", student: "student"})
    app_session.commit()
    return {"colleague": colleague.id, "student": student.id}


def role_of(app_session, email):
    app_session.expire_all()
    role = next((e.role for e in app_session.query(Enrollment)
                 if e.user.email == email and e.course.code == "CS101"), None)
    app_session.rollback()
    return role


def invitation_ids(app_session):
    app_session.expire_all()
    ids = [i.id for i in app_session.query(StaffInvitation).order_by(StaffInvitation.id)]
    app_session.rollback()
    return ids


def text(response):
    return html.unescape(response.get_data(as_text=True))


def words(response):
    """The page's text without tags, spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", text(response)).split())


def test_an_imported_staff_role_is_an_invitation_until_the_account_holder_accepts(
        client, people, app_session):
    login(client, "teacher@example.edu")
    imported = post_form(client, IMPORT, IMPORT,
                         {"csv_text": "colleague@example.edu,Carl Colleague,ta\n"},
                         follow_redirects=True)
    assert "1 invited as staff" in text(imported)
    assert role_of(app_session, "colleague@example.edu") is None  # not in the course yet
    (invitation,) = invitation_ids(app_session)
    page = text(client.get(COURSE))
    assert "Staff invitations waiting for an answer (1)" in page
    assert "colleague@example.edu" in page and "Tina Teacher" in page
    assert f"/instructor/CS101/invitations/{invitation}/withdraw" in page

    login(client, "colleague@example.edu")
    assert client.get(COURSE).status_code == 404  # not staff before accepting
    dashboard = text(client.get("/"))
    assert "Tina Teacher invites you to be TA in CS101 · Backprop 101" in words(client.get("/"))
    accept = f"/invitations/{invitation}/accept"
    assert re.search(rf'<form class="inline" method="post" action="{accept}">\s*'
                     r'<input type="hidden" name="csrf_token"', dashboard)
    assert f"/invitations/{invitation}/decline" in dashboard
    forged = client.post(accept)  # no CSRF token: another site's form
    assert forged.status_code == 400 and role_of(app_session, "colleague@example.edu") is None

    login(client, "bystander@example.edu")  # someone else's invitation
    stolen = post_form(client, "/", accept, {}, follow_redirects=True)
    assert f"invitation: there is no invitation {invitation} waiting for you" in text(stolen)
    assert role_of(app_session, "colleague@example.edu") is None

    login(client, "colleague@example.edu")
    accepted = post_form(client, "/", accept, {}, follow_redirects=True)
    assert "You are ta in CS101 now." in text(accepted)
    assert role_of(app_session, "colleague@example.edu") == "ta"
    assert client.get(COURSE).status_code == 200 and invitation_ids(app_session) == []
    assert "Invitations to join" not in text(client.get("/"))


def test_the_role_menu_invites_declining_keeps_the_role_and_instructors_withdraw(
        client, people, app_session):
    student = people["student"]
    login(client, "teacher@example.edu")
    changed = post_form(client, COURSE, f"/instructor/CS101/roster/{student}/role",
                        {"role": "instructor"}, follow_redirects=True)
    assert "student@example.edu is invited to be instructor in CS101" in text(changed)
    assert role_of(app_session, "student@example.edu") == "student"
    (first,) = invitation_ids(app_session)

    login(client, "student@example.edu")
    assert "Tina Teacher invites you to be instructor in CS101" in words(client.get("/"))
    declined = post_form(client, "/", f"/invitations/{first}/decline", {},
                         follow_redirects=True)
    assert "You declined to be instructor in CS101." in text(declined)
    assert role_of(app_session, "student@example.edu") == "student"
    assert invitation_ids(app_session) == []

    login(client, "teacher@example.edu")
    post_form(client, COURSE, f"/instructor/CS101/roster/{student}/role", {"role": "ta"})
    (second,) = invitation_ids(app_session)
    withdrawn = post_form(client, COURSE, f"/instructor/CS101/invitations/{second}/withdraw",
                          {}, follow_redirects=True)
    assert "The invitation of student@example.edu to be ta in CS101 is withdrawn." in \
        text(withdrawn)
    assert invitation_ids(app_session) == []
    again = post_form(client, COURSE, f"/instructor/CS101/invitations/{second}/withdraw",
                      {}, follow_redirects=True)
    assert f"invitation: CS101 has no pending invitation {second}" in text(again)
    login(client, "student@example.edu")
    gone = post_form(client, "/", f"/invitations/{second}/accept", {}, follow_redirects=True)
    assert "no invitation" in text(gone) and role_of(app_session, "student@example.edu") == \
        "student"


def test_a_site_administrator_gives_staff_roles_at_once(client, people, app_session):
    login(client, "admin@example.edu")
    changed = post_form(client, COURSE, f"/instructor/CS101/roster/{people['student']}/role",
                        {"role": "ta"}, follow_redirects=True)
    assert "student@example.edu is now ta in CS101." in text(changed)
    imported = post_form(client, IMPORT, IMPORT,
                         {"csv_text": "colleague@example.edu,Carl Colleague,instructor\n"},
                         follow_redirects=True)
    assert "1 enrolled" in text(imported) and "invited" not in text(imported)
    assert role_of(app_session, "colleague@example.edu") == "instructor"
    assert invitation_ids(app_session) == []


def test_a_ta_sees_pending_invitations_but_cannot_withdraw_them(client, people, app_session,
                                                                make_user):
    from server.services.courses import enroll, get_course

    enroll(app_session, get_course(app_session, "CS101"),
           make_user(app_session, "ta@example.edu", "Tom TA"), "ta")
    app_session.commit()
    login(client, "teacher@example.edu")
    post_form(client, IMPORT, IMPORT, {"csv_text": "colleague@example.edu,C,instructor\n"})
    (invitation,) = invitation_ids(app_session)
    login(client, "ta@example.edu")
    page = text(client.get(COURSE))
    assert "Staff invitations waiting for an answer (1)" in page and "/withdraw" not in page
    refused = post_form(client, COURSE, f"/instructor/CS101/invitations/{invitation}/withdraw",
                        {})
    assert refused.status_code == 403
    assert invitation_ids(app_session) == [invitation]
