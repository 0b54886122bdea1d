"""The pusher's ``dicom`` messages: one STOW-RS request per study, each message settled
from the exchange's answer (against a fake with the exchange's STOW-RS contract)."""

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
from adapters.sources import dicom_messages
from hie.auth.jwk import new_client_key

CT = "1.2.840.10008.5.1.4.1.1.2"
KEY = new_client_key("ES384", kid="k")[0]


def instance(study: str, sop: str, *, name: str = "Li^Lei") -> dict:
    return {"00080016": {"vr": "UI", "Value": [CT]}, "00080018": {"vr": "UI", "Value": [sop]},
            "0020000D": {"vr": "UI", "Value": [study]},
            "0020000E": {"vr": "UI", "Value": [f"{study}.1"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]}}


def queue(box: Outbox, study: str, n: int, **kw: str) -> list[str]:
    sops = [f"{study}.1.{i}" for i in range(1, n + 1)]
    for sop in sops:
        dicom_messages.put(box, instance(study, sop, **kw), sop_instance_uid=sop, source="t")
    return sops


class FakeExchange:
    """``POST /dicomweb/studies`` as the exchange answers it: 200 all stored, 202 some
    failed, 409 none stored; instances named ``fail`` fail with 0xC000."""

    def __init__(self, *, fail: frozenset[str] = frozenset(),
                 before: Callable[[list[dict]], httpx.Response | None] | None = None) -> None:
        self.fail = fail
        self.before = before
        self.requests: list[list[dict]] = []
        self.stored: dict[str, dict] = {}
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 300})
        assert request.method == "POST" and request.url.path == "/dicomweb/studies"
        self.headers.append(request.headers)
        body = json.loads(request.content)
        self.requests.append(body)
        early = self.before(body) if self.before else None
        if early is not None:
            return early
        referenced, failed = [], []
        for ds in body:
            sop = ds["00080018"]["Value"][0]
            item = {"00081150": {"vr": "UI", "Value": [CT]},
                    "00081155": {"vr": "UI", "Value": [sop]}}
            if sop in self.fail:
                failed.append(item | {"00081197": {"vr": "US", "Value": [0xC000]}})
            else:
                self.stored[sop] = ds
                referenced.append(item)
        answer = {"00081199": {"vr": "SQ", "Value": referenced}}
        if failed:
            answer["00081198"] = {"vr": "SQ", "Value": failed}
        status = 409 if not referenced else 202 if failed else 200
        return httpx.Response(status, json=answer,
                              headers={"Content-Type": "application/dicom+json"})


def pusher(box: Outbox, fake: FakeExchange) -> Pusher:
    client = ExchangeClient("http://x.test", client_id="c", kid="k", private_pem=KEY,
                            transport=httpx.MockTransport(fake))
    return Pusher(box, client, workers=2, max_delay=0.05)


def studies(request: list[dict]) -> list[str]:
    """The Study Instance UIDs of a request's instances, in order, each once."""
    return list(dict.fromkeys(ds["0020000D"]["Value"][0] for ds in request))


def test_requests_of_at_most_100_a_study_together_and_each_instance_settled(
        tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    big = queue(box, "1.2.3.1", 230)
    small = queue(box, "1.2.3.2", 5)
    fake = FakeExchange(fail=frozenset({small[2]}))
    p = pusher(box, fake)
    p.run(drain=True)
    assert sorted(len(r) for r in fake.requests) == [35, 100, 100]
    # the big study's instances are not interleaved with the small one's
    assert [studies(r) for r in sorted(fake.requests, key=len)] == [
        ["1.2.3.1", "1.2.3.2"], ["1.2.3.1"], ["1.2.3.1"]]
    assert set(fake.stored) == set(big + small) - {small[2]}
    state = box.status()
    assert state.depth == 0 and state.delivered == 234 and p.sent == 234 and p.refused == 1
    [dead] = state.dead_letters
    assert dead.patient_key == f"dicom:{small[2]}" and "0xC000" in dead.error
    headers = fake.headers[0]
    assert headers["content-type"] == "application/dicom+json"
    assert headers["accept"] == "application/dicom+json"
    assert headers["authorization"] == "Bearer tok"


def test_none_stored_409_makes_dead_letters_of_the_failed_only(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    sops = queue(box, "1.2.3.3", 2)
    p = pusher(box, FakeExchange(fail=frozenset(sops)))
    p.run(drain=True)
    assert len(box.status().dead_letters) == 2 and p.sent == 0


def test_503_and_429_retry_every_instance_until_stored(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    sops = queue(box, "1.2.3.4", 7)
    answers = [httpx.Response(503, headers={"Retry-After": "0"}), httpx.Response(429)]
    fake = FakeExchange(before=lambda body: answers.pop(0) if answers else None)
    p = pusher(box, fake)
    p.run(drain=True)
    assert len(fake.requests) == 3 and set(fake.stored) == set(sops)
    assert box.status().delivered == 7 and not box.status().dead_letters


def test_400_is_bisected_down_to_the_malformed_instance(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    good = queue(box, "1.2.3.5", 9)
    bad_doc = instance("1.2.3.5", "1.2.3.5.bad", name="BAD")
    dicom_messages.put(box, bad_doc, sop_instance_uid="1.2.3.5.bad", source="t")

    def malformed(body: list[dict]) -> httpx.Response | None:
        if any(ds["00100010"]["Value"][0]["Alphabetic"] == "BAD" for ds in body):
            return httpx.Response(400, json={"00000902": {"vr": "LO", "Value": ["bad PN"]}})
        return None

    fake = FakeExchange(before=malformed)
    pusher(box, fake).run(drain=True)
    assert set(fake.stored) == set(good)
    [dead] = box.status().dead_letters
    assert dead.patient_key == "dicom:1.2.3.5.bad" and "400" in dead.error


def test_415_for_the_whole_request_makes_every_instance_a_dead_letter(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    queue(box, "1.2.3.6", 3)
    fake = FakeExchange(before=lambda body: httpx.Response(415))
    pusher(box, fake).run(drain=True)
    assert len(fake.requests) == 1 and len(box.status().dead_letters) == 3


def test_a_payload_that_is_not_an_instance_is_refused_alone(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    sops = queue(box, "1.2.3.7", 2)
    box.put(patient_key="dicom:x", payload=b"{not json", kind="dicom", source="t")
    fake = FakeExchange()
    pusher(box, fake).run(drain=True)
    assert set(fake.stored) == set(sops)
    [dead] = box.status().dead_letters
    assert dead.patient_key == "dicom:x" and "not a DICOM JSON dataset" in dead.error


def test_bundles_and_instances_in_one_outbox_go_to_their_endpoints(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    box.put(patient_key="p", payload=b'{"resourceType": "Bundle"}', source="t")
    sops = queue(box, "1.2.3.8", 3)
    fake = FakeExchange()
    paths: list[str] = []

    def route(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/fhir":
            return httpx.Response(200, json={"resourceType": "Bundle"})
        return fake(request)

    client = ExchangeClient("http://x.test", client_id="c", kid="k", private_pem=KEY,
                            transport=httpx.MockTransport(route))
    Pusher(box, client, workers=2).run(drain=True)
    assert set(fake.stored) == set(sops) and box.status().delivered == 4
    assert sorted(paths) == ["/auth/token", "/dicomweb/studies", "/fhir"]


def test_small_studies_share_a_request(tmp_path: Path):
    """Every request costs the exchange something of its own (a token check, a
    response): ten one-instance studies go in one request, not ten."""
    box = Outbox(tmp_path / "o.db")
    sops = [sop for i in range(10) for sop in queue(box, f"1.2.4.{i}", 1)]
    fake = FakeExchange()
    pusher(box, fake).run(drain=True)
    assert len(fake.requests) == 1 and len(studies(fake.requests[0])) == 10
    assert set(fake.stored) == set(sops) and box.status().delivered == 10


class SlowExchange(FakeExchange):
    """The fake exchange taking 30 ms per request, counting requests in flight."""

    def __init__(self) -> None:
        super().__init__(before=self._work)
        self.flying = self.most = 0
        self.lock = threading.Lock()

    def _work(self, body: list[dict]) -> None:
        with self.lock:
            self.flying += 1
            self.most = max(self.most, self.flying)
        time.sleep(0.03)
        with self.lock:
            self.flying -= 1


def test_instances_queued_while_a_request_flies_go_together(tmp_path: Path):
    """A C-STORE SCP queues one instance at a time, studies interleaved when several
    modalities send. What is queued while a STOW-RS request is out goes in the next
    one, studies packed together: a slow exchange gets few big requests, not one per
    instance or per study."""
    box = Outbox(tmp_path / "o.db")
    fake = SlowExchange()
    p = Pusher(box, ExchangeClient("http://x.test", client_id="c", kid="k", private_pem=KEY,
                                   transport=httpx.MockTransport(fake)), workers=8)
    thread = threading.Thread(target=p.run)
    thread.start()
    sops = []
    for i in range(200):  # an instance every ~1 ms, four studies in turn
        sop = f"1.2.5.{i % 4}.1.{i}"
        dicom_messages.put(box, instance(f"1.2.5.{i % 4}", sop), sop_instance_uid=sop,
                           source="t")
        sops.append(sop)
        time.sleep(0.001)
    p.finish()
    thread.join(30)
    assert set(fake.stored) == set(sops) and box.status().depth == 0
    assert len(fake.requests) <= 20, [len(r) for r in fake.requests]


def test_a_backlog_goes_in_full_requests_at_most_stow_flights_at_once(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    sops = queue(box, "1.2.6", 1000)
    fake = SlowExchange()
    p = Pusher(box, ExchangeClient("http://x.test", client_id="c", kid="k", private_pem=KEY,
                                   transport=httpx.MockTransport(fake)), workers=8)
    p.run(drain=True)
    assert set(fake.stored) == set(sops)
    assert [len(r) for r in fake.requests] == [100] * 10
    assert fake.most <= p.stow_flights == 2


def test_instances_arriving_one_by_one_wait_to_fill_a_request(tmp_path: Path):
    """Even a fast exchange gets full requests from an SCP receiving one instance every
    few milliseconds: the pusher lets a batch fill (up to stow.BATCH, at most
    ``stow_linger`` seconds) instead of sending each instance as it comes, and sends
    what is left ``stow_quiet`` seconds after the last one."""
    box = Outbox(tmp_path / "o.db")
    fake = FakeExchange()
    p = Pusher(box, ExchangeClient("http://x.test", client_id="c", kid="k", private_pem=KEY,
                                   transport=httpx.MockTransport(fake)), workers=8,
               stow_linger=5.0, stow_quiet=0.2)
    thread = threading.Thread(target=p.run)
    thread.start()
    time.sleep(0.1)  # the pusher idles, as when a modality starts sending
    try:
        sops = []
        for i in range(250):  # one study, an instance every ~2 ms
            sop = f"1.2.7.1.{i}"
            dicom_messages.put(box, instance("1.2.7", sop), sop_instance_uid=sop, source="t")
            sops.append(sop)
            time.sleep(0.002)
        last = time.monotonic()
        deadline = last + 5
        while box.status().depth and time.monotonic() < deadline:
            time.sleep(0.01)
        settled = time.monotonic() - last
    finally:
        p.stop()
        thread.join(10)
    assert set(fake.stored) == set(sops) and box.status().depth == 0
    sizes = [len(r) for r in fake.requests]
    # a put racing a claim may leave a straggler of one or two: harmless, and rare
    assert len(sizes) <= 4 and sizes.count(100) >= 2, sizes
    assert 0.15 < settled < 2.0, settled  # the rest went after stow_quiet, not stow_linger
