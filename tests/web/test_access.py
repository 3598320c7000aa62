"""Every route declares who may use it (see server/web/access.py)."""

import pytest

from server.web.access import ACCESS_ATTRIBUTE

pytestmark = pytest.mark.usefixtures("db_backend")


def test_every_route_declares_its_access(app):
    undeclared = []
    declared = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        access = getattr(view, ACCESS_ATTRIBUTE, None)
        if access is None:
            undeclared.append(rule.rule)
        declared[rule.endpoint] = access
    assert undeclared == []
    # spot checks that the declarations are the intended ones
    assert declared["auth.login"] == "public"
    assert declared["student.dashboard"] == "login"
    assert declared["staff.course"] == "role:ta,instructor"
    assert declared["instructor.new_assignment"] == "role:instructor"
    assert declared["api.assignments"] == "token"
    for endpoint in ("student.problem", "student.submit", "student.submission",
                     "student.values_json", "student.values_npz"):
        assert declared[endpoint] == "login", endpoint
    for endpoint in ("api.problem", "api.submit", "api.submission", "api.problem_submissions"):
        assert declared[endpoint] == "token", endpoint
    for endpoint in ("staff.submissions", "staff.submission"):
        assert declared[endpoint] == "role:ta,instructor", endpoint


def test_every_api_route_uses_tokens_but_the_document_describing_them(app):
    public = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            access = getattr(app.view_functions[rule.endpoint], ACCESS_ATTRIBUTE)
            if access == "public":
                public.append(rule.rule)
            else:
                assert access == "token", rule.rule
    assert public == ["/api/v1/openapi.json"]  # the OpenAPI document: nobody's data


def test_every_staff_route_is_per_course(app):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/staff/", "/instructor/")):
            view = app.view_functions[rule.endpoint]
            assert getattr(view, ACCESS_ATTRIBUTE).startswith("role:"), rule.rule
            assert "<course_code>" in rule.rule
