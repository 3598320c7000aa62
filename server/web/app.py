"""The Flask application: configuration, database, login, CSRF, blueprints."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, Request, Response, abort, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import BadRequest, HTTPException, NotFound
from werkzeug.routing import IntegerConverter, ValidationError

from server import db
from server.config import PACKAGE_DIR, load_settings, parse_rate
from server.engine.render import statement_html
from server.models.base import MAX_ROW_ID
from server.services.errors import Unavailable
from server.services.limits import CountersUnavailable, Limiter, Rate, make_limiter
from server.web.access_log import redact

csrf = CSRFProtect()
LIMITER_EXTENSION = "nabla_limiter"
RATE_SETTINGS = ("NABLA_SUBMIT_RATE", "NABLA_CHECK_RATE", "NABLA_LOGIN_RATE",
                 "NABLA_LOGIN_ADDRESS_RATE")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # No inline scripts, no third-party origins: every asset is served from here.
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; frame-ancestors 'none'",
}


class RowIdConverter(IntegerConverter):
    """``<int:...>`` in this app: at most 2**31 - 1, the range of an INTEGER key on
    every backend. A larger number in a URL is a 404, not a database error.

    The 404 is raised here rather than by refusing the match (werkzeug's
    ValidationError): werkzeug checks a rule's methods before its converters, so a
    refused match where another method has a rule of the same path (GET and POST
    ``.../submissions``) was answered 405, "method not allowed", for an allowed method.
    No rule has a string where another has an ``<int:...>``, so no other rule could
    have matched (tests/web/test_api_grading.py)."""

    def __init__(self, map: Any, fixed_digits: int = 0, min: int | None = None,
                 max: int | None = None, signed: bool = False) -> None:
        super().__init__(map, fixed_digits, min, MAX_ROW_ID if max is None else max, signed)

    def to_python(self, value: str) -> Any:
        try:
            return super().to_python(value)
        except ValidationError:
            raise NotFound(f"id: {value} is beyond every id (at most {self.max})") from None


def is_digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes ``'²'``, which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def query_id(name: str) -> int | None:
    """The query parameter ``name`` as a row id, as ``<int:...>`` in a path: None when it
    is absent or empty (a filter form's "all"); a 400 naming it when it is not a whole
    number; a 404 beyond every id."""
    raw = request.args.get(name) or None
    if raw is None:
        return None
    if not is_digits(raw):
        abort(400, f"{name}: {raw!r} is not a number")
    if int(raw) > MAX_ROW_ID:
        abort(404, f"{name}: there is no {name} {raw}")
    return int(raw)


class NablaRequest(Request):
    """A JSON body nested deeper than Python's recursion limit (100 000 ``[``) makes
    the json module raise RecursionError, which is not a ValueError: werkzeug lets
    it through as a 500, even with ``silent=True``. It is a 400 here, for every
    view that reads JSON (the API, and Flask-WTF forms, which read a JSON body)."""

    def get_json(self, force: bool = False, silent: bool = False,
                 cache: bool = True) -> Any:
        try:
            return super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            raise BadRequest("body: the JSON is nested too deeply to be read; "
                             'send a JSON object {"answer": "..."}') from None


def limiter() -> Limiter:
    """The app's shared counters (database or Redis; server.services.limits)."""
    return current_app.extensions[LIMITER_EXTENSION]


def rate(name: str) -> Rate | None:
    """A rate setting (NABLA_SUBMIT_RATE, ...) of the current app; None: no limit."""
    value = current_app.config[name]
    return None if value is None else Rate(*value)


def build_app(config: dict[str, Any] | None = None) -> Flask:
    """Create the app. ``config`` overrides settings read from the environment.

    Raises ``server.db.SchemaOutOfDate`` when the database is behind the
    migrations: the app refuses to serve it.
    """
    settings = load_settings(overrides=config)

    for name in RATE_SETTINGS:  # a config override may be written "20/minute" too
        if isinstance(settings.get(name), str):
            settings[name] = parse_rate(name, settings[name])

    app = Flask(
        "server",
        instance_path=settings["INSTANCE_PATH"],
        root_path=str(PACKAGE_DIR),
        template_folder="templates",
        static_folder="static",
    )
    app.config.update(settings)
    app.request_class = NablaRequest
    app.url_map.converters["int"] = RowIdConverter  # before any route is added
    proxies = int(app.config.get("NABLA_PROXIES", 0))
    if proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]

    db.init_app(app)
    if app.config.get("NABLA_CHECK_SCHEMA", True):
        engine = db.get_engine(app)
        try:
            db.check_schema_current(engine)
        except Exception:
            engine.dispose()
            raise
    app.extensions[LIMITER_EXTENSION] = make_limiter(
        db.get_engine(app), app.config.get("NABLA_REDIS_URL"),
        app.config.get("NABLA_REDIS_PREFIX", "nabla:"))

    from server.web.extensions import init_login

    init_login(app)
    csrf.init_app(app)
    _register_blueprints(app)
    _register_template_helpers(app)
    _register_error_handlers(app)
    app.before_request(_refuse_nul_characters)
    app.after_request(_security_headers)
    return app


def _register_blueprints(app: Flask) -> None:
    from server.web import (
        analytics,
        api,
        api_problems,
        auth,
        gradebook,
        instructor,
        openapi,
        staff,
        staff_problems,
        student,
    )

    app.register_blueprint(auth.bp)
    app.register_blueprint(student.bp)
    app.register_blueprint(staff.bp)
    app.register_blueprint(instructor.bp)
    app.register_blueprint(staff_problems.bp)
    app.register_blueprint(gradebook.bp)
    app.register_blueprint(analytics.bp)
    csrf.exempt(api.bp)  # token-authenticated, no cookies: CSRF does not apply
    app.register_blueprint(api.bp)
    csrf.exempt(api_problems.bp)
    app.register_blueprint(api_problems.bp)
    app.register_blueprint(openapi.bp)  # GET /api/v1/openapi.json, public
    # The static view is public (declared here, since Flask creates it).
    from server.web.access import public

    public(app.view_functions["static"])

    def favicon() -> Response:
        # Browsers that ignore <link rel="icon"> ask for /favicon.ico: no 404 in the log.
        return app.send_static_file("favicon.svg")

    app.add_url_rule("/favicon.ico", "favicon", public(favicon))


def _register_template_helpers(app: Flask) -> None:
    zone = ZoneInfo(app.config["NABLA_TIMEZONE"])

    def localtime(value: dt.datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        if value is None:
            return "—"
        local = value.astimezone(zone)
        return f"{local.strftime(fmt)} {local.tzname() or ''}".rstrip()

    def has_endpoint(name: str) -> bool:
        # Lets templates link to pages other blueprints may or may not provide
        # yet (e.g. the student problem page, "student.problem").
        return name in app.view_functions

    def percent(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.0f}%"

    app.jinja_env.filters["localtime"] = localtime
    app.jinja_env.filters["percent"] = percent
    app.jinja_env.filters["statement_html"] = statement_html
    app.jinja_env.globals["timezone_name"] = app.config["NABLA_TIMEZONE"]
    app.jinja_env.globals["has_endpoint"] = has_endpoint


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> tuple[str, int]:
        message = (
            "The form could not be accepted: its security token is missing or expired "
            f"({error.description}). Go back, reload the page and send it again."
        )
        return render_template("error.html", code=400, title="Form expired", message=message), 400

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = error.code or 500
        if _wants_json():
            response = jsonify(error=error.description)
            response.status_code = code
            if code == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="nabla"'
            return response
        return (
            render_template("error.html", code=code, title=error.name, message=error.description),
            code,
        )

    @app.errorhandler(Unavailable)
    def unavailable(error: Unavailable) -> Any:
        """A service that cannot do it now (a busy spec checker, a problem that cannot be
        drawn): 503 with the service's message and Retry-After; nothing was done."""
        return _busy_response(str(error))

    @app.errorhandler(CountersUnavailable)
    def counters_unavailable(error: CountersUnavailable) -> Any:
        app.logger.error("rate counters unavailable on %s %s: %s", request.method,
                         redact(request.path), error.__cause__)
        return _busy_response(str(error))

    @app.errorhandler(Exception)
    def server_error(error: Exception) -> Any:
        if app.debug:
            raise error  # `nabla run`: show the interactive debugger
        if db.is_busy_error(error):
            # SQLite waited its busy timeout for the write lock: a load spike,
            # not a bug. Say so, and let the client retry.
            app.logger.warning("database busy on %s %s", request.method, redact(request.path))
            return _busy_response("The server is busy; nothing was saved. "
                                  "Try again in a moment.")
        if db.is_connection_error(error):
            # PostgreSQL restarting: the pool reconnects on the next request.
            app.logger.warning("database unreachable on %s %s: %s", request.method,
                               redact(request.path), error.orig)
            return _busy_response("The database cannot be reached for a moment; try again. "
                                  "An answer sent just now may have been stored: your "
                                  "submissions show it, and sending it again with the same "
                                  "form (or Idempotency-Key) stores it once.")
        app.logger.exception("unhandled error on %s %s", request.method, redact(request.path))
        message = "Something went wrong on the server; the error was logged."
        if _wants_json():
            return jsonify(error=message), 500
        return render_template("error.html", code=500, title="Server error", message=message), 500


def _busy_response(message: str) -> Response:
    """503 with Retry-After: our side cannot do it now, and nothing was done."""
    if _wants_json():
        response = jsonify(error=message)
    else:
        response = current_app.make_response(
            render_template("error.html", code=503, title="Busy", message=message))
    response.status_code = 503
    response.headers["Retry-After"] = "2"
    return response


# Fields whose services check NUL characters themselves and show the text back.
NUL_CHECKED_BY_SERVICES = frozenset({"answer"})


def _refuse_nul_characters() -> None:
    """PostgreSQL text cannot hold a NUL character: refuse one in the URL, the query
    string or a form at the door, naming the field, instead of failing in the database."""
    if "\x00" in request.path:
        abort(404, "There is no such page (the address contains a NUL character).")
    for values in (request.args, request.form):
        for key, value in values.items(multi=True):
            if key not in NUL_CHECKED_BY_SERVICES and ("\x00" in key or "\x00" in value):
                abort(400, f"{key.replace(chr(0), '?')}: contains a NUL character (\\x00)")


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
