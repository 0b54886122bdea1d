"""The exchange's signing keys: created on a fresh machine, shared by workers,
rotated without breaking tokens in flight."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import httpx
import jwt
from auth.trustkit import TrustSettings, get_token, make_settings

from hie.auth.keys import KeyRing
from hie.auth.tokens import InvalidToken, TokenService


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_first_key_is_created_private_and_once(tmp_path: Path):
    folder = tmp_path / "var" / "keys"
    rings = [KeyRing(folder, retention_seconds=600) for _ in range(6)]
    threads = [threading.Thread(target=r.ensure) for r in rings]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = list(folder.glob("*.pem"))
    assert len(files) == 1  # six "workers" starting at once made one key
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert {r.signing_key().kid for r in rings} == {files[0].stem}
    assert b"PRIVATE KEY" in files[0].read_bytes()


def test_jwks_publishes_public_keys_only(tmp_path: Path):
    ring = KeyRing(tmp_path, retention_seconds=600)
    kid = ring.signing_key().kid
    (key,) = ring.jwks()["keys"]
    assert key["kid"] == kid and key["alg"] == "ES384" and key["crv"] == "P-384"
    assert "d" not in key


async def test_rotation_keeps_tokens_in_flight_valid(http: httpx.AsyncClient, hospital,
                                                     tokens: TokenService):
    before = await get_token(http, hospital.form())
    old_kid = tokens.keyring.signing_key().kid
    new_kid = tokens.keyring.rotate().kid
    after = await get_token(http, hospital.form())
    assert jwt.get_unverified_header(after)["kid"] == new_kid != old_kid
    assert [k["kid"] for k in (await http.get("/auth/jwks")).json()["keys"]] == [new_kid,
                                                                                  old_kid]
    for token in (before, after):
        r = await http.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text


def test_another_worker_picks_up_a_rotation(tmp_path: Path):
    settings: TrustSettings = make_settings(tmp_path)
    worker_a, worker_b = TokenService(settings), TokenService(settings)
    worker_b.keyring.signing_key()  # B has loaded the folder before A rotates
    worker_a.keyring.rotate()
    token, _, _ = worker_a.issue(client_id="hospa", organization="hospa", scope="")
    assert worker_b.verify(token)["organization"] == "hospa"


def test_retired_key_expires_after_the_retention(tmp_path: Path):
    clock = Clock()
    settings = make_settings(tmp_path)
    ring = KeyRing(tmp_path / "keys", retention_seconds=3600, clock=clock)
    old = ring.signing_key()
    clock.now += 10
    new = ring.rotate()
    clock.now += 3599
    assert ring.verification_key(old.kid) is not None
    assert len(ring.jwks()["keys"]) == 2
    clock.now += 2
    assert ring.verification_key(old.kid) is None
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new.kid]
    ring.rotate()  # the next rotation deletes the expired file
    assert not (tmp_path / "keys" / f"{old.kid}.pem").exists()
    assert settings.admin_token_max_hours * 3600 < TokenService(settings).keyring.retention


def test_tokens_of_a_deleted_key_are_refused(tmp_path: Path):
    service = TokenService(make_settings(tmp_path))
    token, _, _ = service.issue(client_id="hospa", organization="hospa", scope="")
    kid = service.keyring.signing_key().kid
    fresh = TokenService(make_settings(tmp_path))
    service.keyring.rotate()
    (tmp_path / "keys" / f"{kid}.pem").unlink()
    try:
        fresh.verify(token)
    except InvalidToken:
        pass
    else:
        raise AssertionError("a token whose key is gone must not verify")
