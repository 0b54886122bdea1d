"""hie.gate.data.StoreConsentData on both back ends: consents, consultations as
ServiceRequest + Task, break-the-glass sessions, and the service over them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fhir.resources.R4B.consent import Consent as R4Consent
from fhir.resources.R4B.servicerequest import ServiceRequest as R4ServiceRequest
from fhir.resources.R4B.task import Task as R4Task

from consent import service
from consent.data import DataConflict
from hie.gate.data import BREAK_GLASS, PERSON_PARAM, StoreConsentData
from hie.store.base import Store
from hie.store.query import AnyOf, Restriction, SearchQuery, TokenMatch
from schemas.consent import BreakGlass, ConsultationScope, DecisionRequest

PERSON = "p-42"
NOW = datetime(2026, 6, 1, 1, 30, tzinfo=UTC)


@pytest.fixture
def data(store: Store) -> StoreConsentData:
    return StoreConsentData(store)


async def test_consents_are_versioned_fhir_consents_of_the_consent_source(data, store):
    stored = await service.grant_consent(data, person=PERSON, organization="h2",
                                         purposes=["TREAT"], open_labels=["HIV"], now=NOW)
    R4Consent.model_validate(stored)
    rec = await store.read("Consent", stored["id"])
    assert rec.source == "urn:hie:exchange:consent" and rec.version == 1
    assert orjson.loads(rec.body) == stored
    withdrawn = await service.withdraw_consent(data, person=PERSON, consent_id=stored["id"])
    assert withdrawn["meta"]["versionId"] == "2"
    assert (await store.read("Consent", stored["id"])).version == 2
    [listed] = await data.consents(PERSON)
    assert listed["status"] == "inactive"
    assert await data.consents("p-other") == []


async def test_consents_by_person_is_an_index_query(data, store):
    await service.grant_consent(data, person=PERSON, organization="h2", purposes=["TREAT"])
    query = SearchQuery("Consent", (AnyOf((TokenMatch(PERSON_PARAM, PERSON,
                                                      "urn:hie:person"),)),))
    assert await store.count(query) == 1


async def test_no_hospital_restriction_reaches_the_consents(data, store):
    stored = await service.grant_consent(data, person=PERSON, organization="h2",
                                         purposes=["TREAT"])
    hospital = Restriction(sources=frozenset({"urn:hie:organization:h2",
                                              "urn:hie:organization:exchange"}))
    assert await store.read("Consent", stored["id"], restriction=hospital) is None


async def test_a_stale_version_is_refused(data):
    stored = await service.grant_consent(data, person=PERSON, organization="h2",
                                         purposes=["TREAT"])
    await data.save_consent({**stored, "status": "inactive"})
    with pytest.raises(DataConflict):
        await data.save_consent({**stored, "status": "rejected"})


async def test_a_consent_without_the_person_is_refused(data):
    with pytest.raises(ValueError):
        await data.save_consent({"resourceType": "Consent", "status": "active"})


async def test_withdrawal_counts_at_the_next_decision_through_the_store(data):
    stored = await service.grant_consent(data, person=PERSON, organization="h2",
                                         purposes=["TREAT"], now=NOW - timedelta(days=1))
    request = DecisionRequest(organization="h2", purpose="TREAT", person=PERSON)
    decide = lambda: service.decide(data, request, now=NOW, break_glass_hours=4,  # noqa: E731
                                    organizations=["h1", "h2"])
    assert (await decide()).permit
    await service.withdraw_consent(data, person=PERSON, consent_id=stored["id"])
    assert not (await decide()).permit


async def test_a_consultation_is_a_service_request_and_a_task(data, store):
    c = await service.request_consultation(
        data, person=PERSON, requester="h1", invited_organization="h2",
        invited_practitioner="h2-dr0", reason="second opinion", start=NOW,
        end=NOW + timedelta(days=1),
        scope=ConsultationScope(resource_types=["ImagingStudy"], labels=["GDIS"],
                                organizations=["h1"]))
    sr = orjson.loads((await store.read("ServiceRequest", c.id)).body)
    tk = orjson.loads((await store.read("Task", c.id)).body)
    R4ServiceRequest.model_validate(sr)
    R4Task.model_validate(tk)
    assert sr["intent"] == "order" and sr["requester"] == {"reference": "Organization/h1"}
    assert sr["subject"] == {"identifier": {"system": "urn:hie:person", "value": PERSON}}
    assert sr["category"][0]["coding"][0]["code"] == "11429006"
    assert {p["reference"] for p in sr["performer"]} == {"Practitioner/h2-dr0",
                                                         "Organization/h2"}
    assert sr["reasonCode"] == [{"text": "second opinion"}]
    assert tk["focus"] == {"reference": f"ServiceRequest/{c.id}"}
    assert tk["owner"] == {"reference": "Practitioner/h2-dr0"}
    assert tk["status"] == "requested" and sr["meta"]["source"] == "urn:hie:exchange:consent"
    assert await data.consultation(c.id) == c
    assert await data.consultations(PERSON) == [c]


async def test_the_task_mirrors_the_lifecycle(data, store):
    c = await service.request_consultation(
        data, person=PERSON, requester="h1", invited_organization="h2", reason="r",
        start=NOW, end=NOW + timedelta(days=1), scope=ConsultationScope())
    await service.accept_consultation(data, organization="h2", id=c.id)
    await service.record_paper_consent(data, requester="h1", id=c.id)
    task = await store.read("Task", c.id)
    body = orjson.loads(task.body)
    assert task.version == 3 and body["status"] == "accepted"
    assert body["businessStatus"]["coding"][0]["code"] == "paper"
    loaded = await data.consultation(c.id)
    assert (loaded.status, loaded.approval, loaded.scope) == ("accepted", "paper",
                                                              ConsultationScope())
    await service.decline_consultation(data, person=PERSON, id=c.id)
    body = orjson.loads((await store.read("Task", c.id)).body)
    sr = orjson.loads((await store.read("ServiceRequest", c.id)).body)
    assert (body["status"], sr["status"]) == ("rejected", "revoked")
    assert (await data.consultation(c.id)).status == "declined"


async def test_a_hospitals_own_service_request_is_not_a_consultation(data, store):
    from hie.store.base import WriteRecord
    from hie.store.index import IndexEntries

    sr = {"resourceType": "ServiceRequest", "id": "h1-sr1", "status": "active",
          "intent": "order", "subject": {"reference": "Patient/x"}}
    await store.transact(lambda tx: tx.put(WriteRecord(
        "ServiceRequest", "h1-sr1", 1, "2026-06-01T00:00:00.000000", orjson.dumps(sr),
        source="urn:hie:organization:h1", index=IndexEntries())))
    assert await data.consultation("h1-sr1") is None


def session(**kw) -> BreakGlass:
    values = dict(id="s1", person=PERSON, organization="h3", practitioner="h3-dr0",
                  reason="ED", started=NOW, expires=NOW + timedelta(hours=4))
    values.update(kw)
    return BreakGlass(**values)


async def test_sessions_are_internal_documents_queried_by_index(data, store):
    await data.save_break_glass(session())
    await data.save_break_glass(session(id="s2", person="p-other", practitioner="h3-dr1"))
    rec = await store.read(BREAK_GLASS, "s1")
    assert rec.source == "urn:hie:exchange:internal"
    assert [s.id for s in await data.break_glass(PERSON)] == ["s1"]
    assert [s.id for s in await data.break_glass(practitioner="h3-dr1")] == ["s2"]
    assert {s.id for s in await data.break_glass(reviewed=False)} == {"s1", "s2"}
    reviewed = session(reviewed=True, reviewer="o", note="ok")
    assert await data.save_break_glass(reviewed) == reviewed
    assert (await store.read(BREAK_GLASS, "s1")).version == 2
    assert [s.id for s in await data.break_glass(reviewed=True)] == ["s1"]
    assert [s.id for s in await data.break_glass(reviewed=False)] == ["s2"]


async def test_a_new_session_while_one_is_active_returns_the_active_one(data):
    first = await data.save_break_glass(session())
    assert await data.save_break_glass(session(id="s9", started=NOW + timedelta(hours=1),
                                               expires=NOW + timedelta(hours=5))) == first
    later = session(id="s10", started=NOW + timedelta(hours=4),
                    expires=NOW + timedelta(hours=8))
    assert await data.save_break_glass(later) == later


async def test_concurrent_first_emergency_requests_share_one_session(data):
    request = DecisionRequest(organization="h3", practitioner="h3-dr0", purpose="ETREAT",
                              reason="ED", person=PERSON)
    answers = await asyncio.gather(*(service.decide(
        data, request, now=NOW, break_glass_hours=4, organizations=["h3"]) for _ in range(5)))
    assert all(a.break_the_glass for a in answers)
    assert len(await data.break_glass(PERSON)) == 1


async def test_a_stale_consultation_is_refused_and_nothing_is_written(data, store):
    c = await service.request_consultation(
        data, person=PERSON, requester="h1", invited_organization="h2", reason="r",
        start=NOW, end=NOW + timedelta(days=1), scope=ConsultationScope())
    await service.decline_consultation(data, person=PERSON, id=c.id)
    with pytest.raises(DataConflict):
        await data.save_consultation(c.model_copy(update={"status": "accepted"}))
    assert (await data.consultation(c.id)).status == "declined"
    assert (await store.read("ServiceRequest", c.id)).version == 2
    assert (await store.read("Task", c.id)).version == 2
