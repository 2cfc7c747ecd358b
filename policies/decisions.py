"""A field's decision for one caller and one customer: allow, mask (of a kind) or deny.

Decisions are interned: there is one ``ALLOW``, one ``DENY`` and one decision per mask kind, so
tables of decisions share them and comparing with ``is`` works.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType

from .masks import MASKS


class Effect(IntEnum):
    """Ordered by permissiveness: several roles on one caller take the largest."""

    DENY = 0
    MASK = 1
    ALLOW = 2


def _keep(value: str) -> str:
    return value


@dataclass(frozen=True, slots=True)
class Decision:
    effect: Effect
    mask: str | None = None  # the mask kind when effect is MASK
    allowed: bool = field(init=False, compare=False, repr=False)
    masked: bool = field(init=False, compare=False, repr=False)
    denied: bool = field(init=False, compare=False, repr=False)
    _masker: Callable[[str], str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", self.effect is Effect.ALLOW)
        object.__setattr__(self, "masked", self.effect is Effect.MASK)
        object.__setattr__(self, "denied", self.effect is Effect.DENY)
        object.__setattr__(self, "_masker", MASKS[self.mask] if self.mask is not None else _keep)

    def apply(self, value: str | None) -> str | None:
        """The value as served: as it is, masked, or ``None`` when denied (null stays null)."""
        if value is None or self.effect is Effect.DENY:
            return None
        return self._masker(value)

    def __str__(self) -> str:
        if self.effect is Effect.MASK:
            return f"mask:{self.mask}"
        return "allow" if self.effect is Effect.ALLOW else "deny"


ALLOW = Decision(Effect.ALLOW)
DENY = Decision(Effect.DENY)
MASKED: Mapping[str, Decision] = MappingProxyType({kind: Decision(Effect.MASK, kind) for kind in MASKS})


def parse_decision(text: str) -> Decision | None:
    """``allow``, ``deny`` or ``mask:<kind>`` → the decision; anything else → None."""
    if text == "allow":
        return ALLOW
    if text == "deny":
        return DENY
    kind = text.removeprefix("mask:")
    return MASKED.get(kind) if kind != text else None
