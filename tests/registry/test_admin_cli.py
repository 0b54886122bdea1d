"""``hie admin …`` against a real store and key folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from auth.trustkit import TrustSettings, make_settings
from typer.testing import CliRunner

from hie.auth.jwk import new_client_key
from hie.auth.tokens import TokenService
from hie.registry import cli

runner = CliRunner()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrustSettings:
    settings = make_settings(tmp_path)
    monkeypatch.setattr(cli, "load_settings", lambda: settings)
    return settings


def run(*args: str) -> str:
    result = runner.invoke(cli.app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_register_a_hospital_with_keys_and_a_doctor(settings: TrustSettings, tmp_path: Path):
    _, k1 = new_client_key("ES384", kid="k1")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [k1]}))
    org = json.loads(run("create-organization", "--name", "Ruijin", "--id", "ruijin",
                         "--jwks", str(jwks)))
    assert org["client_id"] == "ruijin" and org["jwks"]["keys"][0]["kid"] == "k1"
    pem, _ = new_client_key("RS384", kid="unused")
    key_file = tmp_path / "k2.pem"
    key_file.write_text(pem)  # a private PEM: only its public half is registered
    org = json.loads(run("add-key", "--organization", "ruijin", "--pem", str(key_file),
                         "--kid", "k2"))
    assert [k["kid"] for k in org["jwks"]["keys"]] == ["k1", "k2"]
    assert "PRIVATE" not in json.dumps(org) and "d" not in org["jwks"]["keys"][1]
    org = json.loads(run("remove-key", "--organization", "ruijin", "--kid", "k1"))
    assert [k["kid"] for k in org["jwks"]["keys"]] == ["k2"]
    prac = json.loads(run("create-practitioner", "--organization", "ruijin",
                          "--name", "Dr Sun", "--id", "rj-sun"))
    assert prac["organization"] == "ruijin"
    account = json.loads(run("create-account", "--username", "sun.li", "--person-id", "p-1",
                             "--password", "a long password"))
    assert account["username"] == "sun.li"


def test_errors_exit_non_zero(settings: TrustSettings):
    run("create-organization", "--name", "A", "--id", "hospa")
    result = runner.invoke(cli.app, ["create-organization", "--name", "A", "--id", "hospa"])
    assert result.exit_code == 1 and "already" in result.output
    result = runner.invoke(cli.app, ["token", "--role", "root"])
    assert result.exit_code == 2


def test_admin_token_and_key_rotation(settings: TrustSettings):
    token = run("token", "--role", "admin", "--hours", "8").strip()
    claims = TokenService(settings).verify(token)
    assert claims["roles"] == ["admin"] and claims["organization"] == "exchange"
    assert claims["exp"] - claims["iat"] == 8 * 3600
    result = runner.invoke(cli.app, ["token", "--hours", "100"])
    assert result.exit_code == 2  # longer than admin_token_max_hours
    new_kid = run("rotate-keys").strip()
    fresh = TokenService(settings)
    assert fresh.verify(token)["jti"] == claims["jti"]  # signed before the rotation
    assert [k["kid"] for k in fresh.keyring.jwks()["keys"]][0] == new_kid
    officer = run("token", "--role", "privacy-officer", "--scope", "system/AuditEvent.rs")
    assert fresh.verify(officer.strip())["scope"] == "system/AuditEvent.rs"
