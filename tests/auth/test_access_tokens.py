"""Access tokens at the door of every authenticated route (here: /fhir, whose
``get_context`` the lead replaces with ``authenticate``). Refused tokens get 401
with ``WWW-Authenticate: Bearer`` and write nothing."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from auth.trustkit import FHIR_BASE, Hospital, forge, get_token
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hie.auth.context import AuthContext
from hie.auth.dependencies import require
from hie.auth.scopes import parse_scopes
from hie.auth.tokens import TokenService
from hie.fhir.outcome import FhirError
from hie.store.base import Store
from hie.store.query import SearchQuery

PATIENT = {"resourceType": "Patient", "name": [{"family": "Wang", "given": ["Fang"]}]}
FHIR_JSON = {"content-type": "application/fhir+json"}


def exchange_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "http://testserver", "aud": FHIR_BASE, "sub": "hospa", "iat": now,
              "nbf": now, "exp": now + 300, "jti": str(uuid.uuid4()), "client_id": "hospa",
              "organization": "hospa", "scope": "system/*.cruds", "roles": []}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def exchange_signed(tokens: TokenService, **overrides: Any) -> str:
    key = tokens.keyring.signing_key()
    return jwt.encode(exchange_claims(**overrides), key.private, algorithm="ES384",
                      headers={"kid": key.kid, "typ": "at+jwt"})


async def assert_refused_and_nothing_written(http: httpx.AsyncClient, store: Store,
                                             token: str | None, header: str | None = None):
    auth = header if header is not None else f"Bearer {token}"
    r = await http.post("/fhir/Patient", json=PATIENT,
                        headers={**FHIR_JSON, "Authorization": auth})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"
    if token:
        assert token not in r.text
    r = await http.get("/fhir/Patient", headers={"Authorization": auth})
    assert r.status_code == 401
    assert await store.count(SearchQuery("Patient")) == 0


async def test_no_token_is_401(http: httpx.AsyncClient, store: Store):
    r = await http.get("/fhir/Patient")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="hie"'
    await assert_refused_and_nothing_written(http, store, None, header="")
    await assert_refused_and_nothing_written(http, store, None, header="Basic aG9zcGE6eA==")


async def test_a_real_token_reads_and_writes_as_its_hospital(http: httpx.AsyncClient,
                                                             hospital: Hospital):
    token = await get_token(http, hospital.form())
    auth = {"Authorization": f"Bearer {token}"}
    r = await http.post("/fhir/Patient", json=PATIENT, headers={**FHIR_JSON, **auth})
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["source"] == "urn:hie:organization:hospa"
    assert (await http.get("/fhir/Patient", headers=auth)).json()["total"] == 1
    # The scheme name is case-insensitive (RFC 6750 / RFC 7235).
    assert (await http.get("/fhir/Patient",
                           headers={"Authorization": f"bearer {token}"})).status_code == 200


@pytest.mark.parametrize("overrides", [
    {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 4000},  # expired
    {"nbf": int(time.time()) + 3600},                                  # not yet valid
    {"iat": int(time.time()) + 3600},                                  # issued in the future
    {"aud": "http://testserver/auth/token"},                           # wrong audience
    {"aud": "https://other-exchange.example/fhir"},
    {"iss": "https://other-exchange.example"},                         # wrong issuer
    {"exp": None}, {"iat": None}, {"aud": None}, {"iss": None}, {"jti": None}, {"sub": None},
    {"organization": None},
])
async def test_bad_claims_are_401(http: httpx.AsyncClient, store: Store, tokens: TokenService,
                                  overrides: dict[str, Any]):
    await assert_refused_and_nothing_written(http, store, exchange_signed(tokens, **overrides))


async def test_bad_signature_is_401(http: httpx.AsyncClient, store: Store,
                                    tokens: TokenService):
    kid = tokens.keyring.signing_key().kid
    forged = jwt.encode(exchange_claims(), ec.generate_private_key(ec.SECP384R1()),
                        algorithm="ES384", headers={"kid": kid, "typ": "at+jwt"})
    await assert_refused_and_nothing_written(http, store, forged)
    head, _, sig = exchange_signed(tokens).split(".")
    _, body, _ = exchange_signed(tokens, organization="hospb").split(".")
    await assert_refused_and_nothing_written(http, store, f"{head}.{body}.{sig}")


async def test_alg_none_is_401(http: httpx.AsyncClient, store: Store, tokens: TokenService):
    kid = tokens.keyring.signing_key().kid
    for alg in ("none", "None", "NONE"):
        await assert_refused_and_nothing_written(
            http, store, forge({"alg": alg, "kid": kid}, exchange_claims(), None))


async def test_hs256_keyed_with_the_exchange_public_key_is_401(
        http: httpx.AsyncClient, store: Store, tokens: TokenService):
    key = tokens.keyring.signing_key()
    pem = key.public.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    body = b"".join(pem.splitlines()[1:-1])
    variants = [
        pem,                                                   # as PEM
        pem.replace(b"\n", b"\r\n"),                           # reformatted: CRLF
        pem.strip(),                                           # reformatted: no newline
        b"-----BEGIN PUBLIC KEY-----\n" + body + b"\n-----END PUBLIC KEY-----\n",  # one line
        json.dumps((await http.get("/auth/jwks")).json()["keys"][0]).encode(),    # as JWK
        json.dumps(key.jwk(), separators=(",", ":")).encode(),
    ]
    for secret in variants:
        for alg in ("HS256", "HS384"):
            token = forge({"alg": alg, "kid": key.kid, "typ": "JWT"}, exchange_claims(), secret)
            await assert_refused_and_nothing_written(http, store, token)


async def test_unknown_or_missing_kid_is_401(http: httpx.AsyncClient, store: Store,
                                             tokens: TokenService, hospital: Hospital):
    private = tokens.keyring.signing_key().private
    for headers in ({"kid": "hie-20200101T000000Z-00000000"}, {"kid": hospital.kid}, {}):
        token = jwt.encode(exchange_claims(), private, algorithm="ES384",
                           headers={"typ": "at+jwt", **headers})
        await assert_refused_and_nothing_written(http, store, token)


async def test_a_client_assertion_is_not_an_access_token(http: httpx.AsyncClient,
                                                         store: Store, hospital: Hospital):
    await assert_refused_and_nothing_written(http, store, hospital.client_assertion())


async def test_only_access_tokens_pass(http: httpx.AsyncClient, store: Store,
                                       tokens: TokenService):
    key = tokens.keyring.signing_key()
    for typ in ("JWT", None):  # exchange-signed, valid claims, but not typed as access token
        headers = {"kid": key.kid, **({"typ": typ} if typ else {})}
        token = jwt.encode(exchange_claims(), key.private, algorithm="ES384", headers=headers)
        await assert_refused_and_nothing_written(http, store, token)
    assert (await http.get("/fhir/Patient", headers={
        "Authorization": f"Bearer {exchange_signed(tokens)}"})).status_code == 200


async def test_garbage_is_401(http: httpx.AsyncClient, store: Store):
    for junk in ("x", "a.b.c", "Bearer", "." * 3, "e" * 9000):
        await assert_refused_and_nothing_written(http, store, junk)


def ctx(scope: str) -> AuthContext:
    return AuthContext(organization="hospa", scopes=tuple(parse_scopes(scope)))


def test_scope_checks_raise_forbidden_outcomes():
    require(ctx("system/*.cruds"), "Encounter", "u")
    require(ctx("system/Observation.rs"), "Observation", "s")
    with pytest.raises(FhirError) as refused:
        require(ctx("system/Observation.rs"), "Encounter", "r")  # another type
    assert refused.value.status == 403
    assert refused.value.issues[0].code == "forbidden"
    with pytest.raises(FhirError):
        require(ctx("system/*.read"), "Patient", "c")  # a read-only token writing
    with pytest.raises(FhirError):
        require(ctx(""), "Patient", "r")  # a token without resource scopes
    with pytest.raises(FhirError):
        require(AuthContext(organization="hospa"), "Patient", "r")
