"""The push client: SMART Backend Services tokens and the sorting of answers,
against a real exchange and, for the error paths, ``httpx.MockTransport``."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import pytest
from adapter_exchange import Exchange

from adapters.client import ExchangeClient, backoff
from hie.auth.jwk import new_client_key

BASE = "http://exchange.test"


def patient_bundle(mrn: str) -> bytes:
    system = "urn:oid:1.2.156.adapt.mrn"
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:7d0c7a8e-0b8c-4c3a-9a61-0f3c1f0e9b01",
        "resource": {"resourceType": "Patient", "identifier": [{"system": system,
                                                                 "value": mrn}],
                     "name": [{"family": "张", "given": ["三"]}], "gender": "male"},
        "request": {"method": "PUT", "url": f"Patient?identifier={system}|{mrn}"}}]}).encode()


def real_client(exchange: Exchange, **kw: object) -> ExchangeClient:
    return ExchangeClient(exchange.base, client_id=exchange.client_id,
                          private_pem=exchange.private_pem, kid=exchange.kid, **kw)


def test_bundle_sent_twice_to_a_real_exchange_writes_one_patient(exchange: Exchange):
    with real_client(exchange) as client:
        assert client.alg == "ES384"
        first = client.post_bundle(patient_bundle("C1"))
        assert first.outcome == "ok", first.error
        again = client.post_bundle(patient_bundle("C1"))
        assert again.outcome == "ok"
    assert exchange.count("Patient", identifier="urn:oid:1.2.156.adapt.mrn|C1") == 1


def test_invalid_resource_is_poison_with_the_outcome(exchange: Exchange):
    bad = json.loads(patient_bundle("C2"))
    bad["entry"][0]["resource"]["gender"] = "not-a-gender"
    with real_client(exchange) as client:
        result = client.post_bundle(json.dumps(bad).encode())
    assert result.outcome == "poison" and result.status == 400
    assert json.loads(result.body)["resourceType"] == "OperationOutcome"


def test_unregistered_key_is_retried_not_poison(exchange: Exchange):
    pem, _ = new_client_key("RS384", kid="nobody")
    with ExchangeClient(exchange.base, client_id=exchange.client_id, private_pem=pem,
                        kid="nobody") as client:
        assert client.alg == "RS384"
        result = client.post_bundle(patient_bundle("C3"))
    assert result.outcome == "retry" and result.status == 401


def test_exchange_down_is_retried():
    with ExchangeClient("http://127.0.0.1:9", client_id="x", kid="k",
                        private_pem=new_client_key("ES384", kid="k")[0], timeout=2) as client:
        result = client.post_bundle(b"{}")
    assert result.outcome == "retry" and result.status is None


class FakeExchange:
    """A token endpoint and a FHIR base answering from a script."""

    def __init__(self, answers: list[httpx.Response], expires_in: int = 300) -> None:
        self.answers = answers
        self.expires_in = expires_in
        self.assertions: list[str] = []
        self.tokens_used: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            form = dict(httpx.QueryParams(request.content.decode()))
            assert form["grant_type"] == "client_credentials"
            self.assertions.append(form["client_assertion"])
            return httpx.Response(200, json={"access_token": f"t{len(self.assertions)}",
                                             "token_type": "bearer",
                                             "expires_in": self.expires_in})
        self.tokens_used.append(request.headers["Authorization"])
        return self.answers.pop(0)


def fake_client(fake: FakeExchange, pem: str, **kw: object) -> ExchangeClient:
    return ExchangeClient(BASE, client_id="renji", private_pem=pem, kid="k1",
                          transport=httpx.MockTransport(fake), **kw)


@pytest.fixture(scope="module")
def key() -> tuple[str, dict]:
    return new_client_key("ES384", kid="k1")


def test_assertion_claims_and_token_reuse(key: tuple[str, dict]):
    pem, jwk = key
    fake = FakeExchange([httpx.Response(200, json={}), httpx.Response(200, json={})])
    with fake_client(fake, pem) as client:
        assert client.post_bundle(b"{}").outcome == "ok"
        assert client.post_bundle(b"{}").outcome == "ok"
    assert len(fake.assertions) == 1 and fake.tokens_used == ["Bearer t1"] * 2
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(fake.assertions[0], public, algorithms=["ES384"],
                        audience=f"{BASE}/auth/token")
    assert jwt.get_unverified_header(fake.assertions[0])["kid"] == "k1"
    assert claims["iss"] == claims["sub"] == "renji"
    assert 0 < claims["exp"] - time.time() <= 300


def test_token_is_renewed_before_it_expires(key: tuple[str, dict]):
    fake = FakeExchange([httpx.Response(200)] * 2, expires_in=1)
    with fake_client(fake, key[0]) as client:
        client.post_bundle(b"{}")
        time.sleep(0.85)  # a fifth of the life before expiry: renew
        client.post_bundle(b"{}")
    assert fake.tokens_used == ["Bearer t1", "Bearer t2"]
    ids = {jwt.decode(a, options={"verify_signature": False})["jti"] for a in fake.assertions}
    assert len(ids) == 2


def test_answers_are_sorted_retry_or_poison(key: tuple[str, dict]):
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error",
                                                               "code": "invalid"}]}
    fake = FakeExchange([httpx.Response(429, headers={"Retry-After": "7"}),
                         httpx.Response(503), httpx.Response(422, json=outcome),
                         httpx.Response(401), httpx.Response(200)])
    with fake_client(fake, key[0]) as client:
        r429, r503, r422 = (client.post_bundle(b"{}") for _ in range(3))
        after_401 = client.post_bundle(b"{}")
    assert (r429.outcome, r429.retry_after) == ("retry", 7.0)
    assert r503.outcome == "retry"
    assert r422.outcome == "poison" and json.loads(r422.body) == outcome
    # a 401 drops the token and tries once more with a fresh one
    assert after_401.outcome == "ok" and fake.tokens_used[-2:] == ["Bearer t1", "Bearer t2"]


def test_backoff_grows_and_is_jittered():
    for attempt in range(10):
        assert 0 <= backoff(attempt, base=0.5, cap=60) <= min(60, 0.5 * 2 ** attempt)
    assert len({backoff(8) for _ in range(20)}) > 1
