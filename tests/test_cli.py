"""The ``customer-graph`` command: tokens, schema, settings precedence, policy tooling."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth import Authenticator, AuthError
from gateway.cli import main
from gateway.settings import SettingsError, load_settings


def test_token_is_accepted_by_the_gateway(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CG_JWT_SECRET", "cli-test-secret-0123456789abcdef")
    assert main(["token", "--sub", "u-1021", "--role", "sales_rep", "--region", "east"]) == 0
    token = capsys.readouterr().out.strip()
    principal = Authenticator(load_settings()).decode(token)
    assert (principal.sub, principal.roles, principal.region) == ("u-1021", frozenset({"sales_rep"}), "east")


def test_token_without_secret_explains(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CG_JWT_SECRET", raising=False)
    assert main(["token", "--sub", "u-1", "--role", "finance"]) == 2
    assert "CG_JWT_SECRET" in capsys.readouterr().err


def test_schema_prints_the_contracts_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    sdl = capsys.readouterr().out
    for name in (
        "type Customer implements Node",
        "customers(first: Int = 20, after: String = null, filter: CustomerFilter = null): CustomerConnection!",
        "lastContactAt: DateTime",
        "dormant: Boolean\n",  # nullable: null with UPSTREAM_UNAVAILABLE when it cannot be decided
        "type Money",
        "updateCustomerContact",
    ):
        assert name in sdl


def test_environment_wins_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\nsales_url = "http://file:1"\nport = 9000\nupstream_timeout = 1.5\n')
    settings = load_settings(config, environ={"CG_SALES_URL": "http://env:2", "CG_PORT": "8111"})
    assert (settings.sales_url, settings.port, settings.upstream_timeout) == ("http://env:2", 8111, 1.5)


def test_bad_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CG_PORT"):
        load_settings(environ={"CG_PORT": "eighty"})
    config = tmp_path / "gateway.toml"
    config.write_text("sales_ulr = 'x'\n")
    with pytest.raises(SettingsError, match="sales_ulr"):
        load_settings(config, environ={})


def test_serve_refuses_to_start_without_a_token_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="CG_JWT_SECRET"):
        Authenticator(load_settings(environ={}))


def test_policy_check_reports_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    default = Path("policies/default.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(default.replace("[allow,       mask:email,", "[alow,       mask:email,", 1))
    assert main(["policy", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert 'unknown decision "alow"' in err and "bad.yaml:" in err
    assert main(["policy", "check"]) == 0


def test_policy_explain_names_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", "--role", "sales_rep", "--pool", "phone"]) == 0
    out = capsys.readouterr().out
    assert "mask:phone" in out and "default.yaml:" in out


def test_auth_error_is_not_a_crash() -> None:
    with pytest.raises(AuthError):
        Authenticator(load_settings(environ={"CG_JWT_SECRET": "x" * 32})).authenticate("Basic abc")


def test_policy_table_with_the_grants_in_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    from datetime import timedelta

    from features.store import AccessRequests, Database
    from policies import DEFAULT_POLICY_PATH, Policy, Principal
    from tests.factories import KEY_A, data_keyring, make_account

    monkeypatch.setenv("CG_DATA_KEYS", KEY_A)  # the report opens the requests with the same keys
    url = f"sqlite+aiosqlite:///{tmp_path}/gateway.db"
    rep = Principal.of("u-1021", ["sales_rep"], region="east")
    steward = Principal.of("u-ds", ["data_steward"])
    customer = make_account("A-7", owner=None)

    async def setup() -> tuple[str, str]:
        db = Database(url, keyring=data_keyring())
        try:
            await db.migrate()
            access = AccessRequests(db, Policy.from_file(DEFAULT_POLICY_PATH, "default.yaml"))
            live = await access.request(rep, customer, ["phone", "address"], "call back about 13812345678")
            await access.decide(steward, live.id, True, timedelta(hours=3), customer)
            gone = await access.request(rep, make_account("A-8", owner=None), ["phone"], "revoked one")
            await access.decide(steward, gone.id, True, timedelta(hours=3), make_account("A-8", owner=None))
            await access.revoke(steward, gone.id, "review", make_account("A-8", owner=None))
            await access.request(rep, make_account("A-9", owner=None), ["phone"], "pending one")
            return live.id, gone.id
        finally:
            await db.aclose()

    live_id, gone_id = asyncio.run(setup())
    capsys.readouterr()
    assert main(["policy", "table", "--grants", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("field")  # the table first
    report = out[out.index("grants in force") :].splitlines()
    assert report[0].endswith(": 1 (each opens these fields of one customer to one user)")
    assert report[1].split() == ["customer", "user", "fields", "until", "grant", "approved", "by"]
    customer_no, user, fields, until, grant, approver = report[2].split()
    assert (customer_no, user, fields, grant, approver) == ("A-7", "u-1021", "phone,address", live_id, "u-ds")
    assert until.endswith("Z") and gone_id not in out and "A-9" not in out
    for value in ("13812345678", "+86", "Wang", "上海", "call back"):  # never a value, never a reason
        assert value not in out

    assert main(["policy", "table"]) == 0  # without --grants: no database needed
    assert "grants in force" not in capsys.readouterr().out
    assert main(["policy", "table", "--grants", "--database-url", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no gateway database" in capsys.readouterr().err


def test_db_backup_and_restore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The commands an operator runs: back up, restore into a new database, the chain verifies; a second
    restore into the same database is refused without --replace; a file that is not a backup is exit 2."""
    source = f"sqlite+aiosqlite:///{tmp_path}/source.db"
    target = f"sqlite+aiosqlite:///{tmp_path}/target.db"
    assert main(["db", "upgrade", "--database-url", source]) == 0
    assert main(["db", "backup", str(tmp_path / "b.cgbak"), "--database-url", source]) == 0
    assert "backup written" in capsys.readouterr().out
    assert main(["db", "restore", str(tmp_path / "b.cgbak"), "--database-url", target]) == 0
    assert "audit chain: intact" in capsys.readouterr().out
    (tmp_path / "bogus.cgbak").write_text("not a backup")
    assert main(["db", "restore", str(tmp_path / "bogus.cgbak"), "--database-url", target]) == 2
    assert "not a" in capsys.readouterr().err


def test_db_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/gateway.db"
    assert main(["db", "purge", "--database-url", url]) == 0
    assert "retention purge: 0 pool notes, 0 review notes, 0 event payloads" in capsys.readouterr().out


def test_db_keygen_and_rotate_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key procedure an operator follows: a new key first in the list, rotate-keys re-seals every
    value with it (counts only, never a value), the old key removed, the values still read; without the
    old key before rotating, rotate-keys fails clearly (exit 2) and names a column, not a value."""
    import asyncio

    from features.pool.rules import PoolEventKind, PoolRecord
    from features.pool.store import PoolStore
    from features.store import Database
    from features.store.sealed import Keyring
    from tests.factories import T0

    url = f"sqlite+aiosqlite:///{tmp_path}/gateway.db"
    assert main(["db", "keygen"]) == 0
    old = capsys.readouterr().out.strip()
    assert main(["db", "keygen"]) == 0
    new = capsys.readouterr().out.strip()
    assert old != new and Keyring([new, old]).newest_id != Keyring([old]).newest_id

    async def write(keys: list[str]) -> None:
        db = Database(url, keyring=Keyring(keys))
        try:
            await db.migrate()
            await PoolStore(db).add(
                [PoolRecord(kind=PoolEventKind.RELEASE, account_no="A-1", actor="u-1", at=T0, owner_id="u-1",
                            reason="other", note="secret note 13812345678")]
            )  # fmt: skip
        finally:
            await db.aclose()

    async def read(keys: list[str]) -> str | None:
        db = Database(url, keyring=Keyring(keys))
        try:
            await db.migrate()
            return (await PoolStore(db).history("A-1")).records[0].note
        finally:
            await db.aclose()

    asyncio.run(write([old]))
    monkeypatch.setenv("CG_DATA_KEYS", new)  # the old key dropped too early
    assert main(["db", "rotate-keys", "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert "sealed_keys.value" in err and "cannot be opened" in err and new not in err
    monkeypatch.setenv("CG_DATA_KEYS", f"{new},{old}")
    assert main(["db", "rotate-keys", "--database-url", url, "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "pool_history.note: 1 re-sealed" in out and "secret" not in out and "1381" not in out
    assert main(["db", "rotate-keys", "--database-url", url]) == 0
    assert "0 value(s) re-sealed" in capsys.readouterr().out  # idempotent
    assert asyncio.run(read([new])) == "secret note 13812345678"


def test_production_refuses_to_start_without_data_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.datakeys import keyring_for
    from gateway.settings import SettingsError, load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CG_ENVIRONMENT", "production")
    monkeypatch.setenv("CG_JWT_SECRET", "cli-test-secret-0123456789abcdef")
    monkeypatch.delenv("CG_DATA_KEYS", raising=False)
    with pytest.raises(SettingsError, match="CG_DATA_KEYS or CG_DATA_KEYS_FILE"):
        keyring_for(load_settings())
    assert main(["serve", "--port", "1"]) == 2
    assert "data_keys: the production gateway needs the data keys" in capsys.readouterr().err
    assert not (tmp_path / "var" / "data.key").exists()  # production never makes one
    monkeypatch.setenv("CG_DATA_KEYS", "not-a-key-value")
    with pytest.raises(SettingsError) as caught:
        keyring_for(load_settings())
    assert "not a Fernet key" in str(caught.value) and "not-a-key-value" not in str(caught.value)


def test_development_makes_a_data_key_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import stat

    from gateway.datakeys import keyring_for
    from gateway.settings import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CG_DATA_KEYS", raising=False)
    monkeypatch.delenv("CG_DATABASE_URL", raising=False)
    with caplog.at_level(logging.INFO, logger="gateway.datakeys"):
        first = keyring_for(load_settings())
    key_file = tmp_path / "var" / "data.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "made a development data key in var/data.key" in caplog.text
    assert keyring_for(load_settings()).ids == first.ids  # reused, not made again
    assert "using the development data key" in caplog.text
    beside = keyring_for(load_settings(), f"sqlite:///{tmp_path}/other/gateway.db")
    assert (tmp_path / "other" / "data.key").exists() and beside.ids != first.ids
    secret = tmp_path / "keys"  # a secret mount: one key a line, newest first
    secret.write_text(f"{first.ids[0]}\n")
    monkeypatch.setenv("CG_DATA_KEYS_FILE", str(secret))
    with pytest.raises(Exception, match="not a Fernet key"):
        keyring_for(load_settings())
    secret.write_text(key_file.read_text())
    assert keyring_for(load_settings()).ids == first.ids


def test_serve_refuses_keys_that_do_not_open_its_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway given the wrong data keys (or whose development key file was lost) stops at once with one
    line naming the problem, before it serves: never a traceback, never a key."""
    from tests.factories import KEY_A, KEY_C

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CG_JWT_SECRET", "cli-test-secret-0123456789abcdef")
    monkeypatch.setenv("CG_DATA_KEYS", KEY_A)
    assert main(["db", "upgrade"]) == 0  # the database made (and its index key sealed) with KEY_A
    capsys.readouterr()
    monkeypatch.setenv("CG_DATA_KEYS", KEY_C)
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "customer-graph serve: the data keys cannot open the gateway database: sealed_keys.value"
    )
    assert "Traceback" not in err and KEY_C not in err and KEY_A not in err
