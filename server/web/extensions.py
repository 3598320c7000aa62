"""The Flask extensions' module-level objects, bound to the app in ``create_app``.

Here, not in a blueprint's module, so that any module may use them without
importing a blueprint (``access`` needs the login manager; ``auth`` needs
``access``).
"""

from __future__ import annotations

from flask import Flask
from flask_login import LoginManager

from server.db import get_session
from server.services import accounts

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see this page."
login_manager.session_protection = "basic"


def init_login(app: Flask) -> None:
    login_manager.init_app(app)


@login_manager.user_loader
def _load_user(login_id: str):  # noqa: ANN202  (Flask-Login's protocol)
    return accounts.load_user_for_login_session(get_session(), login_id)
