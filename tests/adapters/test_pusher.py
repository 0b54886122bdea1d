"""The pusher: order per patient through retries, poison to dead letters."""

from __future__ import annotations

import json
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
