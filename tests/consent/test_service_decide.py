"""consent.service.decide: fresh data on every decision, region listing, and
break-the-glass sessions time-boxed from when they started."""

from __future__ import annotations

from datetime import timedelta

import pytest
from consent_fixtures import NOW, PERSON

from consent import service
from consent.data import MemoryConsentData
from schemas.consent import DecisionRequest

REGION = ["h1", "h2", "h3"]


def ask(org: str = "h2", *, purpose: str = "TREAT", reason: str | None = None,
        practitioner: str | None = "h2-dr0", **kw: object) -> DecisionRequest:
    return DecisionRequest(organization=org, practitioner=practitioner, purpose=purpose,
                           reason=reason, person=PERSON, **kw)


async def decide(data: MemoryConsentData, request: DecisionRequest, at=NOW, hours=4.0):
    return await service.decide(data, request, now=at, break_glass_hours=hours,
                                organizations=REGION)


@pytest.fixture
def data() -> MemoryConsentData:
    return MemoryConsentData()


async def test_no_consent_denies_everything_but_own_records(data):
    answer = await decide(data, ask())
    assert not answer.permit and answer.visible_organizations == ["h2"]
    assert not await data.break_glass()


async def test_a_grant_without_custodian_lists_every_hospital_of_the_region(data):
    await service.grant_consent(data, person=PERSON, organization="h2", purposes=["TREAT"],
                                now=NOW - timedelta(days=1))
    answer = await decide(data, ask())
    assert answer.permit and answer.all_organizations
    assert answer.visible_organizations == ["h2", "h1", "h3"]


async def test_a_grant_limited_to_custodians_lists_only_those(data):
    await service.grant_consent(data, person=PERSON, organization="h2", purposes=["TREAT"],
                                custodians=["h1"], now=NOW - timedelta(days=1))
    answer = await decide(data, ask())
    assert answer.permit and not answer.all_organizations
    assert answer.visible_organizations == ["h2", "h1"]


async def test_withdrawal_takes_effect_at_the_very_next_decision(data):
    grant = await service.grant_consent(data, person=PERSON, organization="h2",
                                        purposes=["TREAT"], now=NOW - timedelta(days=1))
    assert (await decide(data, ask())).permit
    await service.withdraw_consent(data, person=PERSON, consent_id=grant["id"])
    answer = await decide(data, ask())
    assert not answer.permit and answer.visible_organizations == ["h2"]


async def test_first_emergency_request_opens_a_recorded_session(data):
    answer = await decide(data, ask("h3", purpose="ETREAT", reason="unconscious in ED",
                                    practitioner="h3-dr0"))
    assert answer.permit and answer.break_the_glass
    [session] = await data.break_glass(PERSON)
    assert (session.organization, session.practitioner) == ("h3", "h3-dr0")
    assert session.started == NOW and session.expires == NOW + timedelta(hours=4)
    assert answer.expires == session.expires
    assert session.id in next(b.text for b in answer.basis if b.code == "break-the-glass")
    assert [s.id for s in await service.break_glass_queue(data)] == [session.id]


async def test_the_window_counts_from_the_start_and_later_requests_reuse_it(data):
    request = ask("h3", purpose="ETREAT", reason="unconscious in ED", practitioner="h3-dr0")
    first = await decide(data, request)
    later = await decide(data, request.model_copy(update={"reason": "still in ED"}),
                         at=NOW + timedelta(hours=3))
    assert later.break_the_glass and later.expires == first.expires == NOW + timedelta(hours=4)
    assert len(await data.break_glass(PERSON)) == 1


async def test_after_expiry_a_new_request_opens_a_new_session_for_review(data):
    request = ask("h3", purpose="ETREAT", reason="unconscious in ED", practitioner="h3-dr0")
    await decide(data, request)
    again = await decide(data, request, at=NOW + timedelta(hours=4, minutes=1))
    assert again.break_the_glass
    assert again.expires == NOW + timedelta(hours=8, minutes=1)
    sessions = await data.break_glass(PERSON)
    assert [s.started for s in sessions] == [NOW, NOW + timedelta(hours=4, minutes=1)]
    assert len(await service.break_glass_queue(data)) == 2


async def test_each_practitioner_has_their_own_window(data):
    await decide(data, ask("h3", purpose="ETREAT", reason="ED", practitioner="h3-dr0"))
    await decide(data, ask("h3", purpose="ETREAT", reason="ED", practitioner="h3-dr1"),
                 at=NOW + timedelta(hours=1))
    sessions = await data.break_glass(PERSON)
    assert {s.practitioner for s in sessions} == {"h3-dr0", "h3-dr1"}


async def test_emergency_without_reason_opens_no_session(data):
    answer = await decide(data, ask("h3", purpose="ETREAT", reason="  "))
    assert not answer.permit and not await data.break_glass()


async def test_a_refused_break_the_glass_opens_no_session(data):
    await service.refuse(data, person=PERSON, purposes=["ETREAT"], now=NOW - timedelta(days=1))
    answer = await decide(data, ask("h3", purpose="ETREAT", reason="ED"))
    assert not answer.break_the_glass and not await data.break_glass()


async def test_a_session_grants_nothing_once_the_patient_refuses_emergency_access(data):
    request = ask("h3", purpose="ETREAT", reason="ED")
    assert (await decide(data, request)).break_the_glass
    await service.refuse(data, person=PERSON, purposes=["ETREAT"], now=NOW)
    answer = await decide(data, request, at=NOW + timedelta(minutes=5))
    assert not answer.permit and len(await data.break_glass()) == 1


async def test_review_takes_a_session_off_the_queue_once(data):
    await decide(data, ask("h3", purpose="ETREAT", reason="ED"))
    [session] = await service.break_glass_queue(data)
    reviewed = await service.review_break_glass(data, id=session.id, reviewer="officer-1",
                                                note="justified: trauma", now=NOW)
    assert reviewed.reviewed and reviewed.reviewer == "officer-1" and reviewed.reviewed_at
    assert await service.break_glass_queue(data) == []
    assert [s.id for s in await service.break_glass_queue(data, reviewed=True)] == [session.id]
    with pytest.raises(service.ConsentServiceError) as again:
        await service.review_break_glass(data, id=session.id, reviewer="o", note="x")
    assert again.value.status == 409
    with pytest.raises(service.ConsentServiceError) as unknown:
        await service.review_break_glass(data, id="nope", reviewer="o", note="x")
    assert unknown.value.status == 404


async def test_a_review_of_a_session_does_not_reopen_its_window(data):
    request = ask("h3", purpose="ETREAT", reason="ED")
    await decide(data, request)
    [session] = await data.break_glass()
    await service.review_break_glass(data, id=session.id, reviewer="o", note="ok")
    later = await decide(data, request, at=NOW + timedelta(hours=2))
    assert later.expires == NOW + timedelta(hours=4) and len(await data.break_glass()) == 1


async def test_now_must_be_aware(data):
    with pytest.raises(ValueError):
        await service.decide(data, ask(), now=NOW.replace(tzinfo=None), break_glass_hours=4,
                             organizations=REGION)
