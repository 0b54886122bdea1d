"""The whole consent story end to end over HTTP, against a real exchange with
the portal, seeded by ``hie demo``:

hospital A (the TCM hospital) holds 李娜's records, one of them mental health;
a doctor at hospital B is refused (the same answer as an unknown patient) and
the refusal is audited; 李娜 grants B access in the portal except mental health;
B now sees A's records without the mental-health one; 李娜 sees B's accesses in
the portal; she withdraws and B is refused again — even through a ``next``
link handed out before; a doctor at hospital C breaks the glass and she sees
it highlighted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from exchange_process import HospitalSystem, exchange_env, free_port, hie, running_exchange

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
WITHDRAW = re.compile(r'/portal/consents/([0-9a-f-]+)/withdraw')


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    import json

    folder: Path = tmp_path_factory.mktemp("story")
    port = free_port()
    creds = folder / "credentials.json"
    hie("demo", "--credentials", str(creds), env=exchange_env(folder, f"http://127.0.0.1:{port}"))
    with running_exchange(folder, port):
        yield json.loads(creds.read_text())


def system(region: dict, org: str) -> HospitalSystem:
    h = next(h for h in region["hospitals"] if h["id"] == org)
    return HospitalSystem(base=region["base_url"], client_id=h["client_id"], kid=h["kid"],
                          private_pem=h["private_key_pem"], alg=h["alg"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fhir(region: dict, token: str) -> httpx.Client:
    return httpx.Client(base_url=region["base_url"] + "/fhir", headers=bearer(token))


def register(region: dict, org: str, patient: dict, mrn: str) -> str:
    """The hospital's system registers the patient who just walked in."""
    with fhir(region, system(region, org).token()) as c:
        r = c.post("/Patient", json={
            "resourceType": "Patient",
            "identifier": [{"system": f"urn:oid:2.16.156.10011.9.{org}", "value": mrn},
                           {"system": "urn:oid:2.16.156.10011.1.1",
                            "value": patient["resident_id"]}],
            "name": [{"text": patient["name"]}], "gender": "female",
            "birthDate": "1988-12-23"})
        assert r.status_code == 201, r.text
        return r.json()["id"]


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def portal_login(region: dict, patient: dict) -> tuple[httpx.Client, str]:
    portal = httpx.Client(base_url=region["base_url"], follow_redirects=False)
    page = portal.get("/portal/login")
    r = portal.post("/portal/login", data={"username": patient["username"],
                                           "password": patient["password"],
                                           "csrf": CSRF.search(page.text).group(1)})
    assert r.status_code == 303, r.text
    page = portal.get("/portal/consents")
    return portal, CSRF.search(page.text).group(1)


def test_the_consent_story(region: dict):
    li_na = next(p for p in region["patients"] if p["name"] == "李娜")
    assert li_na["hospitals"] == ["tcmhosp"]  # A holds her records
    a_ids: set[str]
    with fhir(region, system(region, "tcmhosp").token()) as a:
        a_patient = a.get("/Patient", params={
            "identifier": f"urn:oid:2.16.156.10011.1.1|{li_na['resident_id']}"}).json()
        a_patient_id = ids(a_patient)[0]
        everything = a.get(f"/Patient/{a_patient_id}/$everything").json()
        a_ids = set(ids(everything))
        psy = [e["resource"]["id"] for e in everything["entry"]
               if any(s.get("code") == "PSY" for s in e["resource"].get("meta", {})
                      .get("security", []))]
    assert len(psy) == 1  # the depressive episode, labelled at ingest

    # B's doctor: B registers her and asks for her history
    b_patient = register(region, "cityfirst", li_na, "CF-9001")
    doctor_b = system(region, "cityfirst").doctor_token("cityfirst-dr-li")
    with fhir(region, doctor_b) as b:
        mine = ids(b.get(f"/Patient/{b_patient}/$everything").json())
        assert not set(mine) & a_ids  # nothing of A's
        refused = b.get(f"/Patient/{a_patient_id}")
        unknown = b.get("/Patient/00000000-0000-4000-8000-000000000000")
        assert refused.status_code == unknown.status_code == 404
        assert refused.json()["issue"][0]["code"] == unknown.json()["issue"][0]["code"]

    # she grants B access in the portal, mental health not included
    portal, csrf = portal_login(region, li_na)
    r = portal.post("/portal/consents", data={"grantee": "org:cityfirst", "purpose": "TREAT",
                                              "csrf": csrf})
    assert r.status_code == 303, r.text

    with fhir(region, system(region, "cityfirst").doctor_token("cityfirst-dr-li")) as b:
        seen = set(ids(b.get(f"/Patient/{b_patient}/$everything").json()))
        assert (a_ids - set(psy)) <= seen  # all of A's records but the mental-health one
        assert not set(psy) & seen
        assert b.get(f"/Condition/{psy[0]}").status_code == 404
        first = b.get("/Observation", params={"subject": f"Patient/{b_patient}",
                                              "_count": "1"}).json()
        assert set(ids(first)) <= a_ids and first["entry"]
        next_link = next(link["url"] for link in first["link"] if link["relation"] == "next")

    # she sees B's accesses in her access log
    deadline = time.monotonic() + 5
    while "李明" not in (log := portal.get("/portal/access").text) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "李明" in log
    assert 'class="outcome deny"' in log  # the refusal before her consent

    # she withdraws; B is refused again at once, also through the old next link
    consent_id = WITHDRAW.search(portal.get("/portal/consents").text).group(1)
    page = portal.get(f"/portal/consents/{consent_id}/withdraw")
    r = portal.post(f"/portal/consents/{consent_id}/withdraw",
                    data={"csrf": CSRF.search(page.text).group(1)})
    assert r.status_code == 303
    with fhir(region, system(region, "cityfirst").doctor_token("cityfirst-dr-li")) as b:
        assert not set(ids(b.get(f"/Patient/{b_patient}/$everything").json())) & a_ids
        later = b.get(next_link.replace(region["base_url"] + "/fhir", ""))
        assert later.status_code == 200
        assert not set(ids(later.json())) & a_ids

    # a doctor at C breaks the glass: non-sensitive records, highlighted for her
    c_patient = register(region, "provincial", li_na, "PV-77")
    doctor_c = system(region, "provincial").doctor_token(
        "provincial-dr-wu", purpose="ETREAT", reason="unconscious on arrival, history unknown")
    with fhir(region, doctor_c) as c:
        seen = set(ids(c.get(f"/Patient/{c_patient}/$everything").json()))
        assert (a_ids - set(psy)) <= seen
        assert not set(psy) & seen
    # read accesses reach the hash-chained log in batches (every 50 ms)
    deadline = time.monotonic() + 5
    while 'class="btg"' not in (log := portal.get("/portal/access").text) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 'class="btg"' in log
    assert "unconscious on arrival" in log
