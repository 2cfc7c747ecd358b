"""Errors a connector raises. Messages never carry an upstream URL, a secret or personal data."""

from __future__ import annotations

from .models import System


class UpstreamError(Exception):
    """Base: something went wrong talking to one departmental system."""

    def __init__(self, system: System, reason: str) -> None:
        super().__init__(f"{system.value}: {reason}")
        self.system = system
        self.reason = reason


class UpstreamUnavailable(UpstreamError):
    """The system failed, timed out, shed load (503/429 past the budget) or answered garbage, or
    the gateway did not call it (its circuit breaker is open, or the request's deadline is spent).

    ``kind`` is a short machine word for metrics and ``extensions.sources``:
    ``timeout`` (also: no time left in the request's deadline), ``unreachable``, ``overloaded``,
    ``rate_limited``, ``error``, ``bad_response``, ``circuit_open`` (failing fast: the system failed
    repeatedly and is given a rest), ``unauthorized`` (our credentials were refused: an operator
    problem, not the caller's).
    """

    def __init__(self, system: System, kind: str) -> None:
        super().__init__(system, kind)
        self.kind = kind


class UpstreamNotFound(UpstreamError):
    """A single-object read or a write named an object the system does not know (404)."""


class UpstreamConflict(UpstreamError):
    """A write carried a stale version (412 precondition_failed / 409 conflict)."""


class UpstreamInvalid(UpstreamError):
    """The system refused a write's values (400 / 422); ``fields`` maps field → reason."""

    def __init__(self, system: System, reason: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(system, reason)
        self.fields = fields or {}
