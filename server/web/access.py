"""Who may use a route, declared on the route itself.

Every view carries one of these decorators, and a test walks the URL map to
check that none is missing:

* ``@public`` — anyone (login page, static files);
* ``@login_required`` — any logged-in user (dashboard, profile);
* ``@role_required("ta", "instructor")`` — for routes under ``<course_code>``:
  the user's enrollment role in that course must be one of these (site admins
  pass everywhere); the view receives ``course=`` and ``g.course_role`` is set;
* ``@token_required`` — the JSON API: ``Authorization: Bearer <token>``; the
  view reads the user from ``g.api_user``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, g, request
from flask_login import current_user

from server.db import get_session
from server.models import ROLE_VALUES
from server.web.extensions import login_manager

F = TypeVar("F", bound=Callable[..., Any])
ACCESS_ATTRIBUTE = "nabla_access"


def _declare(view: Callable[..., Any], access: str) -> None:
    setattr(view, ACCESS_ATTRIBUTE, access)


def public(view: F) -> F:
    _declare(view, "public")
    return view


def login_required(view: F) -> F:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        return view(*args, **kwargs)

    _declare(wrapped, "login")
    return wrapped  # type: ignore[return-value]


def role_required(*roles: str) -> Callable[[F], F]:
    unknown = [role for role in roles if role not in ROLE_VALUES]
    if unknown or not roles:
        raise ValueError(f"role_required: unknown roles {unknown}; use {ROLE_VALUES}")

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, course_code: str, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            from server.services.courses import get_course, role_in_course

            session = get_session()
            course = get_course(session, course_code)
            if course is None:
                abort(404, f"There is no course {course_code}.")
            role = role_in_course(session, current_user, course)
            if role is None and not current_user.is_admin:
                # Not enrolled: do not reveal whether the course exists.
                abort(404, f"There is no course {course_code}.")
            if role not in roles and not current_user.is_admin:
                abort(403, f"This page is for the course's {' and '.join(roles)} only.")
            g.course = course
            g.course_role = role
            return view(*args, course=course, **kwargs)

        _declare(wrapped, "role:" + ",".join(roles))
        return wrapped  # type: ignore[return-value]

    return decorator


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_required(view: F) -> F:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        from server.services.tokens import user_for_token

        token = bearer_token()
        if token is None:
            abort(401, "Send a personal API token: 'Authorization: Bearer <token>' "
                       "(create one on your profile page).")
        user = user_for_token(get_session(), token)
        if user is None:
            abort(401, "The API token is unknown or revoked.")
        g.api_user = user
        return view(*args, **kwargs)

    _declare(wrapped, "token")
    return wrapped  # type: ignore[return-value]


def end_transaction() -> None:
    """Commit the request's transaction now, before rendering a page.

    On SQLite a transaction that writes holds the database's single write lock
    (see server.db; a GET that drew an instance, or a POST), and rendering a
    page can take longer than its queries: ending the transaction first lets
    other requests (a submission) proceed meanwhile. A reader's transaction
    holds no lock, but its snapshot keeps the WAL from being checkpointed.
    Load what the template needs before calling this; a lazy load while
    rendering would open a new transaction.
    """
    get_session().commit()
