"""The leak matrix: every read path × the resource types × every consent state.

Hospital A holds patient P's records (one of them mental-health, labelled
PSY) and another patient Q's. Hospital B has its own registration of P (same
resident ID number: one regional person) and its doctor reads through every
read path. For each consent state the test knows exactly which of A's records
B's doctor may see, counts every returned entry (matches, includes, totals)
that should not have been returned — that count must be 0 — and checks that
what should be seen is seen, so the matrix cannot pass by returning nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from fhirdata import RESIDENT_ID_SYSTEM, condition, encounter, observation, patient

from consent import service
from hie.gate.data import StoreConsentData
from hie.identity.service import person_id_of
from hie.registry import service as registry
from schemas.consent import ConsultationScope

FHIR = "/fhir"
RESIDENT = "11010519491231002X"  # born 1949-12-31, female
Make = Callable[..., httpx.AsyncClient]

CLINICAL_TYPES = ("Observation", "Condition", "Encounter", "MedicationRequest",
                  "AllergyIntolerance", "Immunization")


def resident(p: dict) -> dict:
    return p | {"identifier": [*p["identifier"],
                               {"system": RESIDENT_ID_SYSTEM, "value": RESIDENT}]}


def extra_records(ref: str) -> list[dict]:
    return [
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
         "medicationCodeableConcept": {"coding": [{
             "system": "http://www.whocc.no/atc", "code": "C09AA02"}]},
         "subject": {"reference": ref}},
        {"resourceType": "AllergyIntolerance",
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
         "patient": {"reference": ref}},
        {"resourceType": "Immunization", "status": "completed",
         "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
         "patient": {"reference": ref}, "occurrenceDateTime": "2023-10-01"},
    ]


async def post(client: httpx.AsyncClient, resource: dict) -> dict:
    r = await client.post(f"{FHIR}/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


class Region:
    """A's records of P and Q, B's registration of P, and the expected sets."""

    def __init__(self) -> None:
        self.p_at_a: dict = {}
        self.p_at_b: dict = {}
        self.q_at_a: dict = {}
        self.a_records: dict[str, dict] = {}  # id -> resource, every A record
        self.p_plain: set[str] = set()  # A's records of P without a label
        self.p_labelled: set[str] = set()  # A's records of P labelled PSY
        self.q_plain: set[str] = set()  # A's records of Q without a label
        self.person = ""


@pytest.fixture
async def region(app: FastAPI, make_client: Make) -> Region:
    reg = Region()
    for org in ("hospa", "hospb"):
        await registry.create_organization(app.state.store, name=f"Hospital {org}", id=org)
    async with make_client("hospa") as a, make_client("hospb") as b:
        reg.p_at_a = await post(a, resident(patient(mrn="PA", birth="1949-12-31")))
        reg.q_at_a = await post(a, patient(mrn="QA", family="钱", given="多多",
                                           birth="1980-02-02"))
        reg.p_at_b = await post(b, resident(patient(mrn="PB", birth="1949-12-31")))
        p_ref, q_ref = f"Patient/{reg.p_at_a['id']}", f"Patient/{reg.q_at_a['id']}"
        reg.a_records[reg.p_at_a["id"]] = reg.p_at_a
        reg.a_records[reg.q_at_a["id"]] = reg.q_at_a
        reg.p_plain.add(reg.p_at_a["id"])
        for ref, mine in ((p_ref, True), (q_ref, False)):
            made = [await post(a, observation(ref)), await post(a, condition(ref, "I10")),
                    await post(a, encounter(ref))]
            made += [await post(a, r) for r in extra_records(ref)]
            psy = await post(a, condition(ref, "F32.1"))
            for r in [*made, psy]:
                reg.a_records[r["id"]] = r
            if mine:
                reg.p_plain |= {r["id"] for r in made}
                reg.p_labelled.add(psy["id"])
            else:
                reg.q_plain |= {r["id"] for r in made} | {reg.q_at_a["id"]}
        await post(b, observation(f"Patient/{reg.p_at_b['id']}", value=99))
        # A's Provenance of each Patient create targets the Patient: it is in the
        # patient's compartment, and visible as the patient's other records are
        for pat, mine in ((reg.p_at_a, True), (reg.q_at_a, False)):
            found = (await a.get(f"{FHIR}/Provenance",
                                 params={"target": f"Patient/{pat['id']}"})).json()
            for e in found["entry"]:
                reg.a_records[e["resource"]["id"]] = e["resource"]
                (reg.p_plain if mine else reg.q_plain).add(e["resource"]["id"])
    reg.person = await person_id_of(app.state.store, reg.p_at_a["id"]) or ""
    assert reg.person == await person_id_of(app.state.store, reg.p_at_b["id"])
    return reg


async def set_state(app: FastAPI, reg: Region, state: str) -> dict[str, str]:
    """Put the patient's consents in ``state``; return the doctor's token claims."""
    data = StoreConsentData(app.state.store)
    doctor = {"practitioner": "hospb-dr-1", "purpose_of_use": "TREAT"}
    if state in ("consent", "category hidden", "consent withdrawn"):
        granted = await service.grant_consent(
            data, person=reg.person, organization="hospb", purposes=["TREAT"],
            open_labels=["PSY"] if state == "consent" else [])
        if state == "consent withdrawn":
            await service.withdraw_consent(data, person=reg.person, consent_id=granted["id"])
    elif state == "break-the-glass":
        doctor |= {"purpose_of_use": "ETREAT", "reason": "unconscious on arrival"}
    elif state in ("consultation open", "consultation ended"):
        now = datetime.now(UTC)
        c = await service.request_consultation(
            data, person=reg.person, requester="hospa", invited_organization="hospb",
            reason="second opinion", start=now - timedelta(hours=1),
            end=now + timedelta(days=1),
            scope=ConsultationScope(resource_types=["Patient", "Observation", "Condition"]))
        await service.approve_consultation(data, person=reg.person, id=c.id)
        await service.accept_consultation(data, organization="hospb", id=c.id)
        if state == "consultation ended":
            await service.complete_consultation(data, organization="hospb", id=c.id)
        doctor |= {"consultation": c.id}
    return doctor


def expected(reg: Region, state: str) -> set[str]:
    """A's records B's doctor may see in ``state``."""
    types = {i: r["resourceType"] for i, r in reg.a_records.items()}
    if state == "consent":
        return reg.p_plain | reg.p_labelled
    if state == "category hidden":
        return set(reg.p_plain)
    if state == "break-the-glass":
        # the token names no patient: each patient the doctor opens gets a window
        # of its own (each recorded for review), non-sensitive records only
        return reg.p_plain | reg.q_plain
    if state == "consultation open":
        return {i for i in reg.p_plain if types[i] in ("Patient", "Observation", "Condition")}
    return set()


async def read_everything(b: httpx.AsyncClient, reg: Region) -> list[tuple[str, dict]]:
    """Every answer B's doctor gets through every read path: (path, body)."""
    answers: list[tuple[str, dict]] = []

    async def get(path: str, **params: str) -> None:
        r = await b.get(path, params=params)
        assert r.status_code in (200, 404, 410), (path, r.status_code, r.text)
        answers.append((path, r.json() if r.status_code == 200 else {}))

    async def walk(path: str, **params: str) -> None:
        url: str | None = path
        first = True
        while url:
            r = await b.get(url, params=params if first else None)
            if first and r.status_code == 404:  # a patient the doctor may not see
                answers.append((path, {}))
                return
            assert r.status_code == 200, r.text
            body = r.json()
            answers.append((path, body))
            url = next((link["url"].removeprefix("http://testserver")
                        for link in body.get("link", []) if link["relation"] == "next"), None)
            first = False

    pa, pb = reg.p_at_a["id"], reg.p_at_b["id"]
    for rid, res in reg.a_records.items():
        rtype = res["resourceType"]
        await get(f"{FHIR}/{rtype}/{rid}")
        await get(f"{FHIR}/{rtype}/{rid}/_history/1")
        await get(f"{FHIR}/{rtype}/{rid}/_history")
    for rtype in CLINICAL_TYPES:
        param = "patient" if rtype in ("AllergyIntolerance", "Immunization") else "subject"
        for pid in (pa, pb, reg.q_at_a["id"]):
            await walk(f"{FHIR}/{rtype}", **{param: f"Patient/{pid}", "_count": "2"})
            await get(f"{FHIR}/{rtype}", **{param: pid, "_summary": "count"})
            await get(f"{FHIR}/{rtype}", **{param: pid, "_total": "accurate", "_count": "1"})
        await get(f"{FHIR}/{rtype}")  # no patient named: B's own records only
        await get(f"{FHIR}/{rtype}/_history")
    await get(f"{FHIR}/Observation", subject=f"Patient/{pb}", _include="Observation:subject")
    await get(f"{FHIR}/Patient", _id=pb, _revinclude="Condition:subject")
    await get(f"{FHIR}/Patient", _id=pa, _revinclude="Observation:subject")
    await get(f"{FHIR}/Condition", **{"subject:Patient.identifier": "PA"})
    await get(f"{FHIR}/Patient", identifier=RESIDENT_ID_SYSTEM + "|" + RESIDENT)
    for pid in (pa, pb, reg.q_at_a["id"]):
        await walk(f"{FHIR}/Patient/{pid}/$everything", _count="3")
    await get(f"{FHIR}/_history")
    return answers


def leaks(answers: list[tuple[str, dict]], reg: Region, allowed: set[str]
          ) -> tuple[list[str], set[str]]:
    """Entries (and totals) that should not have been returned; what was seen."""
    bad: list[str] = []
    seen: set[str] = set()
    for path, body in answers:
        if body.get("resourceType") == "Bundle":
            resources = [e.get("resource", {}) for e in body.get("entry", [])]
        elif body:
            resources = [body]
        else:
            resources = []
        for res in resources:
            rid = res.get("id")
            if rid in reg.a_records:
                seen.add(rid)
                if rid not in allowed:
                    bad.append(f"{path}: {res.get('resourceType')}/{rid}")
        if body.get("resourceType") == "Bundle" and "total" in body \
                and body["type"] == "searchset" and body["total"] > cap(path, reg, allowed):
            bad.append(f"{path}: total {body['total']} > {cap(path, reg, allowed)}")
    return bad, seen


#: B's own records by type: its Patient for P, one Observation, and its Provenance
#: of the Patient (which targets the Patient: P's compartment).
B_OWN = {"Patient": 1, "Observation": 1, "Provenance": 1}


def cap(path: str, reg: Region, allowed: set[str]) -> int:
    """The most a total may say on ``path``: A's allowed records of the path's
    type (any type for $everything) plus B's own."""
    if path.endswith("$everything"):
        return len(allowed) + sum(B_OWN.values())
    rtype = path.split("/")[2]
    mine = sum(1 for i in allowed if reg.a_records[i]["resourceType"] == rtype)
    return mine + B_OWN.get(rtype, 0)


STATES = ["no consent", "consent", "consent withdrawn", "category hidden", "break-the-glass",
          "consultation open", "consultation ended"]


@pytest.mark.parametrize("state", STATES)
async def test_no_read_path_returns_what_the_consent_does_not_allow(
        app: FastAPI, make_client: Make, region: Region, state: str):
    claims = await set_state(app, region, state)
    allowed = expected(region, state)
    async with make_client("hospb", scope="user/*.rs", **claims) as b:
        answers = await read_everything(b, region)
    bad, seen = leaks(answers, region, allowed)
    assert bad == [], f"{len(bad)} entries should not have been returned: {bad[:10]}"
    # and what is allowed is really reachable (the matrix is not passing on silence)
    assert seen == allowed
