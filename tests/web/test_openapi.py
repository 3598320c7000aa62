"""The OpenAPI document (server/web/openapi.py): every /api/v1 route of the app is in it
and everything in it is a route; it is valid OpenAPI 3.1 and served without a token; and
the answers a fuzzer rarely or never sees (429, 413, 409, a judge's or Redis's 503, 401)
match it. The fuzzing against a live server: test_api_fuzz.py."""

from __future__ import annotations

import re

import pytest

from server.services import tokens
from server.web.openapi import document

from .openapi_checks import conforms

METHODS_NOT_DOCUMENTED = {"HEAD", "OPTIONS"}  # Flask answers these for every route
CONVERTER_TYPES = {"int": "integer", "default": "string"}
FLASK_VARIABLE = re.compile(r"<(?:(\w+):)?(\w+)>")


def flask_to_openapi(rule: str) -> tuple[str, dict[str, str]]:
    """``/a/<int:x>/<y>`` -> (``/a/{x}/{y}``, {x: "int", y: "default"})."""
    converters = {name: converter or "default" for converter, name in FLASK_VARIABLE.findall(rule)}
    return FLASK_VARIABLE.sub(r"{\2}", rule), converters


@pytest.fixture(scope="module")
def bare_app(tmp_path_factory):
    """The app without a database: its URL map is all these tests read."""
    from server import create_app

    return create_app({"TESTING": True, "DATABASE_URL": "sqlite://", "NABLA_CHECK_SCHEMA": False,
                       "SECRET_KEY": "openapi-test-" + "x" * 32,
                       "INSTANCE_PATH": str(tmp_path_factory.mktemp("instance"))})


def api_routes(app) -> dict[tuple[str, str], dict[str, str]]:
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path, converters = flask_to_openapi(rule.rule)
            for method in sorted(rule.methods - METHODS_NOT_DOCUMENTED):
                routes[method, path] = converters
    return routes


def documented_operations() -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): operation
            for path, item in document()["paths"].items() for method, operation in item.items()}


def resolved(item: dict) -> dict:
    """A ``$ref`` of the document, followed (one level: parameters do not nest)."""
    if "$ref" not in item:
        return item
    node = document()
    for part in item["$ref"].removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_flask_rules_map_to_openapi_paths():
    assert flask_to_openapi("/api/v1/assignments/<int:assignment_id>/problems/<problem_id>") == (
        "/api/v1/assignments/{assignment_id}/problems/{problem_id}",
        {"assignment_id": "int", "problem_id": "default"})


def test_every_api_route_is_documented_and_every_documented_operation_is_a_route(bare_app):
    routes, documented = api_routes(bare_app), documented_operations()
    assert sorted(set(routes) - set(documented)) == [], "routes missing from the document"
    assert sorted(set(documented) - set(routes)) == [], "documented operations with no route"
    assert len(routes) >= 13


def test_path_parameters_are_the_routes_variables_with_their_converters_types(bare_app):
    for (method, path), converters in api_routes(bare_app).items():
        operation = documented_operations()[method, path]
        parameters = [resolved(p) for p in operation.get("parameters", [])]
        in_path = {p["name"]: p for p in parameters if p["in"] == "path"}
        assert set(in_path) == set(converters), (method, path)
        for name, converter in converters.items():
            assert in_path[name]["required"] is True, (method, path, name)
            assert in_path[name]["schema"]["type"] == CONVERTER_TYPES[converter], (path, name)


def test_the_document_is_valid_openapi_3_1_and_every_operation_says_its_errors():
    import schemathesis

    doc = document()
    assert doc["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(doc).validate()  # raises on an invalid document
    for (method, path), operation in documented_operations().items():
        if operation.get("security") == []:  # the document itself
            continue
        assert {"401", "503"} <= set(operation["responses"]), (method, path)
        if "requestBody" in operation:
            assert {"400", "413"} <= set(operation["responses"]), (method, path)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}


def test_the_document_is_served_without_a_token(bare_app):
    response = bare_app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.is_json
    assert response.json == document()


# --- answers the fuzzer rarely or never gets, checked against the document -------------------


@pytest.fixture(scope="module")
def api_schema():
    import schemathesis

    return schemathesis.openapi.from_dict(document())


@pytest.fixture
def fake_bank(engine_bank):
    return engine_bank


@pytest.fixture
def app_settings():
    return {"NABLA_SUBMIT_RATE": "3/minute", "NABLA_CHECK_RATE": "1/minute",
            "MAX_CONTENT_LENGTH": 30_000}


@pytest.fixture
def course(app_session, make_user, make_course, make_assignment):
    student = make_user(app_session, "student1@example.edu", "Student One")
    ta = make_user(app_session, "ta@example.edu", "Tess Assistant")
    course = make_course(app_session, "CS101", members={student: "student", ta: "ta"})
    hw = make_assignment(app_session, course, "Homework 1", max_attempts=1,
                         problems=("mlp-relu",))
    student_token = tokens.create_token(app_session, student, "tests")[1]
    ta_token = tokens.create_token(app_session, ta, "tests")[1]
    app_session.commit()
    return {"problem": f"/api/v1/assignments/{hw.id}/problems/mlp-relu",
            "student": {"Authorization": f"Bearer {student_token}"},
            "ta": {"Authorization": f"Bearer {ta_token}"}}


PROBLEM = "/api/v1/assignments/{assignment_id}/problems/{problem_id}"


@pytest.mark.usefixtures("db_backend")
def test_rare_answers_of_the_submission_and_check_routes_are_as_documented(
        client, course, api_schema, engine_bank):
    from server.engine.problem import draw, model_answer

    submit, check = course["problem"] + "/submissions", course["problem"] + "/check"
    answer = model_answer(engine_bank["mlp-relu"], draw(engine_bank["mlp-relu"], 0))
    no_token = client.post(submit, json={"answer": answer})
    assert no_token.status_code == 401
    conforms(api_schema, PROBLEM + "/submissions", no_token)

    too_long = client.post(submit, json={"answer": "x" * 20_001}, headers=course["student"])
    too_large = client.post(submit, json={"answer": "x" * 40_000}, headers=course["student"])
    assert (too_long.status_code, too_large.status_code) == (413, 413)
    graded = client.post(submit, json={"answer": answer}, headers=course["student"])
    refused = client.post(submit, json={"answer": answer}, headers=course["student"])
    assert (graded.status_code, refused.status_code) == (201, 409)  # one attempt
    assert refused.json["submission"]["status"] == "refused"
    again = client.post(submit, json={"answer": answer}, headers=course["student"])
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > 0
    for response in (too_long, too_large, graded, refused, again):
        conforms(api_schema, PROBLEM + "/submissions", response)

    checked = client.post(check, json={"answer": "dz7 = doutput"}, headers=course["student"])
    over = client.post(check, json={"answer": "dz7 = doutput"}, headers=course["student"])
    assert (checked.status_code, over.status_code) == (200, 429)
    for response in (checked, over):
        conforms(api_schema, PROBLEM + "/check", response)


@pytest.mark.usefixtures("db_backend")
@pytest.mark.parametrize("app_settings", [{"NABLA_REDIS_URL": "redis://127.0.0.1:1/0"}])
def test_unreachable_rate_counters_are_a_documented_503(client, course, api_schema,
                                                        app_settings):
    response = client.post(course["problem"] + "/submissions", json={"answer": "dz7 = doutput"},
                           headers=course["student"])
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    conforms(api_schema, PROBLEM + "/submissions", response)


@pytest.mark.usefixtures("db_backend")
def test_a_judge_that_gives_up_is_a_documented_503_with_the_stored_submission(
        client, course, api_schema, monkeypatch):
    import server.judge
    from server.judge import JudgeError

    def gives_up(*args, **kwargs):
        raise JudgeError("timeout", "took too long")

    # the grading gives up; the instance is still drawn by the real judge
    monkeypatch.setattr(server.judge, "grade", gives_up)
    response = client.post(course["problem"] + "/submissions", json={"answer": "dz7 = doutput"},
                           headers=course["student"])
    assert response.status_code == 503 and response.json["submission"]["status"] == "error"
    conforms(api_schema, PROBLEM + "/submissions", response)
    checked = client.post(course["problem"] + "/check", json={"answer": "dz7 = doutput"},
                          headers=course["student"])
    assert checked.status_code == 503 and "took too long" in checked.json["error"]
    conforms(api_schema, PROBLEM + "/check", checked)


@pytest.mark.usefixtures("db_backend")
def test_a_refused_spec_and_a_shared_problem_are_documented_answers(client, course, api_schema):
    template = "/api/v1/courses/{code}/problems/{spec_id}"
    bad = client.put("/api/v1/courses/CS101/problems/new-one", json={"spec": "id = 'other'"},
                     headers=course["ta"])
    shared = client.put("/api/v1/courses/CS101/problems/mlp-relu", json={"spec": "id = 'x'"},
                        headers=course["ta"])
    student = client.put("/api/v1/courses/CS101/problems/new-one", json={"spec": "id = 'x'"},
                         headers=course["student"])
    assert (bad.status_code, shared.status_code, student.status_code) == (422, 403, 403)
    assert bad.json["errors"] and "line" in bad.json["errors"][0]
    for response in (bad, shared, student):
        conforms(api_schema, template, response)
