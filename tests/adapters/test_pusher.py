"""The pusher: order per patient through retries, poison to dead letters."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from adapters.client import ExchangeClient
from adapters.outbox import Outbox
from adapters.pusher import Pusher
from hie.auth.jwk import new_client_key


def test_drain_keeps_order_per_patient_through_retries(tmp_path: Path):
    received: list[str] = []
    failures = {"a1": 2}  # a1 fails twice (503), then goes through

    def exchange(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        name = json.loads(request.content)["name"]
        if name == "bad":
            return httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "invalid", "diagnostics": "nope"}]})
        if failures.get(name):
            failures[name] -= 1
            return httpx.Response(503, headers={"Retry-After": "0"})
        received.append(name)
        return httpx.Response(200, json={})

    box = Outbox(tmp_path / "o.db")
    for patient, name in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "bad"), ("b", "b2"),
                          ("a", "a3")]:
        box.put(patient_key=patient, payload=json.dumps({"name": name}).encode(), source="t")
    client = ExchangeClient("http://x.test", client_id="c", kid="k",
                            private_pem=new_client_key("ES384", kid="k")[0],
                            transport=httpx.MockTransport(exchange))
    pusher = Pusher(box, client, workers=2, max_delay=0.05)
    pusher.run(drain=True)
    assert [n for n in received if n.startswith("a")] == ["a1", "a2", "a3"]
    assert [n for n in received if n.startswith("b")] == ["b1", "b2"]
    state = box.status()
    assert state.depth == 0 and state.delivered == 5 and pusher.refused == 1
    assert [d.error for d in state.dead_letters] == ["nope"]


def test_a_merge_goes_to_patient_merge(tmp_path: Path):
    paths: list[str] = []

    def exchange(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        paths.append(request.url.path)
        return httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []})

    box = Outbox(tmp_path / "o.db")
    box.put(patient_key="a", payload=b'{"resourceType": "Parameters"}', kind="merge",
            source="hl7v2")
    client = ExchangeClient("http://x.test", client_id="c", kid="k",
                            private_pem=new_client_key("ES384", kid="k")[0],
                            transport=httpx.MockTransport(exchange))
    Pusher(box, client).run(drain=True)
    assert paths == ["/fhir/Patient/$merge"]
    assert box.status().delivered == 1


def test_a_kind_the_adapter_cannot_send_becomes_a_dead_letter(tmp_path: Path):
    def exchange(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing must be sent")

    box = Outbox(tmp_path / "o.db")
    box.put(patient_key="a", payload=b'{"resourceType": "Parameters"}', kind="unlink",
            source="hl7v2")
    client = ExchangeClient("http://x.test", client_id="c", kid="k",
                            private_pem=new_client_key("ES384", kid="k")[0],
                            transport=httpx.MockTransport(exchange))
    Pusher(box, client).run(drain=True)
    [dead] = box.status().dead_letters
    assert "kind 'unlink'" in dead.error


Handler = Callable[[httpx.Request], httpx.Response]


def _token_or(handler: Handler) -> Handler:
    """``handler`` behind a token endpoint that always grants."""
    def exchange(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        return handler(request)
    return exchange


def _client(handler: Handler) -> ExchangeClient:
    return ExchangeClient("http://x.test", client_id="c", kid="k",
                          private_pem=new_client_key("ES384", kid="k")[0],
                          transport=httpx.MockTransport(_token_or(handler)))


def test_a_slow_message_does_not_hold_back_the_others(tmp_path: Path):
    """Freed slots are refilled at once: while one request hangs, the other worker goes
    through every other patient's message (a batch-at-a-time pusher would wait)."""
    quick: list[str] = []
    release = threading.Event()

    def exchange(request: httpx.Request) -> httpx.Response:
        name = json.loads(request.content)["name"]
        if name == "slow":
            assert release.wait(10), "the other messages did not go past the slow one"
        else:
            quick.append(name)
            if len(quick) == 20:
                release.set()
        return httpx.Response(200, json={})

    box = Outbox(tmp_path / "o.db")
    box.put(patient_key="s", payload=b'{"name": "slow"}', source="t")
    for i in range(20):
        box.put(patient_key=f"p{i}", payload=json.dumps({"name": f"q{i}"}).encode(),
                source="t")
    Pusher(box, _client(exchange), workers=2).run(drain=True)
    assert len(quick) == 20 and box.status().delivered == 21


def test_after_an_outage_the_first_answer_makes_waiting_messages_due(tmp_path: Path):
    """Backoffs grow while the exchange is unreachable; once it answers again, what
    waited is sent at once instead of after the rest of its backoff."""
    down = {"left": 1}
    received: list[str] = []

    def exchange(request: httpx.Request) -> httpx.Response:
        if down["left"]:
            down["left"] -= 1
            raise httpx.ConnectError("connection refused")
        received.append(json.loads(request.content)["name"])
        return httpx.Response(200, json={})

    box = Outbox(tmp_path / "o.db")
    first = box.put(patient_key="a", payload=b'{"name": "a"}', source="t")
    for name in "bcd":  # waited out long backoffs while the exchange was down
        box.put(patient_key=name, payload=json.dumps({"name": name}).encode(), source="t")
    for m in box.claim(10):
        if m.id != first:
            box.retry(m.id, "ConnectError", time.time() + 3600)
    pusher = Pusher(box, _client(exchange), workers=1, max_delay=0.2)
    done = threading.Thread(target=pusher.run, kwargs={"drain": True}, daemon=True)
    done.start()
    done.join(10)
    assert not done.is_alive(), "messages still waited out their backoff"
    assert sorted(received) == ["a", "b", "c", "d"]


def test_an_idle_pusher_sends_a_new_message_at_once(tmp_path: Path):
    sent = threading.Event()
    box = Outbox(tmp_path / "o.db")
    pusher = Pusher(box, _client(lambda request: httpx.Response(200, json={})),
                    idle_poll=30)
    pusher.on_sent = lambda message: sent.set()
    thread = threading.Thread(target=pusher.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)  # idle, waiting for up to idle_poll
        box.put(patient_key="a", payload=b"{}", source="t")
        assert sent.wait(5), "the put did not wake the pusher"
    finally:
        pusher.stop()
        thread.join(5)
    assert not thread.is_alive(), "stop() did not wake the pusher"
