"""Nabla: an auto-grading exercise server for backpropagation problems.

This module stays import-light on purpose: the sandbox worker and the pure
engine import ``server.*`` modules and must not pull in Flask or SQLAlchemy.
"""


def create_app(config=None):
    """Flask application factory (``gunicorn 'server:create_app()'``)."""
    from server.web.app import build_app

    app = build_app(config)
    if config is None:  # a real server (gunicorn, `nabla run`), not a test's app
        from server.judge import prestart

        prestart()  # the judge's zygote imports numpy and sympy: not on the first request
        from server.web.background import start_recovery_looks

        start_recovery_looks(app)  # starts recovery jobs for what a dead process left pending
    return app
