"""What every resolver can reach through ``info.context``: who asks, and the request's loaders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from policies.guard import Guard
from policies.principal import Principal

from .errors import GraphError, Unauthenticated
from .loaders import Loaders

if TYPE_CHECKING:
    from features.history import CustomerHistory
    from features.identity.service import Identity
    from features.store import AccessRequests, AuditLog

    from .pool import PoolPort


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """A write (or a refused one) for the audit trail: before/after hold only the changed fields."""

    operation: str
    account_no: str
    before: Mapping[str, object] | None = None
    after: Mapping[str, object] | None = None
    denied: bool = False
    rule: str | None = None


# (caller's sub, account numbers) → account number → field → grant id, for the caller's live grants
GrantLookup = Callable[[str, list[str]], Awaitable[Mapping[str, Mapping[str, str]]]]


class Journal(Protocol):
    """The write journal (``features/store/intents.py``): a write's intent, committed before it is sent."""

    async def open(self, request_id: str, user_sub: str, operation: str, account_no: str | None) -> str: ...


class Evictor(Protocol):
    """The cross-request cache, as writes and change events see it."""

    def evict_customer(
        self, account_no: str, *, email: str | None = None, tax_id: str | None = None, publish: bool = True
    ) -> None: ...


@dataclass(slots=True)
class RequestContext:
    loaders: Loaders
    principal: Principal | None
    guard: Guard | None
    request_id: str
    now: datetime
    max_first: int = 100
    auth_error: str | None = None  # why a token that was sent was refused
    grant_lookup: GrantLookup | None = None
    cache: Evictor | None = None
    operation_name: str | None = None  # set when execution starts (OperationFacts)
    operation_type: str = "query"
    # writes the request's audit records; False when the store failed (the answer is then withheld)
    audit_recorder: Callable[[RequestContext], Awaitable[bool]] | None = None
    access: AccessRequests | None = None  # access requests and grants (features/store/access.py)
    audit_log: AuditLog | None = None  # the audit trail, for auditLog (features/store/audit.py)
    pool: PoolPort | None = None  # the public pool's rules and history (features/pool)
    identity: Identity | None = None  # who is who: support identities, duplicates (features/identity)
    history: CustomerHistory | None = None  # one timeline per customer (features/history.py)
    privacy: object | None = None  # a data subject's requests (schema/privacy.py DataRequestsPort)
    writes: list[WriteRecord] = field(default_factory=list)
    journal: Journal | None = None
    intents: list[tuple[str, str, str | None]] = field(default_factory=list)  # (id, operation, account)
    extensions: dict[str, object] = field(default_factory=dict)

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise Unauthenticated(self.auth_error or "Send 'Authorization: Bearer <token>' to use the graph.")
        return self.principal

    def require_guard(self) -> Guard:
        """The request's policy guard; UNAUTHENTICATED for a caller without a valid token."""
        if self.guard is None:
            self.require_principal()
            raise Unauthenticated("Send 'Authorization: Bearer <token>' to use the graph.")
        return self.guard

    def record(self, write: WriteRecord) -> None:
        self.writes.append(write)

    async def begin_write(self, operation: str, account_no: str | None) -> None:
        """Journal a write before it is sent: if the store cannot take the intent, nothing is sent."""
        if self.journal is None:
            return
        try:
            intent = await self.journal.open(
                self.request_id, self.require_principal().sub, operation, account_no
            )
        except Exception:  # the store's failure, whatever its kind: the write must not go out unrecorded
            raise GraphError(
                "The audit store is unavailable, so the write was not sent. Try again later."
            ) from None
        self.intents.append((intent, operation, account_no))

    def evict(self, account_no: str, *, email: str | None = None, tax_id: str | None = None) -> None:
        """After a write: forget what this request and every other one had cached of the customer."""
        self.loaders.account.clear(account_no)
        if self.cache is not None:
            self.cache.evict_customer(account_no, email=email, tax_id=tax_id)

    async def load_grants(self, account_nos: list[str]) -> None:
        """Fetch the caller's live access grants for these customers before deciding them."""
        if self.grant_lookup is None or self.guard is None or not account_nos:
            return
        self.guard.add_grants(await self.grant_lookup(self.guard.principal.sub, account_nos))
