"""The site's own address, for absolute links made for someone else.

A link that the server hands to one person to pass on to another (the
set-password links of a roster import) must point to this site whatever the
request said. The Host header is the client's to choose: a roster import sent
with ``Host: evil.example`` used to produce ``http://evil.example/set-password/...``,
links that would hand the students' new accounts to whoever runs evil.example.
``site_url()`` is where every such link starts:

* ``NABLA_BASE_URL`` when it is set (checked when the app starts:
  ``server.config.base_url``);
* otherwise only for the loopback demo: a server that `nabla serve` (or `nabla run`)
  bound to a loopback address (``NABLA_LOOPBACK_BIND``, set by the command itself),
  with no proxies in front (``NABLA_PROXIES`` is 0), visited at a loopback name
  (``127.0.0.1``, ``localhost``, ``::1``). The links then start with the bound
  address (``http://127.0.0.1:5000`` for ``make demo``), never the Host header,
  which can only make the check fail;
* otherwise ``SiteAddressUnknown``: a clear refusal naming ``NABLA_BASE_URL``.

Links a page makes for the person reading it (``url_for`` without
``_external``) stay relative and need none of this.
"""

from __future__ import annotations

from flask import current_app, request

from server.config import BASE_URL_MISSING, is_loopback_host
from server.services.errors import Unavailable


class SiteAddressUnknown(Unavailable):
    """No NABLA_BASE_URL, and not the loopback demo."""

    def __init__(self) -> None:
        super().__init__(BASE_URL_MISSING)


def site_url() -> str:
    """The start of an absolute link to this site, without a trailing slash."""
    config = current_app.config
    if config.get("NABLA_BASE_URL"):
        return str(config["NABLA_BASE_URL"])
    bind = config.get("NABLA_LOOPBACK_BIND")
    if bind and not config.get("NABLA_PROXIES") and is_loopback_host(request.host):
        return f"http://{bind}"
    raise SiteAddressUnknown()
