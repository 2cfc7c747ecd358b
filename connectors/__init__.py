"""One async client per departmental system; each absorbs its system's quirks and speaks the
domain objects of ``connectors.models``, failing only with the errors of ``connectors.errors``."""

from .contracts import ContractsConnector
from .errors import UpstreamConflict, UpstreamError, UpstreamInvalid, UpstreamNotFound, UpstreamUnavailable
from .resilience import BreakerState, CircuitBreaker, deadline_scope, set_deadline, time_left
from .sales import SalesConnector
from .support import SupportConnector

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "ContractsConnector",
    "SalesConnector",
    "SupportConnector",
    "UpstreamConflict",
    "UpstreamError",
    "UpstreamInvalid",
    "UpstreamNotFound",
    "UpstreamUnavailable",
    "deadline_scope",
    "set_deadline",
    "time_left",
]
