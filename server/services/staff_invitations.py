"""Staff roles given to existing accounts wait for their holder's acceptance.

A TA or an instructor of a course sees every student's work there and changes
grades; an instructor also manages the roster. An instructor could give that role
to any account of the site (by a roster import, or the role menu of the course
page) without the account holder knowing. So when an instructor raises an existing
account's role in a course to TA or instructor, the role is not given: a pending
*staff invitation* is made (one per account and course; a second one replaces the
role offered), shown on the course's page with a Withdraw button and on the
invitee's dashboard with Accept and Decline. Accepting enrolls the invitee with the
role (or raises the role they have); declining or withdrawing deletes it.

The contract (``needs_acceptance``): a role is given at once, as before,

* by a site administrator (``actor.is_admin``), on the pages;
* on the command line (``actor`` None: ``nabla courses enroll``, ``nabla users add
  --course``, ``nabla courses import-roster``, ``nabla demo``), an administrator's
  shell;
* when it is the student role, or lowers a role (instructor to TA, TA to student);
* to an account the roster import itself creates (it has no password yet; its
  holder learns of the course from the set-password link the instructor sends).

Everything else needs the invitee's acceptance. Services only flush.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from server.models import Course, StaffInvitation, User
from server.services.errors import NotFound

# A role's rank: giving a higher one than the account holds needs their acceptance.
RANK = {None: 0, "student": 0, "ta": 1, "instructor": 2}


def needs_acceptance(actor: User | None, current_role: str | None, role: str) -> bool:
    """Whether ``actor`` (None: the command line) giving ``role`` to an existing account
    whose role in the course is ``current_role`` (None: not enrolled) makes an
    invitation rather than the role."""
    return actor is not None and not actor.is_admin and RANK[role] > RANK[current_role]


def invite(session: Session, course: Course, user: User, role: str, actor: User | None,
           now: dt.datetime) -> tuple[StaffInvitation, bool]:
    """The pending invitation of ``user`` to ``role`` in ``course`` (flush only), and
    whether this made or changed it (False: the same one was already pending)."""
    invitation = session.scalar(select(StaffInvitation).where(
        StaffInvitation.course_id == course.id, StaffInvitation.user_id == user.id))
    if invitation is not None and invitation.role == role:
        return invitation, False
    if invitation is None:
        invitation = StaffInvitation(course=course, user=user)
        session.add(invitation)
    invitation.role, invitation.invited_by, invitation.created_at = role, actor, now
    session.flush()
    return invitation, True


def pending_for_user(session: Session, user: User) -> list[StaffInvitation]:
    """The invitations waiting for ``user``, oldest first, with their course and who
    invited."""
    return list(session.scalars(
        select(StaffInvitation)
        .options(joinedload(StaffInvitation.course), joinedload(StaffInvitation.invited_by))
        .where(StaffInvitation.user_id == user.id)
        .order_by(StaffInvitation.created_at, StaffInvitation.id)))


def pending_for_course(session: Session, course: Course) -> list[StaffInvitation]:
    """The course's invitations waiting for an answer, with the invitees and who
    invited them, oldest first."""
    return list(session.scalars(
        select(StaffInvitation)
        .options(joinedload(StaffInvitation.user), joinedload(StaffInvitation.invited_by))
        .where(StaffInvitation.course_id == course.id)
        .order_by(StaffInvitation.created_at, StaffInvitation.id)))


def _get(session: Session, invitation_id: int) -> StaffInvitation | None:
    return session.get(StaffInvitation, invitation_id, options=[
        joinedload(StaffInvitation.course), joinedload(StaffInvitation.user)])


def _own(session: Session, user: User, invitation_id: int) -> StaffInvitation:
    invitation = _get(session, invitation_id)
    if invitation is None or invitation.user_id != user.id:
        raise NotFound(f"invitation: there is no invitation {invitation_id} waiting for you "
                       "(it may have been withdrawn, or answered already)")
    return invitation


def accept(session: Session, user: User, invitation_id: int) -> StaffInvitation:
    """Give ``user`` the role of their invitation (flush only; a role they already hold
    at or above it is kept) and delete the invitation. NotFound for an invitation that
    is not theirs or no longer pending."""
    from server.services.courses import enroll, role_in_course

    invitation = _own(session, user, invitation_id)
    if RANK[invitation.role] > RANK[role_in_course(session, user, invitation.course)]:
        enroll(session, invitation.course, user, invitation.role)
    session.delete(invitation)
    session.flush()
    return invitation


def decline(session: Session, user: User, invitation_id: int) -> StaffInvitation:
    """Delete ``user``'s invitation, changing nothing else (flush only)."""
    invitation = _own(session, user, invitation_id)
    session.delete(invitation)
    session.flush()
    return invitation


def withdraw(session: Session, course: Course, invitation_id: int) -> StaffInvitation:
    """Delete an invitation of ``course`` (its instructor takes it back; flush only)."""
    invitation = _get(session, invitation_id)
    if invitation is None or invitation.course_id != course.id:
        raise NotFound(f"invitation: {course.code} has no pending invitation {invitation_id}")
    session.delete(invitation)
    session.flush()
    return invitation

