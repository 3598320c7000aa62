"""gunicorn's access log without secrets (``nabla serve`` passes ``--logger-class`` and
``--access-logformat``).

gunicorn's default format logs the request line (``%(r)s``) with its query string,
and a path like ``/set-password/inv_...`` carries a token that sets the password of
an account that has none yet: anyone who reads the log could replay it. So:

* ``ACCESS_LOG_FORMAT`` logs ``%(m)s %(U)s %(H)s``, the method, the path without
  the query string and the protocol, instead of ``%(r)s``;
* ``AccessLogger`` redacts every atom of a line: a set-password path becomes
  ``/set-password/[redacted]``, a set-password or API token anywhere
  (``inv_...``, ``nabla_...``, say in a Referer or a header atom) ``inv_[redacted]``,
  the request line (``%(r)s``), the Referer (``%(f)s``) and every header or
  environ atom that holds a URL lose their query strings, and the query atoms
  (``%(q)s``, ``{query_string}e``) are empty, so that a format written by hand
  cannot bring them back.

(The set-password view also exchanges the token for a session step at once and
redirects to ``/set-password``: server.web.auth.)
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'
REDACTED = "[redacted]"
_TOKEN_PATH = re.compile(r"(/set-password/)[^/?#\s\"]+")
_TOKEN = re.compile(r"\b(inv_|nabla_)[A-Za-z0-9_-]+")
# Header and environ atoms that hold a URL (their names are lower-cased by gunicorn).
_URL_ATOMS = ("uri", "url", "referer", "location", "path")


def redact(text: str) -> str:
    """``text`` with set-password paths and tokens replaced by ``[redacted]``."""
    return _TOKEN.sub(rf"\g<1>{REDACTED}", _TOKEN_PATH.sub(rf"\g<1>{REDACTED}", text))


def _without_query(text: str) -> str:
    return text.split("?", 1)[0]


class AccessLogger(Logger):
    """gunicorn's logger, with the access log's atoms redacted (see the module)."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any
              ) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        path = environ.get("PATH_INFO") or "/"
        atoms["U"] = path
        atoms["r"] = f"{atoms['m']} {path} {atoms['H']}"
        atoms["f"] = _without_query(atoms["f"])
        for name, value in atoms.items():
            if not isinstance(value, str):
                continue
            if name == "q" or "query" in name:  # %(q)s, {query_string}e
                value = ""
            elif any(word in name for word in _URL_ATOMS):  # {raw_uri}e, {referer}i ...
                value = _without_query(value)
            atoms[name] = redact(value)
        return atoms
