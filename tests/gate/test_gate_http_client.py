"""The exchange's consent clients: HTTP against a real standalone consent
service (``hie-consent serve`` under uvicorn on 127.0.0.1), in-process over the
store, and deny on every failure of the remote service."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gatekit import REGION, make_settings

from consent import service
from consent.client import HttpConsentClient, LocalConsentClient
from hie.auth.tokens import TokenService
from hie.config import Settings
from hie.gate import consent_client, service_token_provider
from hie.gate.data import StoreConsentData
from hie.registry import service as registry
from hie.store import open_store
from hie.store.base import Store
from schemas.consent import DecisionRequest, DecisionResponse

DOCTOR = DecisionRequest(organization="h2", practitioner="h2-dr0", purpose="TREAT",
                         person="p-7")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable(answer: DecisionResponse) -> bool:
    """The fail-closed answer: only the requester's own records."""
    return (not answer.permit and answer.visible_organizations == ["h2"]
            and not answer.all_organizations and not answer.break_the_glass
            and any(b.code == "consent-unavailable" for b in answer.basis))


@dataclass
class Server:
    url: str
    settings: Settings
    tokens: TokenService
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A real consent service process on the store and key folder the test shares."""
    import asyncio

    settings = make_settings(tmp_path)
    tokens = TokenService(settings)
    tokens.keyring.ensure()

    async def seed() -> None:
        store = open_store(settings.store_url)
        await store.open()
        try:
            for org in REGION:
                await registry.create_organization(store, name=f"Hospital {org}", id=org)
        finally:
            await store.close()

    asyncio.run(seed())
    port = free_port()
    env = {**os.environ, "HIE_STORE_URL": settings.store_url, "HIE_VAR_DIR": str(tmp_path),
           "HIE_BASE_URL": settings.base_url}
    command = [str(Path(sys.executable).parent / "hie-consent"), "serve", "--host",
               "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log = (tmp_path / "consent-service.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    running = Server(f"http://127.0.0.1:{port}", settings, tokens, process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(running.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the consent service did not start: "
                                   + (tmp_path / "consent-service.log").read_text())
            time.sleep(0.1)
        yield running
    finally:
        running.stop()
        log.close()


@pytest.fixture
async def shared_store(server: Server) -> AsyncIterator[Store]:
    """The test's own connection to the consent service's store file."""
    store = open_store(server.settings.store_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_decisions_over_http_follow_the_consents(server, shared_store):
    data = StoreConsentData(shared_store)
    client = HttpConsentClient(server.url, token_provider=service_token_provider(server.tokens),
                               timeout=10)
    try:
        denied = await client.decide(DOCTOR)
        assert not denied.permit and not unavailable(denied)
        grant = await service.grant_consent(data, person="p-7", organization="h2",
                                            purposes=["TREAT"])
        allowed = await client.decide(DOCTOR)
        assert allowed.permit and allowed.visible_organizations == ["h2", "h1", "h3"]
        await service.withdraw_consent(data, person="p-7", consent_id=grant["id"])
        assert not (await client.decide(DOCTOR)).permit  # at once: no cache anywhere
        emergency = DOCTOR.model_copy(update={"organization": "h3", "practitioner": "h3-dr0",
                                              "purpose": "ETREAT", "reason": "ED"})
        first = await client.decide(emergency)
        assert first.break_the_glass
        [session] = await data.break_glass("p-7")
        assert first.expires == session.expires
        assert (await client.decide(emergency)).expires == session.expires
    finally:
        await client.aclose()


async def test_a_token_the_service_refuses_means_deny(server, caplog):
    hospital_token, _, _ = server.tokens.issue(client_id="h2", organization="h2",
                                               scope="system/*.cruds")
    client = HttpConsentClient(server.url, token_provider=lambda: hospital_token, timeout=10)
    with caplog.at_level(logging.WARNING, logger="consent.client"):
        answer = await client.decide(DOCTOR)
    await client.aclose()
    assert unavailable(answer) and "HTTP 403" in answer.basis[-1].text
    assert hospital_token not in caplog.text and "consent service unavailable" in caplog.text


async def test_a_service_that_stopped_means_deny(server):
    client = HttpConsentClient(server.url, token_provider=service_token_provider(server.tokens),
                               timeout=5)
    assert not unavailable(await client.decide(DOCTOR))
    server.stop()
    answer = await client.decide(DOCTOR)
    await client.aclose()
    assert unavailable(answer)


async def test_nothing_listening_means_deny():
    client = HttpConsentClient(f"http://127.0.0.1:{free_port()}", token_provider=lambda: "t",
                               timeout=2)
    answer = await client.decide(DOCTOR)
    await client.aclose()
    assert unavailable(answer) and "connection failed" in answer.basis[-1].text


def mock_client(handler, token_provider=lambda: "secret-token") -> HttpConsentClient:
    return HttpConsentClient("http://consent.test", token_provider=token_provider, timeout=1,
                             transport=httpx.MockTransport(handler))


ALLOW_EVERYTHING = DecisionResponse(permit=True, visible_organizations=["h2", "h1"],
                                    all_organizations=True).model_dump_json()


@pytest.mark.parametrize(("handler", "why"), [
    (lambda r: httpx.Response(500, text="Internal error"), "HTTP 500"),
    (lambda r: httpx.Response(503, json={"status": "unavailable"}), "HTTP 503"),
    (lambda r: httpx.Response(302, headers={"Location": "http://evil.test/"}), "HTTP 302"),
    (lambda r: httpx.Response(200, text="<html>hello</html>"), "malformed"),
    (lambda r: httpx.Response(200, json={"permit": True}), "malformed"),
    (lambda r: httpx.Response(200, json=[1, 2]), "malformed"),
    (lambda r: httpx.Response(200, content=ALLOW_EVERYTHING.encode()[:-5]), "malformed"),
])
async def test_an_unusable_answer_means_deny(handler, why):
    client = mock_client(handler)
    answer = await client.decide(DOCTOR)
    await client.aclose()
    assert unavailable(answer) and why in answer.basis[-1].text


async def test_a_timeout_means_deny():
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    answer = await mock_client(slow).decide(DOCTOR)
    assert unavailable(answer) and "timeout" in answer.basis[-1].text


async def test_a_token_that_cannot_be_made_means_deny():
    def broken() -> str:
        raise OSError("key folder unreadable")

    answer = await mock_client(lambda r: httpx.Response(200, content=ALLOW_EVERYTHING),
                               token_provider=broken).decide(DOCTOR)
    assert unavailable(answer)


async def test_the_request_carries_the_token_and_the_decision_request():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=ALLOW_EVERYTHING)

    answer = await mock_client(handler).decide(DOCTOR)
    assert answer.permit
    assert seen[0].url == "http://consent.test/consent/decide"
    assert seen[0].headers["authorization"] == "Bearer secret-token"
    assert DecisionRequest.model_validate_json(seen[0].content) == DOCTOR


async def test_the_exchange_picks_in_process_or_http(tmp_path):
    settings = make_settings(tmp_path)
    store = open_store(settings.store_url)
    await store.open()
    try:
        for org in REGION:
            await registry.create_organization(store, name=f"Hospital {org}", id=org)
        local = consent_client(settings, store)
        assert isinstance(local, LocalConsentClient)
        await service.grant_consent(StoreConsentData(store), person="p-7", organization="h2",
                                    purposes=["TREAT"])
        answer = await local.decide(DOCTOR)
        assert answer.permit and answer.visible_organizations == ["h2", "h1", "h3"]
        TokenService(settings).keyring.ensure()
        remote = consent_client(settings.model_copy(update={"consent_url": "http://c.test"}),
                                store)
        assert isinstance(remote, HttpConsentClient)
        assert remote.url == "http://c.test/consent/decide"
        await remote.aclose()
    finally:
        await store.close()


async def test_service_tokens_are_reused_until_half_their_life(tmp_path):
    settings = make_settings(tmp_path)
    tokens = TokenService(settings)
    tokens.keyring.ensure()
    now = [1_000_000.0]
    provide = service_token_provider(tokens, lifetime=120, clock=lambda: now[0])
    first = provide()
    now[0] += 59
    assert provide() == first
    now[0] += 2
    assert provide() != first
    claims = tokens.verify(provide())
    assert claims["organization"] == "exchange" and claims["roles"] == ["exchange-service"]
