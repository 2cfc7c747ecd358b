"""``customer-graph policy check|explain|table``: the functions the gateway's CLI wires in.

Each takes its arguments (without the command words) and returns an exit code: 0 done, 1 the policy
file has problems (listed on stderr), 2 bad usage (unknown role or field, bad option).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import policy_path
from .catalogue import FIELDS, SITUATIONS
from .engine import Policy
from .loader import PolicyError


def _display(path: Path) -> str:
    """The path as messages show it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (OSError, ValueError):
        return str(path)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2


def _load(file: str | None) -> Policy | int:
    path = policy_path(file)
    try:
        return Policy.from_file(path, _display(path))
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); the policy cannot be used.", file=sys.stderr)
        return 1


def _policy_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        metavar="FILE",
        help="the policy file (default: $CG_POLICY_FILE, else the shipped default)",
    )


def check_main(argv: Sequence[str] | None = None) -> int:
    """``policy check [FILE]``: load and check a policy file, print every problem with its line."""
    parser = argparse.ArgumentParser(
        prog="customer-graph policy check",
        description="Check a policy file; list every problem with its line.",
    )
    parser.add_argument("file", nargs="?", help="default: $CG_POLICY_FILE, else the shipped default policy")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    policy = _load(args.file)
    if isinstance(policy, int):
        return policy
    spec = policy.spec
    print(
        f"{policy.file}: OK — {len(spec.roles)} roles, {len(spec.fields)} field rows, "
        f"{len(spec.links)} same-datum links, {len(spec.hidden)} hidden-item rules, "
        f"{len(spec.writes)} write rules"
    )
    return 0


def explain_main(argv: Sequence[str] | None = None) -> int:
    """``policy explain --role R [--role R2] [--own|--pool|--other] FIELD...``: a decision and its rules."""
    parser = argparse.ArgumentParser(
        prog="customer-graph policy explain",
        description="Show how a field resolves for a caller with these roles, and the rules (file:line) "
        "that decide it. Without --own/--pool/--other, every situation that matters is shown.",
    )
    parser.add_argument(
        "--role", "-r", action="append", required=True, help="a role of the caller (repeatable)"
    )
    where = parser.add_mutually_exclusive_group()
    for situation in SITUATIONS:
        where.add_argument(
            f"--{situation}", dest="situation", action="store_const", const=situation, help=_HELP[situation]
        )
    _policy_option(parser)
    parser.add_argument("fields", nargs="+", metavar="FIELD", help="e.g. email, Payment.cardLast4")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    policy = _load(args.policy)
    if isinstance(policy, int):
        return policy
    roles: list[str] = args.role
    unknown = [r for r in roles if r not in policy.roles]
    if unknown:
        print(f"unknown role {unknown[0]} (roles: {', '.join(sorted(policy.roles))})", file=sys.stderr)
        return 2
    bad = [f for f in args.fields if f not in FIELDS]
    if bad:
        print(f"unknown field {bad[0]} (fields: {', '.join(FIELDS)})", file=sys.stderr)
        return 2
    situations: Sequence[str | None] = (
        [args.situation] if args.situation else policy.situations_for(roles) or [None]
    )
    blocks = [str(policy.explain(roles, s, name)) for name in args.fields for s in situations]
    print("\n\n".join(blocks))
    return 0


GrantsReport = Callable[[argparse.Namespace], int]


def table_main(argv: Sequence[str] | None = None, grants: GrantsReport | None = None) -> int:
    """``policy table``: every field's effective decision per role and situation (links and parents
    applied), to compare with the signed policy. ``grants``: the gateway's report of the access grants
    in force (it reads the gateway database, which this layer does not know): offered as ``--grants``
    (with ``--database-url``) and called after the table with the parsed arguments."""
    parser = argparse.ArgumentParser(
        prog="customer-graph policy table",
        description="Print the effective decision of every field for every role column"
        + (
            ", and with --grants the access grants in force (who sees more than the table says)."
            if grants
            else "."
        ),
    )
    _policy_option(parser)
    if grants is not None:
        parser.add_argument(
            "--grants",
            action="store_true",
            help="also list the access grants in force (user, customer, fields, until) from the gateway "
            "database; never a personal data value",
        )
        parser.add_argument(
            "--database-url",
            default=None,
            help="the gateway database (default: $CG_DATABASE_URL, else sqlite var/gateway.db)",
        )
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    policy = _load(args.policy)
    if isinstance(policy, int):
        return policy
    columns: list[tuple[str, str, str | None]] = []
    for column in policy.spec.columns:
        role, _, situation = column.partition(".")
        columns.append((column, role, situation or None))
    width = max(len(name) for name in FIELDS) + 2
    cell = max(max(len(c[0]) for c in columns), len("mask:address")) + 2
    print("field".ljust(width) + "".join(c[0].ljust(cell) for c in columns).rstrip())
    for name in FIELDS:
        decisions = [str(policy.explain(role, situation, name).decision) for _, role, situation in columns]
        print(name.ljust(width) + "".join(d.ljust(cell) for d in decisions).rstrip())
    if grants is not None and args.grants:
        sys.stdout.flush()
        return grants(args)
    return 0


_HELP = {
    "own": "a customer the caller owns",
    "pool": "a customer in the public pool",
    "other": "a customer another user owns",
}
