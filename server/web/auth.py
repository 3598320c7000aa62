"""Login, logout and the profile page (password, API tokens)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask import session as flask_session
from flask_login import current_user, login_user, logout_user
from werkzeug.urls import iri_to_uri
from werkzeug.wrappers import Response

from server.db import get_session, reads_first
from server.services import accounts, tokens
from server.services.errors import ServiceError, ValidationError
from server.web.access import login_required, public
from server.web.app import limiter, rate
from server.web.forms import (
    ChangePasswordForm,
    ConfirmForm,
    LoginForm,
    NewTokenForm,
    SetPasswordForm,
)

bp = Blueprint("auth", __name__)
# Browsers drop tabs and newlines anywhere in a URL and read a backslash as a
# slash: "/\t/evil" and "/\\evil" both mean //evil, another site.
_UNSAFE_IN_NEXT = re.compile(r"[\x00-\x1f\x7f\\]")


def safe_next(target: str | None) -> str | None:
    """The Location to send for ``next``: a path on this site, or None.

    The value checked is the final one, as werkzeug will send it
    (``iri_to_uri``, which itself drops tabs and newlines as urlsplit does):
    no control characters or backslashes before or after, no scheme, no host,
    one leading slash (before and after: iri_to_uri turns "///x" into "/x").
    """
    if not target or _UNSAFE_IN_NEXT.search(target) or target.startswith("//"):
        return None
    final = iri_to_uri(target)
    if _UNSAFE_IN_NEXT.search(final):
        return None
    parts = urlsplit(final)
    if parts.scheme or parts.netloc or not final.startswith("/") or final.startswith("//"):
        return None
    return final


def login_rates() -> accounts.LoginRates:
    defaults = accounts.LoginRates()  # settings given in code may leave one out (None)
    return accounts.LoginRates(rate("NABLA_LOGIN_RATE") or defaults.per_email_and_address,
                               rate("NABLA_LOGIN_ADDRESS_RATE") or defaults.per_address)


@bp.route("/login", methods=["GET", "POST"])
@public
@reads_first  # a login writes only to rehash a password (the throttle counts elsewhere)
def login() -> Response | tuple[str, int, dict[str, str]]:
    if current_user.is_authenticated:
        return redirect(url_for("student.dashboard"))
    form = LoginForm(next=request.args.get("next", ""))
    status = 400 if form.is_submitted() else 200  # a field is missing or too long
    headers = {}
    if form.validate_on_submit():
        try:
            # request.remote_addr is the socket's peer, or with NABLA_PROXIES
            # the address the trusted proxies saw (ProxyFix): never a header
            # the client chose.
            user = accounts.authenticate(
                get_session(), form.email.data, form.password.data, limiter=limiter(),
                address=request.remote_addr, rates=login_rates())
        except accounts.LoginThrottled as exc:
            status = 429
            headers["Retry-After"] = str(exc.retry_after)
            form.password.errors.append(str(exc).removeprefix("password: "))
        else:
            if user is not None:
                login_user(user)
                return redirect(safe_next(form.next.data) or url_for("student.dashboard"))
            status = 401
            form.password.errors.append("The email or the password is not right.")
    return render_template("auth/login.html", form=form), status, headers


@bp.route("/logout", methods=["POST"])
@public
def logout() -> Response:
    # Logging out needs the form's CSRF token (so another site cannot log you
    # out), but no login: logging out twice is harmless. The session is a signed
    # cookie, so it ends on the server by a new session nonce: a copy of the
    # cookie taken before is refused from now on (as are the user's other
    # sessions: one nonce per user).
    if current_user.is_authenticated:
        accounts.end_sessions(get_session(), current_user)
    logout_user()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


def _render_profile(
    password_form: ChangePasswordForm | None = None,
    token_form: NewTokenForm | None = None,
    new_token: str | None = None,
    status: int = 200,
) -> tuple[str, int]:
    return (
        render_template(
            "auth/profile.html",
            password_form=password_form or ChangePasswordForm(formdata=None),
            token_form=token_form or NewTokenForm(formdata=None),
            tokens=tokens.active_tokens(get_session(), current_user),
            new_token=new_token,
        ),
        status,
    )


@bp.route("/profile")
@login_required
def profile() -> tuple[str, int]:
    return _render_profile()


@bp.route("/profile/password", methods=["POST"])
@login_required
def change_password() -> Response | tuple[str, int]:
    form = ChangePasswordForm()
    if form.validate_on_submit():
        try:
            accounts.change_password(
                get_session(), current_user, form.current_password.data, form.new_password.data
            )
        except ValidationError as exc:
            getattr(form, exc.field).errors.append(exc.reason)
        else:
            login_user(current_user._get_current_object())  # the session id has the new nonce
            flash("Your password was changed. Other sessions are logged out.")
            return redirect(url_for("auth.profile"))
    return _render_profile(password_form=form, status=400)


@bp.route("/profile/logout-everywhere", methods=["POST"])
@login_required
def logout_everywhere() -> Response:
    form = ConfirmForm()
    if form.validate_on_submit():
        accounts.end_sessions(get_session(), current_user)
        logout_user()
        flash("You are logged out everywhere.")
        return redirect(url_for("auth.login"))
    return redirect(url_for("auth.profile"))


@bp.route("/profile/tokens", methods=["POST"])
@login_required
def create_token() -> tuple[str, int]:
    form = NewTokenForm()
    if form.validate_on_submit():
        try:
            _, token = tokens.create_token(get_session(), current_user, form.name.data)
        except ValidationError as exc:
            form.name.errors.append(exc.reason)
        else:
            # Rendered, not redirected: the token is shown this once and never stored.
            return _render_profile(new_token=token, status=201)
    return _render_profile(token_form=form, status=400)


@bp.route("/profile/tokens/<int:token_id>/revoke", methods=["POST"])
@login_required
def revoke_token(token_id: int) -> Response:
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            row = tokens.revoke_token(get_session(), current_user, token_id)
        except ServiceError as exc:
            flash(str(exc), "error")
        else:
            flash(f"The token {row.name!r} is revoked.")
    return redirect(url_for("auth.profile"))


# The browser's set-password step (services.invites): {"invite": id, "nonce": ...}.
SET_PASSWORD_STEP = "set_password_step"


@bp.route("/set-password/<token>")
@public
def open_set_password_link(token: str) -> Response | tuple[str, int]:
    """A one-time link from an instructor (services.invites): exchanged at once for a
    set-password step kept in this browser's session, then a redirect to
    /set-password, so that the token is in no later request, Referer or history
    entry (and the access log redacts this path: server.web.access_log)."""
    from server.models import utcnow
    from server.services import invites
    from server.services.errors import NotFound

    try:
        invite, nonce = invites.open_invite(get_session(), token, utcnow())
    except NotFound as exc:
        return render_template("auth/set_password.html", form=None, error=str(exc)), 404
    flask_session[SET_PASSWORD_STEP] = {"invite": invite.id, "nonce": nonce}
    return redirect(url_for("auth.set_password"), 303)


@bp.route("/set-password", methods=["GET", "POST"])
@public
def set_password() -> Response | tuple[str, int]:
    """Choose a password, in the step a set-password link opened in this browser."""
    from server.models import utcnow
    from server.services import invites
    from server.services.errors import NotFound

    session = get_session()
    step = flask_session.get(SET_PASSWORD_STEP)
    invite_id, nonce = (step.get("invite"), step.get("nonce")) if isinstance(step, dict) \
        else (None, None)
    try:
        invite = invites.step_invite(session, invite_id, nonce, utcnow())
    except NotFound as exc:
        return render_template("auth/set_password.html", form=None, error=str(exc)), 404
    form = SetPasswordForm()
    if form.validate_on_submit():
        try:
            user = invites.redeem_step(session, invite_id, nonce, form.new_password.data,
                                       utcnow())
        except ValidationError as exc:
            form.new_password.errors.append(exc.reason)
        else:
            flask_session.pop(SET_PASSWORD_STEP, None)
            login_user(user)
            flash("Your password is set; you are logged in.")
            return redirect(url_for("student.dashboard"))
    email = invite.user.email
    return (render_template("auth/set_password.html", form=form, email=email, error=None),
            400 if form.is_submitted() else 200)
