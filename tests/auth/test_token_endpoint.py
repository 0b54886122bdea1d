"""POST /auth/token for hospital systems (client_credentials), attacked as an
attacker would: every refusal is the RFC 6749 error JSON and issues nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import jwt
import orjson
from auth.trustkit import (
    FHIR_BASE,
    TOKEN_URL,
    Hospital,
    claims_for,
    forge,
    refused,
    register,
    sign,
)
from cryptography.hazmat.primitives.asymmetric import ec

from hie.auth.jwk import new_client_key
from hie.auth.service import SEEN_JTI
from hie.auth.tokens import TokenService
from hie.registry import service as registry
from hie.registry.models import CLIENT
from hie.store.base import Store, StoredResource, Transaction, WriteRecord
from hie.store.index import IndexEntries


async def test_client_credentials_issues_a_short_lived_exchange_token(
        http: httpx.AsyncClient, hospital: Hospital, tokens: TokenService):
    r = await http.post("/auth/token", data=hospital.form("system/*.cruds"))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "system/*.cruds"
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "ES384"
    assert header["kid"] in [k["kid"] for k in (await http.get("/auth/jwks")).json()["keys"]]
    claims = tokens.verify(body["access_token"])
    assert claims["iss"] == "http://testserver"
    assert claims["aud"] == FHIR_BASE
    assert claims["sub"] == claims["client_id"] == hospital.client_id
    assert claims["organization"] == "hospa"
    assert claims["exp"] - claims["iat"] == 300
    assert "practitioner" not in claims and claims["roles"] == []


async def test_rs384_client_and_v1_scopes(http: httpx.AsyncClient, other_hospital: Hospital):
    r = await http.post("/auth/token",
                        data=other_hospital.form("system/*.read system/Observation.rs"))
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/*.read system/Observation.rs"


async def test_client_roles_are_carried_into_the_token(http: httpx.AsyncClient, store: Store,
                                                       tokens: TokenService):
    office = await register(store, "office", roles=("privacy-officer",), doctors=0)
    r = await http.post("/auth/token", data=office.form())
    assert tokens.verify(r.json()["access_token"])["roles"] == ["privacy-officer"]


async def test_scope_rules(http: httpx.AsyncClient, hospital: Hospital):
    await refused(http, hospital.form(None), "invalid_scope")
    await refused(http, hospital.form("user/*.rs"), "invalid_scope")  # not for a system
    await refused(http, hospital.form("system/*.xyz"), "invalid_scope")
    await refused(http, hospital.form("system/Observation.rs?category=lab"), "invalid_scope")
    r = await http.post("/auth/token", data=hospital.form("user/*.rs system/Patient.rs"))
    assert r.json()["scope"] == "system/Patient.rs"  # the grantable part only


async def test_request_shape_errors(http: httpx.AsyncClient, hospital: Hospital):
    await refused(http, hospital.form(grant_type="password"), "unsupported_grant_type")
    await refused(http, hospital.form(client_assertion_type="urn:x"), "invalid_request")
    await refused(http, hospital.form(client_assertion=None), "invalid_request")
    r = await http.post("/auth/token", json=hospital.form())
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    form = hospital.form()
    body = "&".join(f"{k}={v}" for k, v in form.items()) + "&scope=system/*.rs"
    r = await http.post("/auth/token", content=body,
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def test_unknown_or_inactive_client(http: httpx.AsyncClient, store: Store,
                                          hospital: Hospital):
    stranger = Hospital(hospital.org, hospital.pem, hospital.kid, "ES384")
    await refused(http, stranger.form(client_assertion=stranger.client_assertion(
        iss="nobody", sub="nobody")), "invalid_client")
    await registry.set_organization_active(store, id="hospa", active=False)
    await refused(http, hospital.form(), "invalid_client")


async def test_kid_must_match_exactly_one_registered_key(http: httpx.AsyncClient,
                                                         store: Store, hospital: Hospital):
    claims = claims_for(hospital.client_id)
    await refused(http, hospital.form(client_assertion=sign(
        claims, hospital.pem, alg="ES384", kid="no-such-kid")), "invalid_client")
    await refused(http, hospital.form(client_assertion=sign(
        claims, hospital.pem, alg="ES384", kid=None)), "invalid_client")
    # The registry refuses duplicate kids; a document edited behind its back must
    # still not let the exchange pick one of two keys.
    _, twin = new_client_key("ES384", kid=hospital.kid)
    rec = await store.read(CLIENT, "hospa")
    assert isinstance(rec, StoredResource)
    doc = orjson.loads(rec.body)
    doc["jwks"]["keys"].append(twin)

    async def tamper(tx: Transaction) -> None:
        await tx.put(WriteRecord(CLIENT, "hospa", rec.version + 1, rec.last_updated,
                                 orjson.dumps(doc), source=rec.source,
                                 index=IndexEntries(token=[("client_id", "", "hospa")])))

    await store.transact(tamper)
    body = await refused(http, hospital.form(), "invalid_client")
    assert "more than one" in body["error_description"]


async def test_algorithm_allow_list(http: httpx.AsyncClient, hospital: Hospital):
    claims = claims_for(hospital.client_id)
    none = forge({"alg": "none", "kid": hospital.kid}, claims, None)
    await refused(http, hospital.form(client_assertion=none), "invalid_client")
    # HS256 keyed with the registered public key: the key decides the algorithm.
    hs = forge({"alg": "HS256", "kid": hospital.kid}, claims,
               json.dumps(hospital.org.keys[0]).encode())
    await refused(http, hospital.form(client_assertion=hs), "invalid_client")
    # An RS384 signature under a kid registered for ES384.
    rsa_pem, _ = new_client_key("RS384", kid=hospital.kid)
    await refused(http, hospital.form(client_assertion=sign(
        claims, rsa_pem, alg="RS384", kid=hospital.kid)), "invalid_client")
    # ES256 is not on the list either.
    p256 = ec.generate_private_key(ec.SECP256R1())
    await refused(http, hospital.form(client_assertion=jwt.encode(
        claims, p256, algorithm="ES256", headers={"kid": hospital.kid})), "invalid_client")


async def test_bad_signature(http: httpx.AsyncClient, hospital: Hospital):
    forged_pem, _ = new_client_key("ES384", kid=hospital.kid)
    await refused(http, hospital.form(client_assertion=sign(
        claims_for(hospital.client_id), forged_pem, alg="ES384", kid=hospital.kid)),
        "invalid_client")
    head, payload, sig = hospital.client_assertion().split(".")
    other = json.loads(base64.urlsafe_b64decode(payload + "=="))
    other["sub"] = other["iss"] = "hospb"
    tampered = base64.urlsafe_b64encode(json.dumps(other).encode()).rstrip(b"=").decode()
    await refused(http, hospital.form(client_assertion=f"{head}.{tampered}.{sig}"),
                  "invalid_client")


async def test_assertion_claims_are_strict(http: httpx.AsyncClient, hospital: Hospital):
    now = int(time.time())
    bad = [
        {"exp": now + 600},                      # more than five minutes ahead
        {"exp": now - 120, "iat": now - 200},    # expired
        {"exp": None}, {"iat": None}, {"jti": None},
        {"iat": now + 120},                      # issued in the future
        {"nbf": now + 120},                      # not yet valid
        {"aud": f"{FHIR_BASE}"},                 # the wrong audience
        {"aud": "https://elsewhere.example/auth/token"},
        {"sub": "someone-else"},                 # sub must equal iss
        {"jti": ""},
    ]
    for overrides in bad:
        await refused(http, hospital.form(client_assertion=hospital.client_assertion(
            **overrides)), "invalid_client")
    ok = hospital.client_assertion(aud=[TOKEN_URL, "https://other"])  # RFC 7519 aud list
    assert (await http.post("/auth/token",
                            data=hospital.form(client_assertion=ok))).status_code == 200


async def test_replayed_jti_is_refused(http: httpx.AsyncClient, hospital: Hospital,
                                       store: Store):
    form = hospital.form()
    assert (await http.post("/auth/token", data=form)).status_code == 200
    body = await refused(http, form, "invalid_client")
    assert "replay" in body["error_description"]
    # Same jti in a freshly signed assertion: still a replay.
    jti = jwt.decode(form["client_assertion"], options={"verify_signature": False})["jti"]
    await refused(http, hospital.form(client_assertion=hospital.client_assertion(jti=jti)),
                  "invalid_client")
    # The seen jti is an internal document: never served under /fhir.
    assert (await http.get(f"/fhir/{SEEN_JTI}")).status_code in (401, 404)


async def test_concurrent_replays_issue_one_token(http: httpx.AsyncClient,
                                                  hospital: Hospital):
    form = hospital.form()
    answers = await asyncio.gather(*[http.post("/auth/token", data=form) for _ in range(8)])
    assert sorted(r.status_code for r in answers) == [200] + [401] * 7


async def test_a_hospital_cannot_sign_for_another(http: httpx.AsyncClient,
                                                  hospital: Hospital, other_hospital: Hospital):
    claims = claims_for(other_hospital.client_id)
    # A's key under A's kid, claiming to be B: B has no key with that kid.
    await refused(http, hospital.form(client_assertion=sign(
        claims, hospital.pem, alg="ES384", kid=hospital.kid)), "invalid_client")
    # A's key under B's kid: the signature does not verify with B's key.
    await refused(http, hospital.form(client_assertion=sign(
        claims, hospital.pem, alg="ES384", kid=other_hospital.kid)),
        "invalid_client")
