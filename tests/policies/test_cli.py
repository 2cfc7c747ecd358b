"""policies.cli: check, explain and table, as the gateway's CLI will call them."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.cli import check_main, explain_main, table_main


def test_check_default(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CG_POLICY_FILE", raising=False)
    assert check_main([]) == 0
    out = capsys.readouterr().out
    assert "default.yaml: OK" in out and "9 roles" in out


def test_check_bad_file(tmp_path: Path, default_text: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(default_text.replace("[allow,", "[alow, ", 1).replace("version: 1", "version: 3"))
    assert check_main([str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith('version must be 1 (this format), not "3"')
    assert 'unknown decision "alow"' in err[1]
    assert err[-1] == "2 problem(s); the policy cannot be used."


def test_check_uses_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CG_POLICY_FILE", str(tmp_path / "missing.yaml"))
    assert check_main([]) == 1


def test_explain_rep_shows_both_situations(capsys: pytest.CaptureFixture[str]) -> None:
    assert explain_main(["--role", "sales_rep", "email"]) == 0
    out = capsys.readouterr().out
    assert "email for sales_rep (own): allow" in out
    assert "email for sales_rep (pool): mask:email" in out
    assert "default.yaml:" in out


def test_explain_one_situation_and_several_roles(capsys: pytest.CaptureFixture[str]) -> None:
    assert explain_main(["--role", "executive", "--role", "finance", "Payment.cardLast4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Payment.cardLast4 for executive + finance: allow")
    assert explain_main(["-r", "sales_rep", "--pool", "taxId"]) == 0
    assert capsys.readouterr().out.startswith("taxId for sales_rep (pool): deny")


def test_explain_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert explain_main(["--role", "janitor", "email"]) == 2
    assert "unknown role janitor" in capsys.readouterr().err
    assert explain_main(["--role", "finance", "emial"]) == 2
    assert "unknown field emial" in capsys.readouterr().err
    assert explain_main(["--role", "finance", "--own", "--pool", "email"]) == 2
    assert explain_main(["email"]) == 2  # --role is required


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert table_main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["field", "sales_rep.own", "sales_rep.pool"]
    email = next(line for line in lines if line.startswith("email "))
    assert email.split()[1:] == [
        "allow", "mask:email", "allow", "allow", "mask:email", "mask:email", "mask:email", "deny", "allow", "deny"
    ]  # fmt: skip
