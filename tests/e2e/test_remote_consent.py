"""The exchange with a REMOTE consent service, end to end with real processes.

``hie demo`` seeds a region into a SQLite store; ``hie-consent serve`` runs on
its own port over the same store, key folder and base URL; the exchange runs
with ``HIE_CONSENT_URL`` pointing at it, so every consent decision goes over
HTTP. 陈静 has records only at the City First hospital; the Provincial
hospital's system registers its own Patient for her with her resident ID (the
exchange links the two), and one of its doctors reads her records:

* no consent: nothing of City First's records, through any of the paths used;
* she grants the Provincial hospital access in the consent service's portal:
  the doctor sees exactly City First's records of her;
* she withdraws: hidden again at the very next request;
* with a consent active, the consent service is stopped: deny (own records
  only), and the exchange still answers; restarted, the consent counts again;
* with a consent active, something answering errors (or garbage, or a
  redirect, or too late) on the consent service's address: deny each time —
  while a well-formed permit from the same stand-in is obeyed, so the denials
  are the error handling and not a stand-in that is never asked.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jwt
import pytest
from exchange_process import (
    HospitalSystem,
    ServiceProcess,
    exchange_env,
    free_port,
    hie,
    start_consent_service,
    start_exchange,
)

from hie.config import DEFAULT_RESIDENT_ID_SYSTEM

HOLDER = "cityfirst"  # holds the patient's records
READER = "provincial"  # registers her too; its doctor reads
DOCTOR = "provincial-dr-wu"
SOURCE = "urn:hie:organization:{}"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
WITHDRAW_LINK = re.compile(r'/portal/consents/([^/"]+)/withdraw')


@dataclass
class Region:
    """The running processes and what the test knows about the patient."""

    folder: Path
    creds: dict
    exchange: ServiceProcess
    consent_port: int
    consent: ServiceProcess | None = None
    patient: dict = field(default_factory=dict)  # from the credentials file
    own_patient: str = ""  # the Provincial hospital's Patient id for her
    holder_records: dict[str, str] = field(default_factory=dict)  # id -> type, at City First

    @property
    def base(self) -> str:
        return self.exchange.base

    @property
    def consent_base(self) -> str:
        return f"http://127.0.0.1:{self.consent_port}"

    def system(self, org: str) -> HospitalSystem:
        h = next(h for h in self.creds["hospitals"] if h["id"] == org)
        return HospitalSystem(base=self.base, client_id=h["client_id"], kid=h["kid"],
                              private_pem=h["private_key_pem"], alg=h["alg"])

    def start_consent(self) -> None:
        self.consent = start_consent_service(self.folder, self.consent_port, self.base)

    def stop_consent(self) -> None:
        if self.consent is not None:
            self.consent.stop()
            self.consent = None

    def ensure_consent(self) -> None:
        if self.consent is None or not self.consent.running():
            self.stop_consent()
            self.start_consent()


def fhir(region: Region, token: str) -> httpx.Client:
    return httpx.Client(base_url=region.base + "/fhir",
                        headers={"Authorization": f"Bearer {token}"}, timeout=15)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    folder: Path = tmp_path_factory.mktemp("remote-consent")
    port, consent_port = free_port(), free_port()
    creds_file = folder / "credentials.json"
    hie("demo", "--credentials", str(creds_file),
        env=exchange_env(folder, f"http://127.0.0.1:{port}"))
    creds = json.loads(creds_file.read_text())
    consent = start_consent_service(folder, consent_port, f"http://127.0.0.1:{port}")
    try:
        exchange = start_exchange(folder, port,
                                  HIE_CONSENT_URL=f"http://127.0.0.1:{consent_port}")
    except BaseException:
        consent.stop()
        raise
    reg = Region(folder=folder, creds=creds, exchange=exchange, consent_port=consent_port,
                 consent=consent)
    try:
        _meet_the_patient(reg)
        yield reg
    finally:
        reg.stop_consent()
        exchange.stop()


def _meet_the_patient(reg: Region) -> None:
    """Pick 陈静 (records at City First only), register her at the Provincial
    hospital by her resident ID, and note City First's records of her."""
    reg.patient = next(p for p in reg.creds["patients"] if p["hospitals"] == [HOLDER]
                       and p["name"] == "陈静")
    rid = reg.patient["resident_id"]
    with fhir(reg, reg.system(READER).token()) as c:
        r = c.post("/Patient", json={
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:2.16.156.10011.2.77.1", "value": "PR-E2E-1"},
                           {"system": DEFAULT_RESIDENT_ID_SYSTEM, "value": rid}],
            "name": [{"family": "陈", "given": ["静"]}], "gender": "female",
            "birthDate": "1955-01-08"})
        assert r.status_code == 201, r.text
        reg.own_patient = r.json()["id"]
    with fhir(reg, reg.system(HOLDER).token()) as c:
        found = c.get("/Patient", params={"identifier": f"{DEFAULT_RESIDENT_ID_SYSTEM}|{rid}"})
        assert found.status_code == 200, found.text
        [entry] = found.json()["entry"]
        everything = c.get(f"/Patient/{entry['resource']['id']}/$everything")
        assert everything.status_code == 200, everything.text
        reg.holder_records = {e["resource"]["id"]: e["resource"]["resourceType"]
                              for e in everything.json()["entry"]}
    types = set(reg.holder_records.values())
    assert {"Patient", "Condition", "Observation", "Encounter"} <= types, types


@pytest.fixture(autouse=True)
def consent_service_up(region: Region) -> None:
    """Every test starts with the real consent service running."""
    region.ensure_consent()


# -- what the doctor sees -------------------------------------------------------


@dataclass
class View:
    """City First's records of the patient the Provincial doctor got back."""

    everything: set[str]  # through $everything on the Provincial Patient
    conditions: set[str]  # through a Condition search on the Provincial Patient
    read: set[str]  # read by id (200) among City First's records
    others: list[str]  # anything else foreign that came back (must stay empty)
    own_patient_seen: bool  # the doctor always sees the own hospital's Patient


def doctor_view(reg: Region, token: str) -> View:
    holder, own = SOURCE.format(HOLDER), SOURCE.format(READER)
    others: list[str] = []

    def foreign(bundle: dict) -> set[str]:
        ids: set[str] = set()
        for e in bundle.get("entry", []):
            res = e["resource"]
            source = res.get("meta", {}).get("source")
            if source == own:
                continue
            if source == holder and res["id"] in reg.holder_records:
                ids.add(res["id"])
            else:
                others.append(f"{res['resourceType']}/{res['id']} from {source}")
        return ids

    with fhir(reg, token) as c:
        everything = c.get(f"/Patient/{reg.own_patient}/$everything")
        assert everything.status_code == 200, everything.text
        body = everything.json()
        own_seen = any(e["resource"]["id"] == reg.own_patient for e in body.get("entry", []))
        conditions = c.get("/Condition", params={"subject": f"Patient/{reg.own_patient}"})
        assert conditions.status_code == 200, conditions.text
        read: set[str] = set()
        for rid, rtype in reg.holder_records.items():
            r = c.get(f"/{rtype}/{rid}")
            # a record the doctor may not see is "not known", like one that does not exist
            assert r.status_code in (200, 404), (rtype, rid, r.status_code, r.text)
            if r.status_code == 200:
                read.add(rid)
            else:
                assert r.json()["issue"][0]["code"] == "not-found", r.text
        return View(everything=foreign(body), conditions=foreign(conditions.json()),
                    read=read, others=others, own_patient_seen=own_seen)


def assert_sees_all(reg: Region, view: View) -> None:
    everything = set(reg.holder_records)
    conditions = {i for i, t in reg.holder_records.items() if t == "Condition"}
    assert view.others == []
    assert view.own_patient_seen
    assert view.everything == everything
    assert view.conditions == conditions
    assert view.read == everything


def assert_sees_none(view: View) -> None:
    assert view.others == []
    assert view.own_patient_seen  # own records only: the exchange still answers
    assert view.everything == set()
    assert view.conditions == set()
    assert view.read == set()


def doctor_token(reg: Region) -> str:
    return reg.system(READER).doctor_token(DOCTOR)


# -- the patient in the consent service's portal ---------------------------------


class Portal:
    """The patient's browser on the consent service's portal (``/portal``)."""

    def __init__(self, reg: Region) -> None:
        self.http = httpx.Client(base_url=reg.consent_base + "/portal", timeout=15)
        page = self.http.get("/login")
        assert page.status_code == 200, page.text
        r = self.http.post("/login", data={"username": reg.patient["username"],
                                           "password": reg.patient["password"],
                                           "csrf": csrf(page.text)})
        assert r.status_code == 303 and r.headers["location"].endswith("/portal/records"), \
            (r.status_code, r.text)

    def __enter__(self) -> Portal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def active_consents(self) -> list[str]:
        page = self.http.get("/consents")
        assert page.status_code == 200, page.text
        return list(dict.fromkeys(WITHDRAW_LINK.findall(page.text)))

    def grant(self, org: str) -> str:
        """Grant ``org`` access for treatment; return the new consent's id."""
        before = set(self.active_consents())
        page = self.http.get("/consents")
        assert f'value="org:{org}"' in page.text  # the hospital is in the directory
        r = self.http.post("/consents", data={"csrf": csrf(page.text),
                                              "grantee": f"org:{org}", "purpose": "TREAT"})
        assert r.status_code == 303, r.text
        [new] = [c for c in self.active_consents() if c not in before]
        return new

    def withdraw(self, consent_id: str) -> None:
        page = self.http.get(f"/consents/{consent_id}/withdraw")  # the confirmation page
        assert page.status_code == 200, page.text
        r = self.http.post(f"/consents/{consent_id}/withdraw", data={"csrf": csrf(page.text)})
        assert r.status_code == 303, r.text
        assert consent_id not in self.active_consents()


def csrf(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the form"
    return found.group(1)


@pytest.fixture
def granted(region: Region) -> Iterator[str]:
    """The patient has granted the Provincial hospital access (in the portal);
    withdrawn again after the test."""
    with Portal(region) as portal:
        consent_id = portal.grant(READER)
    yield consent_id
    region.ensure_consent()
    with Portal(region) as portal:
        if consent_id in portal.active_consents():
            portal.withdraw(consent_id)


# -- the tests -------------------------------------------------------------------


def test_grant_and_withdrawal_in_the_remote_service_decide_what_the_doctor_sees(
        region: Region):
    token = doctor_token(region)
    # no consent: nothing of City First's records
    assert_sees_none(doctor_view(region, token))
    with Portal(region) as portal:
        assert portal.active_consents() == []
        consent_id = portal.grant(READER)
        # the very next request: the exchange asked the remote service, which read
        # the consent the portal just stored
        assert_sees_all(region, doctor_view(region, token))
        portal.withdraw(consent_id)
    # withdrawn: hidden at once, with the same token
    assert_sees_none(doctor_view(region, token))


def test_a_stopped_consent_service_means_deny_and_the_exchange_still_answers(
        region: Region, granted: str):
    token = doctor_token(region)
    assert_sees_all(region, doctor_view(region, token))
    assert region.consent is not None
    region.consent.process.terminate()  # SIGTERM, as an operator or orchestrator would
    region.consent.process.wait(timeout=10)
    with pytest.raises(httpx.TransportError):
        httpx.get(region.consent_base + "/healthz", timeout=1)
    started = time.monotonic()
    # the consent is still active in the store, yet nothing beyond own records
    assert_sees_none(doctor_view(region, token))
    assert time.monotonic() - started < 10  # refused connections fail fast
    # the exchange is otherwise unaffected
    assert httpx.get(region.base + "/healthz").status_code == 200
    with fhir(region, region.system(READER).token()) as c:
        assert c.get(f"/Patient/{region.own_patient}").status_code == 200
    with fhir(region, region.system(HOLDER).token()) as c:  # the holder sees its own
        assert c.get("/Condition", params={"_summary": "count"}).json()["total"] >= 2
    log = region.exchange.output()
    assert "consent service unavailable" in log
    assert token not in log and region.patient["person_id"] not in log
    # back up: the same consent counts again (the deny was the outage)
    region.start_consent()
    assert_sees_all(region, doctor_view(region, token))


class StandIn:
    """Something else answering on the consent service's address, in a thread of
    the test: ``mode`` says how it answers ``POST /consent/decide``."""

    def __init__(self, port: int, exchange_base: str) -> None:
        self.mode = "500"
        self.exchange_base = exchange_base
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.requests.append((self.command, self.path, dict(self.headers), body))
                stand_in.answer(self, body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        status, headers, payload = 200, {"Content-Type": "application/json"}, b""
        if self.mode in ("500", "503", "401", "403"):
            status = int(self.mode)
            payload = b'{"type": "about:blank", "title": "error", "status": %d}' % status
            headers["Content-Type"] = "application/problem+json"
        elif self.mode == "redirect":
            # to the exchange's own decision API, which would answer a permit
            status, headers = 307, {"Location": self.exchange_base + "/consent/decide"}
        elif self.mode == "garbage":
            payload = b"<html>maintenance</html>"
        elif self.mode == "incomplete permit":
            payload = b'{"permit": true, "all_organizations": true}'
        elif self.mode == "slow":
            time.sleep(3)  # longer than the exchange waits (2 s)
            payload = json.dumps(self._permit(body)).encode()
        elif self.mode == "permit":
            payload = json.dumps(self._permit(body)).encode()
        handler.send_response(status)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    @staticmethod
    def _permit(body: bytes) -> dict:
        request = json.loads(body)
        return {"permit": True, "visible_organizations": [request["organization"], HOLDER],
                "masks": ["resident-id"],
                "basis": [{"code": "consent-permit", "effect": "permit", "text": "stand-in"}]}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in(region: Region) -> Iterator[StandIn]:
    """The real consent service stopped, a stand-in on its port; the real one
    started again afterwards."""
    region.stop_consent()
    fake = StandIn(region.consent_port, region.base)
    try:
        yield fake
    finally:
        fake.close()
        region.ensure_consent()


ERRORS = ["500", "503", "401", "403", "redirect", "garbage", "incomplete permit"]


def test_a_consent_service_answering_errors_means_deny(region: Region, granted: str,
                                                       stand_in: StandIn):
    token = doctor_token(region)
    # control: a well-formed permit from the stand-in is obeyed, so the stand-in
    # really is what the exchange asks
    stand_in.mode = "permit"
    assert_sees_all(region, doctor_view(region, token))
    method, path, headers, body = stand_in.requests[-1]
    assert (method, path) == ("POST", "/consent/decide")
    asked = json.loads(body)
    assert asked["organization"] == READER and asked["practitioner"] == DOCTOR
    assert asked["person"] == region.patient["person_id"] and asked["purpose"] == "TREAT"
    service_token = headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(service_token, options={"verify_signature": False})
    assert claims["organization"] == "exchange" and claims["roles"] == ["exchange-service"]

    for mode in ERRORS:
        stand_in.mode = mode
        asked_before = len(stand_in.requests)
        view = doctor_view(region, token)
        assert len(stand_in.requests) > asked_before, mode  # it was asked, and said no
        assert view.everything == view.conditions == view.read == set(), mode
        assert view.others == [] and view.own_patient_seen, mode
    # (the redirect points at the exchange's own decision API, which would have
    # permitted, the consent being active: it was not followed)

    stand_in.mode = "slow"
    with fhir(region, token) as c:
        started = time.monotonic()
        r = c.get("/Condition", params={"subject": f"Patient/{region.own_patient}"})
        waited = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.json().get("entry", []) == []  # no foreign Condition, no own either
    assert waited < 3  # gave up after its 2 s timeout rather than waiting for the answer
