"""The policy engine: who sees which customers, which fields, and may do what — from a YAML file.

Pure Python, no GraphQL and no HTTP: the schema asks, the policy answers. Start with
``load_policy()`` (the shipped default, or ``CG_POLICY_FILE``) or ``PolicyHolder`` for a running
gateway; see ``engine`` for how decisions combine and ``default.yaml`` for the file format.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .decisions import ALLOW, DENY, Decision, Effect
from .engine import CustomerView, Explanation, Policy, RowScope, WriteDecision
from .holder import PolicyHolder
from .loader import PolicyError
from .principal import Principal

DEFAULT_POLICY_PATH = Path(__file__).with_name("default.yaml")
POLICY_FILE_ENV = "CG_POLICY_FILE"


def policy_path(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """``path`` if given, else ``$CG_POLICY_FILE`` if set, else the shipped default policy."""
    if path is not None:
        return Path(path)
    env = os.environ if environ is None else environ
    configured = env.get(POLICY_FILE_ENV, "").strip()
    return Path(configured) if configured else DEFAULT_POLICY_PATH


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and check a policy (see ``policy_path``); raises ``PolicyError`` listing every problem."""
    return Policy.from_file(policy_path(path))


__all__ = [
    "ALLOW",
    "DEFAULT_POLICY_PATH",
    "DENY",
    "POLICY_FILE_ENV",
    "CustomerView",
    "Decision",
    "Effect",
    "Explanation",
    "Policy",
    "PolicyError",
    "PolicyHolder",
    "Principal",
    "RowScope",
    "WriteDecision",
    "load_policy",
    "policy_path",
]
