"""Audit records as FHIR R4 AuditEvents: valid, coded, redacted, searchable;
and a patient's access log read back from them."""

from __future__ import annotations

import base64

import orjson
import pytest
from audit_records import read_record
from fhir.resources.R4B.auditevent import AuditEvent

from hie.audit.chain import append, event_id, seal
from hie.audit.fhir import (
    ACT_REASON,
    AUDIT_TYPE,
    DCM,
    RESTFUL,
    index_entries,
    outcome_code,
    to_audit_event,
)
from hie.audit.model import (
    AuditRecord,
    from_context,
    mask_resident_ids,
    person_ref,
    redact_query,
)
from hie.audit.service import patient_access_log, search_events
from hie.fhir.search.parse import parse_search
from hie.store.base import Store

RESIDENT_ID = "11010519491231002X"

CASES = {
    "doctor read": read_record(1),
    "break the glass": read_record(
        2, purpose_of_use="ETREAT", reason="unconscious patient in A&E"),
    "consultation search": AuditRecord(
        "search-type", "permit", 200, organization="h2", client_id="h2-his",
        practitioner="doc-9", patient_refs=("Patient/p1",), person="person-1",
        resource_type="Observation", query="patient=Patient/p1&code=1234-5", count=12,
        purpose_of_use="TREAT", consultation="ServiceRequest/cons-1", request_id="r-9"),
    "denied everything": AuditRecord(
        "$everything", "deny", 404, organization="h3", client_id="h3-his",
        patient_refs=("Patient/p1",), detail="no consent"),
    "system write": AuditRecord(
        "create", "permit", 201, organization="h1", client_id="h1-his",
        resource_type="Observation", resource_ids=("o5",), patient_refs=("Patient/p1",)),
    "no token": AuditRecord("read", "deny", 401, resource_type="Patient",
                            resource_ids=("p1",), detail="no bearer token"),
    "server error": AuditRecord("update", "error", 500, organization="h1",
                                resource_type="Patient", resource_ids=("p1",)),
    "admin link": AuditRecord("link", "permit", 200, client_id="admin",
                              person="person-1", patient_refs=("Patient/p1", "Patient/q7")),
    "portal login": AuditRecord("login", "deny", 401, detail="bad password"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_kind_of_record_is_a_valid_r4_audit_event(name: str) -> None:
    event, body, _ = seal(CASES[name], 7, "0" * 64, "2026-11-25T08:00:00.000000")
    parsed = AuditEvent.model_validate(orjson.loads(body))
    assert parsed.id == event_id(7)
    assert any(a.requestor for a in parsed.agent)
    assert parsed.source.observer is not None
    assert event["outcome"] in {"0", "4", "8", "12"}


def test_a_doctor_read_names_who_why_and_what() -> None:
    event = to_audit_event(read_record(1))
    assert event["type"]["code"] == "rest"
    assert event["subtype"] == [{"system": RESTFUL, "code": "read", "display": "read"}]
    assert (event["action"], event["outcome"]) == ("R", "0")
    requestor = next(a for a in event["agent"] if a["requestor"])
    assert requestor["who"]["reference"] == "Practitioner/doc-1"
    assert requestor["purposeOfUse"][0]["coding"][0] == {"system": ACT_REASON, "code": "TREAT"}
    whos = [a["who"].get("reference") or a["who"]["identifier"]["value"] for a in event["agent"]]
    assert whos == ["Organization/h1", "h1-his", "Practitioner/doc-1"]
    whats = [e["what"].get("reference") for e in event["entity"] if "what" in e]
    assert whats[:2] == ["Patient/p1", "Observation/o1"]


def test_break_the_glass_keeps_its_reason() -> None:
    event = to_audit_event(CASES["break the glass"])
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert event["purposeOfEvent"][0]["text"] == "unconscious patient in A&E"


def test_outcome_codes() -> None:
    assert [outcome_code(CASES[n]) for n in
            ("doctor read", "denied everything", "server error", "no token")] == [
        "0", "4", "8", "4"]
    assert outcome_code(AuditRecord("read", "error")) == "12"


def test_own_actions_use_dicom_event_types() -> None:
    assert to_audit_event(CASES["portal login"])["type"] == {
        "system": DCM, "code": "110114", "display": "User Authentication"}
    assert to_audit_event(CASES["admin link"])["type"]["code"] == "110110"


def test_searches_carry_the_query_and_the_count() -> None:
    event = to_audit_event(CASES["consultation search"])
    query = next(e for e in event["entity"] if e.get("role", {}).get("code") == "24")
    assert base64.b64decode(query["query"]).decode() == "patient=Patient/p1&code=1234-5"
    assert query["detail"] == [{"type": "count", "valueString": "12"}]


def test_resident_ids_and_secrets_never_reach_the_event() -> None:
    record = AuditRecord(
        "search-type", "permit", 200, organization="h1", resource_type="Patient",
        query=f"identifier=urn:oid:2.16.156.10011.1.1%7C{RESIDENT_ID}&access_token=abc.def",
        detail=f"matched {RESIDENT_ID} and old-style 110105491231002", count=1)
    _, body, _ = seal(record, 1, "0" * 64, "2026-11-25T08:00:00.000000")
    event = orjson.loads(body)
    query = base64.b64decode(event["entity"][0]["query"]).decode()
    text = body.decode() + query
    assert RESIDENT_ID not in text and "110105491231002" not in text
    assert "abc.def" not in text
    assert "110105********002X" in query and "110105******002" in event["outcomeDesc"]


def test_masking_leaves_other_numbers_alone() -> None:
    assert mask_resident_ids("seq 1234567890123456789012") == "seq 1234567890123456789012"
    assert redact_query("code=1234-5&_count=10") == "code=1234-5&_count=10"


def test_index_entries_cover_patient_agent_entity_and_date() -> None:
    event = to_audit_event(CASES["consultation search"])
    index = index_entries(event)
    refs = set(index.reference)
    assert ("patient", "Patient", "p1") in refs
    assert ("patient", "", person_ref("person-1")) in refs
    assert {("agent", "Organization", "h2"), ("agent", "Practitioner", "doc-9")} <= refs
    assert ("entity", "ServiceRequest", "cons-1") in refs
    assert index.date == [("date", event["recorded"][:-1], event["recorded"][:-1])]
    tokens = set(index.token)
    assert ("subtype", RESTFUL, "search-type") in tokens
    assert ("altid", "", "h2-his") in tokens
    assert ("outcome", "", "0") in tokens  # a code: no system
    assert ("purpose", ACT_REASON, "TREAT") in tokens


async def test_a_patients_access_log_pages_newest_first(store: Store) -> None:
    await append(store, [read_record(i, recorded=f"2026-10-2{i}T10:00:00.000000")
                         for i in range(1, 6)])
    await append(store, [read_record(9, patient_refs=("Patient/someone-else",))])
    await append(store, [CASES["consultation search"]])

    first, cursor = await patient_access_log(store, patient_refs=["Patient/p1"], limit=4)
    assert cursor is not None
    rest, end = await patient_access_log(store, patient_refs=["Patient/p1"], limit=4,
                                         cursor=cursor)
    assert end is None
    entries = first + rest
    assert len(entries) == 6
    recorded = [e.recorded for e in entries]
    assert recorded == sorted(recorded, reverse=True)
    newest = entries[0]  # the consultation search was recorded just now
    assert (newest.organization, newest.practitioner, newest.interaction) == (
        "h2", "doc-9", "search-type")
    assert (newest.count, newest.resource_type, newest.outcome) == (12, "Observation", "permit")
    oldest = entries[-1]
    assert (oldest.purpose_of_use, oldest.resources, oldest.status) == (
        "TREAT", ("Observation/o1",), 200)
    assert oldest.as_json()["resources"] == ["Observation/o1"]

    by_person, _ = await patient_access_log(store, patient_refs=[person_ref("person-1")],
                                            limit=10)
    assert [e.practitioner for e in by_person] == ["doc-9"]


async def test_events_are_searchable_by_agent_and_date(store: Store) -> None:
    await append(store, [read_record(1, recorded="2026-01-01T10:00:00.000000"),
                         read_record(2, practitioner="doc-2",
                                     recorded="2026-02-01T10:00:00.000000"),
                         CASES["denied everything"]])
    found, _ = await search_events(store, agent_refs=["Practitioner/doc-2"])
    assert [r.id for r in found] == [event_id(2)]
    found, _ = await search_events(store, agent_refs=["Organization/h1"],
                                   since="2026-01-15T00:00:00.000000",
                                   until="2026-03-01T00:00:00.000000")
    assert [r.id for r in found] == [event_id(2)]
    found, _ = await search_events(store, patient_refs=[])
    assert found == []
    assert all(r.resource_type == AUDIT_TYPE for r in
               (await search_events(store, patient_refs=["Patient/p1"]))[0])


async def test_the_fhir_search_parser_finds_events_by_patient_agent_and_date(
        store: Store) -> None:
    # what a privacy officer's GET /fhir/AuditEvent?… compiles to
    await append(store, [read_record(1, person="person-1"),
                         read_record(2, practitioner="doc-2",
                                     recorded="2026-01-01T00:00:00.000000")])

    async def ids(*params: tuple[str, str]) -> list[str]:
        query = parse_search(AUDIT_TYPE, list(params), strict=True).query
        return [r.id for r in (await store.search(query, limit=10)).resources]

    assert await ids(("patient", "Patient/p1")) == [event_id(1), event_id(2)]
    assert await ids(("patient", person_ref("person-1"))) == [event_id(1)]
    assert await ids(("agent", "Practitioner/doc-2")) == [event_id(2)]
    assert await ids(("date", "lt2026-02-01")) == [event_id(2)]
    assert await ids(("purpose", "TREAT"), ("outcome", "0"), ("subtype", "read")) == [
        event_id(1), event_id(2)]


def test_a_record_from_a_doctors_context_names_the_token_it_used() -> None:
    from dataclasses import dataclass

    @dataclass
    class Ctx:  # the shape of hie.auth's AuthContext, as far as audit reads it
        organization: str = "h1"
        practitioner: str = "doc-1"
        purpose_of_use: str = "ETREAT"
        reason: str = "cardiac arrest"
        consultation: None = None
        client_id: str = "h1-his"
        token_id: str = "jti-123"

    record = from_context(Ctx(), interaction="read", outcome="permit", status=200,
                          resource_type="Patient", resource_ids=("p1",))
    assert (record.client_id, record.reason, record.token_id) == (
        "h1-his", "cardiac arrest", "jti-123")
    _, body, _ = seal(record, 1, "0" * 64, "2026-11-25T08:00:00.000000")
    event = AuditEvent.model_validate(orjson.loads(body))
    requestor = next(a for a in event.agent if a.requestor)
    assert requestor.policy == ["jti-123"]
    assert requestor.purposeOfUse[0].text == "cardiac arrest"
