"""Errors that services raise for bad input; views turn them into messages.

Every message names the field and the reason, so a view can show it as is
(flash, form error, or ``{"error": ...}``) and never needs a 500.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a request the service refuses, with a message for the user."""


class ValidationError(ServiceError):
    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class NotFound(ServiceError):
    pass


class Forbidden(ServiceError):
    pass


class Conflict(ServiceError):
    pass


class Unavailable(ServiceError):
    """Our side cannot do it now (a broken problem spec): not the user's fault."""
