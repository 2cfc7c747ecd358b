"""Who asks: the caller as the policy sees it (built by the gateway from the token's claims)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. ``roles`` may hold names the policy does not know; they grant nothing.

    ``region`` is compared with ``Account.region`` (lower-case, as the connectors deliver it), so it
    is normalised to lower case here; an empty region claim counts as none.
    """

    sub: str
    roles: frozenset[str]
    region: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.roles, frozenset):
            object.__setattr__(self, "roles", frozenset(self.roles))
        if self.region is not None:
            region = self.region.strip().lower()
            object.__setattr__(self, "region", region or None)

    @classmethod
    def of(
        cls, sub: str, roles: Iterable[str], region: str | None = None, name: str | None = None
    ) -> Principal:
        """A principal from plain values (tests, CLI, scripts)."""
        return cls(sub=sub, roles=frozenset(roles), region=region, name=name)

    @classmethod
    def from_claims(cls, claims: Mapping[str, object]) -> Principal:
        """A principal from already verified JWT claims; ill-typed optional claims count as absent."""
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise ValueError("the 'sub' claim must be a non-empty string")
        roles = claims.get("roles")
        role_names = (
            frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset()
        )
        region = claims.get("region")
        name = claims.get("name")
        return cls(
            sub=sub,
            roles=role_names,
            region=region if isinstance(region, str) else None,
            name=name if isinstance(name, str) else None,
        )
