"""consent.service consultations: the lifecycle requested → accepted →
completed / cancelled (or declined by the patient), who may move it, and what a
decision makes of each state."""

from __future__ import annotations

from datetime import timedelta

import pytest
from consent_fixtures import NOW, PERSON

from consent import service
from consent.data import MemoryConsentData
from schemas.consent import ConsultationScope, DecisionRequest

Error = service.ConsentServiceError


@pytest.fixture
def data() -> MemoryConsentData:
    return MemoryConsentData()


async def open_request(data, **kw):
    args = dict(person=PERSON, requester="h1", invited_organization="h2",
                invited_practitioner="h2-dr0", reason="second opinion on CT",
                start=NOW - timedelta(hours=1), end=NOW + timedelta(days=2),
                scope=ConsultationScope(resource_types=["ImagingStudy", "DiagnosticReport"]))
    args.update(kw)
    return await service.request_consultation(data, **args)


async def consultant_decision(data, c, *, at=NOW, practitioner="h2-dr0"):
    request = DecisionRequest(organization="h2", practitioner=practitioner, purpose="TREAT",
                              consultation=c.id, person=PERSON)
    return await service.decide(data, request, now=at, break_glass_hours=4,
                                organizations=["h1", "h2"])


async def expect(status: int, call):
    with pytest.raises(Error) as err:
        await call
    assert err.value.status == status, str(err.value)


@pytest.mark.parametrize("kw", [
    {"invited_organization": None, "invited_practitioner": None},
    {"invited_organization": "h1"},  # itself
    {"reason": " "},
    {"end": NOW - timedelta(days=1)},
    {"scope": ConsultationScope(resource_types=["Spaceship"])},
    {"scope": ConsultationScope(resource_types=[])},
    {"scope": ConsultationScope(labels=["NOPE"])},
    {"scope": ConsultationScope(organizations=[])},
])
async def test_a_request_that_makes_no_sense_is_refused(data, kw):
    await expect(400, open_request(data, **kw))


async def test_the_full_story_grants_exactly_while_open(data):
    c = await open_request(data)
    assert (c.status, c.approved) == ("requested", False)
    assert not (await consultant_decision(data, c)).permit  # requested, unapproved
    await service.accept_consultation(data, organization="h2", id=c.id)
    assert not (await consultant_decision(data, c)).permit  # not approved yet
    approved = await service.approve_consultation(data, person=PERSON, id=c.id)
    assert approved.approval == "portal"
    open_ = await consultant_decision(data, c)
    assert open_.permit and open_.resource_types == ["DiagnosticReport", "ImagingStudy"]
    assert open_.expires == c.end
    assert not (await consultant_decision(data, c, practitioner="h2-dr1")).permit
    assert not (await consultant_decision(data, c, at=c.end)).permit  # expired
    done = await service.complete_consultation(data, organization="h2", id=c.id)
    assert done.status == "completed"
    assert not (await consultant_decision(data, c)).permit


async def test_only_the_invited_party_accepts(data):
    c = await open_request(data)
    await expect(403, service.accept_consultation(data, organization="h1", id=c.id))
    await expect(404, service.accept_consultation(data, organization="h3", id=c.id))
    await expect(404, service.accept_consultation(data, organization="h2", id="unknown"))
    await service.accept_consultation(data, organization="h2", id=c.id)
    await expect(409, service.accept_consultation(data, organization="h2", id=c.id))


async def test_another_doctor_of_the_invited_hospital_cannot_accept_for_the_named_one(data):
    c = await open_request(data)
    await expect(404, service.accept_consultation(data, organization="h2", id=c.id,
                                                  practitioner="h2-dr1"))
    await service.accept_consultation(data, organization="h2", id=c.id, practitioner="h2-dr0")


async def test_a_consultation_inviting_only_a_doctor_is_theirs(data):
    c = await open_request(data, invited_organization=None)
    await expect(404, service.accept_consultation(data, organization="h2", id=c.id))
    accepted = await service.accept_consultation(data, organization="h2", id=c.id,
                                                 practitioner="h2-dr0")
    assert accepted.status == "accepted"


async def test_a_consultation_is_visible_only_to_its_two_hospitals(data):
    c = await open_request(data)
    assert (await service.get_consultation(data, organization="h1", id=c.id)).id == c.id
    assert (await service.get_consultation(data, organization="h2", id=c.id)).id == c.id
    await expect(404, service.get_consultation(data, organization="h3", id=c.id))


async def test_only_the_patient_approves_or_declines(data):
    c = await open_request(data)
    await expect(404, service.approve_consultation(data, person="someone-else", id=c.id))
    await expect(404, service.decline_consultation(data, person="someone-else", id=c.id))
    assert not (await data.consultation(c.id)).approved


async def test_declining_after_approval_ends_access_at_once(data):
    c = await open_request(data)
    await service.accept_consultation(data, organization="h2", id=c.id)
    await service.approve_consultation(data, person=PERSON, id=c.id)
    assert (await consultant_decision(data, c)).permit
    declined = await service.decline_consultation(data, person=PERSON, id=c.id)
    assert (declined.status, declined.approved) == ("declined", False)
    assert not (await consultant_decision(data, c)).permit
    await expect(409, service.approve_consultation(data, person=PERSON, id=c.id))
    await expect(409, service.accept_consultation(data, organization="h2", id=c.id))


async def test_the_requesting_hospital_records_a_paper_consent(data):
    c = await open_request(data)
    await expect(403, service.record_paper_consent(data, requester="h2", id=c.id))
    await expect(404, service.record_paper_consent(data, requester="h3", id=c.id))
    paper = await service.record_paper_consent(data, requester="h1", id=c.id)
    assert paper.approval == "paper"
    await service.accept_consultation(data, organization="h2", id=c.id)
    assert (await consultant_decision(data, c)).permit
    # a second approval changes nothing
    again = await service.approve_consultation(data, person=PERSON, id=c.id)
    assert again.approval == "paper"


async def test_cancel_and_complete_follow_the_state_machine(data):
    c = await open_request(data)
    await expect(409, service.complete_consultation(data, organization="h2", id=c.id))
    await expect(404, service.cancel_consultation(data, organization="h3", id=c.id))
    cancelled = await service.cancel_consultation(data, organization="h1", id=c.id)
    assert cancelled.status == "cancelled"
    for call in (service.cancel_consultation(data, organization="h1", id=c.id),
                 service.accept_consultation(data, organization="h2", id=c.id),
                 service.record_paper_consent(data, requester="h1", id=c.id)):
        await expect(409, call)


async def test_the_invited_hospital_may_turn_a_request_down(data):
    c = await open_request(data)
    assert (await service.cancel_consultation(data, organization="h2", id=c.id)).status \
        == "cancelled"


async def test_the_patient_lists_their_consultations(data):
    first = await open_request(data)
    second = await open_request(data, start=NOW + timedelta(days=1),
                                end=NOW + timedelta(days=3))
    listed = await service.list_consultations(data, person=PERSON)
    assert [c.id for c in listed] == [second.id, first.id]
    assert await service.list_consultations(data, person="someone-else") == []


class DeclinesDuringAccept(MemoryConsentData):
    """The patient declines between the hospital's read and its save."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    async def save_consultation(self, c):
        if self.armed and c.status == "accepted":
            self.armed = False
            await service.decline_consultation(self, person=c.person, id=c.id)
        return await super().save_consultation(c)


async def test_a_concurrent_decline_is_not_undone_by_an_accept():
    data = DeclinesDuringAccept()
    c = await open_request(data)
    await service.approve_consultation(data, person=PERSON, id=c.id)
    data.armed = True
    await expect(409, service.accept_consultation(data, organization="h2", id=c.id))
    stored = await data.consultation(c.id)
    assert (stored.status, stored.approved) == ("declined", False)


async def test_saving_a_stale_consultation_conflicts(data):
    from consent.data import DataConflict

    c = await open_request(data)
    assert c.version == 1
    await service.accept_consultation(data, organization="h2", id=c.id)
    with pytest.raises(DataConflict):
        await data.save_consultation(c.model_copy(update={"status": "cancelled"}))
