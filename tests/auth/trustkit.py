"""Shared pieces of the trust-layer tests: an exchange app with the auth and admin
routers mounted, hospitals with real keys, and assertion builders.

Imported as ``auth.trustkit`` (``tests/`` is on ``sys.path``) by the conftests of
``tests/auth`` and ``tests/registry``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from hie.app import create_app
from hie.auth import dependencies as auth_dependencies
from hie.auth.jwk import new_client_key
from hie.auth.tokens import TokenService
from hie.config import Settings
from hie.registry import service as registry
from hie.registry.models import Organization, Practitioner
from hie.store.base import Store

BASE = "http://testserver"
TOKEN_URL = f"{BASE}/auth/token"
FHIR_BASE = f"{BASE}/fhir"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


#: The exchange's settings (they include the trust layer's fields).
TrustSettings = Settings


def make_settings(tmp_path: Path) -> TrustSettings:
    return TrustSettings(store_url=f"sqlite:///{tmp_path}/hie.db", base_url=BASE,
                         var_dir=str(tmp_path), max_body_bytes=256 * 1024)


def sign(claims: dict[str, Any], pem: str, *, alg: str, kid: str | None,
         headers: dict[str, Any] | None = None) -> str:
    head = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims, pem, algorithm=alg, headers={**head, **(headers or {})})


def claims_for(client_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL,
                              "iat": now, "exp": now + 240, "jti": str(uuid.uuid4())}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@dataclass
class Hospital:
    """A registered hospital and the private key it signs with."""

    org: Organization
    pem: str
    kid: str
    alg: str
    practitioners: list[Practitioner] = field(default_factory=list)

    @property
    def client_id(self) -> str:
        return self.org.client_id

    def client_assertion(self, **overrides: Any) -> str:
        return sign(claims_for(self.client_id, **overrides), self.pem, alg=self.alg,
                    kid=self.kid)

    def doctor_assertion(self, practitioner: str, purpose: str | None = "TREAT",
                         **overrides: Any) -> str:
        claims = claims_for(self.client_id, sub=practitioner, purpose_of_use=purpose,
                            **overrides)
        return sign(claims, self.pem, alg=self.alg, kid=self.kid)

    def form(self, scope: str | None = "system/*.cruds", **overrides: Any) -> dict[str, str]:
        data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.client_assertion(), "scope": scope}
        data.update(overrides)
        return {k: v for k, v in data.items() if v is not None}

    def doctor_form(self, practitioner: str, scope: str = "user/*.rs", **claims: Any
                    ) -> dict[str, str]:
        return self.form(scope, grant_type=JWT_BEARER,
                         assertion=self.doctor_assertion(practitioner, **claims))


async def register(store: Store, org_id: str, *, alg: str = "ES384", roles: tuple = (),
                   doctors: int = 1) -> Hospital:
    kid = f"{org_id}-key-1"
    pem, jwk = new_client_key(alg, kid=kid)
    org = await registry.create_organization(store, name=f"Hospital {org_id}", id=org_id,
                                             jwks={"keys": [jwk]}, roles=roles)
    hospital = Hospital(org, pem, kid, alg)
    for n in range(doctors):
        hospital.practitioners.append(await registry.create_practitioner(
            store, organization=org_id, name=f"Dr {n} of {org_id}", id=f"{org_id}-dr{n}"))
    return hospital


def tokens_of(app: FastAPI) -> TokenService:
    """The app's token service (created as the first request would)."""
    return auth_dependencies.tokens_of(app)


# -- fixtures (re-exported by the conftests) ------------------------------------

@pytest.fixture
def trust_settings(tmp_path: Path) -> TrustSettings:
    return make_settings(tmp_path)


@pytest.fixture
async def trust_app(trust_settings: TrustSettings) -> AsyncIterator[FastAPI]:
    app = create_app(trust_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def store(trust_app: FastAPI) -> Store:
    return trust_app.state.store


@pytest.fixture
async def http(trust_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=trust_app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c


@pytest.fixture
async def hospital(store: Store) -> Hospital:
    return await register(store, "hospa")


@pytest.fixture
async def other_hospital(store: Store) -> Hospital:
    return await register(store, "hospb", alg="RS384")


@pytest.fixture
def tokens(trust_app: FastAPI) -> TokenService:
    return tokens_of(trust_app)


async def get_token(http: httpx.AsyncClient, form: dict[str, str]) -> str:
    r = await http.post("/auth/token", data=form)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A JWT made by hand, as an attacker would (PyJWT refuses to make these):
    ``secret=None`` gives ``alg: none`` with an empty signature, otherwise an
    HMAC-SHA256 signature keyed with ``secret``."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


async def refused(http: httpx.AsyncClient, form: dict, error: str, status: int | None = None
                  ) -> dict:
    r = await http.post("/auth/token", data=form)
    assert r.status_code == (status or (401 if error == "invalid_client" else 400)), r.text
    body = r.json()
    assert body["error"] == error, body
    assert "access_token" not in body
    assert r.headers["cache-control"] == "no-store"
    for secret in (form.get("client_assertion"), form.get("assertion")):
        if secret:  # never echo an assertion (nor its signature) back
            signature = secret.split(".")[-1]
            assert secret not in r.text and (not signature or signature not in r.text)
    return body
