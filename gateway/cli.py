"""``customer-graph``: serve the gateway, mint dev tokens, print the schema, run the operators' tasks.

Other packages add sub-commands through the entry point group ``customer_graph.commands`` (a
function that gets the sub-parsers): the demo's ``customer-graph demo`` comes from ``demo/`` that
way, so the product never imports the demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from .auth import DEV_TOKEN_HOURS
from .logs import configure_logging
from .settings import SettingsError, load_settings

DEMO_ENV = Path("var") / "demo.env"  # written by ``customer-graph demo`` (its secret, for more tokens)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import serving_app
    from .auth import Authenticator
    from .datakeys import check_database, keyring_for
    from .server import GatewayHttp, guarded_http

    if args.config:
        os.environ["CG_CONFIG"] = args.config  # the workers read the same file
    if args.host:
        os.environ["CG_HOST"] = args.host  # the workers read the environment
    if args.port:
        os.environ["CG_PORT"] = str(args.port)
    settings = load_settings()
    Authenticator(settings)  # refuse to start without a way to check tokens
    keyring_for(settings)  # nor without the data keys in production (development: made once, var/data.key)
    # nor with keys that do not open its database (on a loop of its own: the caller's current loop stays)
    loop = asyncio.new_event_loop()
    try:
        problem = loop.run_until_complete(check_database(settings))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    if problem is not None:
        print(f"customer-graph serve: {problem}", file=sys.stderr)
        return 2
    if args.workers > 1:
        uvicorn.run(
            "gateway.app:app_from_environment",
            factory=True,
            workers=args.workers,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            http=GatewayHttp,
        )
    else:
        uvicorn.run(
            serving_app(settings),
            http=guarded_http(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
        )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from .auth import issue_token

    settings = load_settings(args.config)
    secret = settings.jwt_secret
    if not secret:
        hint = (
            " (a running demo's: customer-graph --env-file var/demo.env token …)" if DEMO_ENV.exists() else ""
        )
        print(
            f"customer-graph token: set CG_JWT_SECRET (or jwt_secret in the config file){hint}",
            file=sys.stderr,
        )
        return 2
    token = issue_token(
        secret,
        sub=args.sub,
        roles=args.role,
        region=args.region,
        name=args.name,
        ttl_seconds=int(args.hours * 3600),
        audience=settings.jwt_audience or None,
        issuer=settings.jwt_issuer or None,
    )
    print(token)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from schema import build_schema

    print(build_schema().as_str())
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from policies.cli import check_main, explain_main, table_main

    if args.action == "table":  # with --grants, the grants in force from the gateway database
        from .store_cli import grants_report

        return table_main(args.args, grants=grants_report)
    commands = {"check": check_main, "explain": explain_main}
    return commands[args.action](args.args)


def cmd_pool(args: argparse.Namespace) -> int:
    from .pool_cli import sweep_main

    return sweep_main(args.args, config=args.config)


def cmd_identity(args: argparse.Namespace) -> int:
    from .identity_cli import requesters_main, scan_main

    main = {"scan": scan_main, "requesters": requesters_main}[args.action]
    return main(args.args, config=args.config)


def cmd_privacy(args: argparse.Namespace) -> int:
    from .privacy_cli import export_main

    return export_main(args.args)


def cmd_audit(args: argparse.Namespace) -> int:
    from .store_cli import audit_export_main, audit_verify_main

    return {"export": audit_export_main, "verify": audit_verify_main}[args.action](args.args)


def cmd_db(args: argparse.Namespace) -> int:
    from .store_cli import (
        db_backup_main,
        db_keygen_main,
        db_purge_main,
        db_restore_main,
        db_rotate_keys_main,
        db_upgrade_main,
    )

    commands = {
        "upgrade": db_upgrade_main,
        "backup": db_backup_main,
        "restore": db_restore_main,
        "purge": db_purge_main,
        "keygen": db_keygen_main,
        "rotate-keys": db_rotate_keys_main,
    }
    return commands[args.action](args.args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="customer-graph", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: $CG_CONFIG); CG_* variables win")
    parser.add_argument(
        "--env-file",
        type=Path,
        help="read CG_* variables from this file first (KEY=VALUE lines), e.g. var/demo.env",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway against the configured systems")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes (each has its own cache; set CG_REDIS_URL to share invalidations)",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1 or CG_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000 or CG_PORT)")
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="print a dev token signed with the configured secret")
    token.add_argument("--sub", required=True, help="user id, e.g. u-1021")
    token.add_argument("--role", action="append", required=True, help="a role; repeat for several")
    token.add_argument("--region", help="region claim for regional roles")
    token.add_argument("--name", help="display name")
    token.add_argument(
        "--hours", type=float, default=DEV_TOKEN_HOURS, help=f"lifetime (default {DEV_TOKEN_HOURS:g})"
    )
    token.set_defaults(func=cmd_token)

    schema = sub.add_parser("schema", help="print the GraphQL SDL")
    schema.set_defaults(func=cmd_schema)

    policy = sub.add_parser(
        "policy",
        help="check a policy file, explain a decision, print the decision table",
        description="policy check [FILE] | policy explain --role R [--own|--pool] FIELD | "
        "policy table [--grants]",
    )
    policy.add_argument("action", choices=["check", "explain", "table"])
    policy.add_argument("args", nargs=argparse.REMAINDER, help="see 'customer-graph policy ACTION --help'")
    policy.set_defaults(func=cmd_policy)

    pool = sub.add_parser(
        "pool",
        help="the public pool: run one recycling sweep now",
        description="pool sweep [--dry-run] [--database-url URL]",
    )
    pool.add_argument("action", choices=["sweep"])
    pool.add_argument("args", nargs=argparse.REMAINDER, help="see 'customer-graph pool sweep --help'")
    pool.set_defaults(func=cmd_pool)

    identity = sub.add_parser(
        "identity",
        help="who is who: match every sales account (duplicates, incomplete records, changed e-mails)",
        description="identity scan [--database-url URL] [--per-page N] [--no-progress] | "
        "identity requesters FILE (import the helpdesk's requesters)",
    )
    identity.add_argument("action", choices=["scan", "requesters"])
    identity.add_argument(
        "args", nargs=argparse.REMAINDER, help="see 'customer-graph identity ACTION --help'"
    )
    identity.set_defaults(func=cmd_identity)

    privacy = sub.add_parser(
        "privacy",
        help="a data subject's requests: export everything held about one customer",
        description="privacy export ACCOUNT_NO --by USER [--out DIR]",
    )
    privacy.add_argument("action", choices=["export"])
    privacy.add_argument("args", nargs=argparse.REMAINDER, help="see 'customer-graph privacy export --help'")
    privacy.set_defaults(func=cmd_privacy)

    audit = sub.add_parser(
        "audit",
        help="export the audit trail, or verify its hash chain",
        description="audit export --since ISO --format jsonl|csv [--output FILE] | audit verify",
    )
    audit.add_argument("action", choices=["export", "verify"])
    audit.add_argument("args", nargs=argparse.REMAINDER, help="see 'customer-graph audit ACTION --help'")
    audit.set_defaults(func=cmd_audit)

    db = sub.add_parser(
        "db",
        help="the gateway's database: 'db upgrade' applies the migrations; 'db backup FILE', "
        "'db restore FILE'; 'db keygen' prints a new data key, 'db rotate-keys' re-seals with the newest",
    )
    db.add_argument("action", choices=["upgrade", "backup", "restore", "purge", "keygen", "rotate-keys"])
    db.add_argument("args", nargs=argparse.REMAINDER)
    db.set_defaults(func=cmd_db)
    for plugin in entry_points(group="customer_graph.commands"):
        plugin.load()(sub)
    return parser


def load_env_file(path: Path) -> None:
    """``KEY=VALUE`` lines (``#`` comments) into the environment; variables already set (non-empty) win."""
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#") and not os.environ.get(key.strip()):
            os.environ[key.strip()] = value.strip()


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging(os.environ.get("CG_LOG_LEVEL", "INFO"))
    args = build_parser().parse_args(argv)
    if args.env_file is not None:
        try:
            load_env_file(args.env_file)
        except OSError as exc:
            print(f"customer-graph: cannot read {args.env_file}: {exc.strerror}", file=sys.stderr)
            return 2
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"customer-graph: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
