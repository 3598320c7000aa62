"""What the API's answers are held to against the OpenAPI document (server/web/openapi.py):
by the fuzzer (test_api_fuzz.py) and by the tests of the answers it rarely gets
(test_openapi.py). Schemathesis's checks, by name."""

from __future__ import annotations

import re
from typing import Any

# A response: not a 5xx; its status is documented for the operation; its Content-Type,
# its required headers (Retry-After on a 429, Location on a 201, WWW-Authenticate on a
# 401) and its body are as documented for that status.
CONFORMANCE = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
               "response_headers_conformance", "response_schema_conformance")
# And a request the document says is wrong (a generated negative case) is refused: a 4xx.
# 413 is a refusal too here (an answer over its length limit), which schemathesis's
# default list leaves out.
REJECTION_STATUSES = ("400", "401", "403", "404", "405", "409", "413", "422", "429")


def checks_config() -> dict[str, Any]:
    """The ``checks`` table of a schemathesis configuration: these checks and no other."""
    return {"enabled": False, **{name: {"enabled": True} for name in CONFORMANCE},
            "negative_data_rejection": {"enabled": True,
                                        "expected-statuses": list(REJECTION_STATUSES)}}


def conforms(schema: Any, template: str, response: Any) -> None:
    """Raise (schemathesis's failures, each named) unless ``response`` (a test client's)
    conforms to the document's operation ``template`` (its path) for the request's method.
    A documented 5xx (a 503) conforms: the caller asserts the status it expects."""
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    request = response.request
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    match = re.fullmatch(pattern, request.path)
    assert match, f"{request.path} is not {template}"
    case = schema[template][request.method].Case(path_parameters=match.groupdict())
    checks = [name for name in CONFORMANCE if name != "not_a_server_error"]
    case.validate_response(response, checks=CHECKS.get_by_names(checks))
