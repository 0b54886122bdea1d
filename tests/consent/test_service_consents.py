"""consent.service: granting, refusing, listing and withdrawing consents."""

from __future__ import annotations

from datetime import timedelta

import pytest
from consent_fixtures import NOW, PERSON

from consent import service
from consent.data import DataConflict, MemoryConsentData
from consent.policy import check_consent


@pytest.fixture
def data() -> MemoryConsentData:
    return MemoryConsentData()


async def test_a_grant_is_stored_with_id_meta_and_a_valid_shape(data):
    stored = await service.grant_consent(
        data, person=PERSON, practitioner="h2-dr0", purposes=["TREAT"], open_labels=["PSY"],
        resource_types=["Observation", "Condition"], start=NOW, end=NOW + timedelta(days=30),
        masks=["telecom"], now=NOW)
    assert stored["id"] and stored["meta"]["versionId"] == "1"
    assert stored["meta"]["source"] == "urn:hie:exchange:consent"
    assert check_consent(stored) == []
    assert await service.list_consents(data, person=PERSON) == [stored]
    assert await service.list_consents(data, person="someone-else") == []


@pytest.mark.parametrize("kwargs", [
    {"organization": "h2", "practitioner": "h2-dr0"},  # two grantees
    {},  # no grantee
    {"organization": "h2", "open_labels": ["NOPE"]},
    {"organization": "h2", "resource_types": ["Spaceship"]},
    {"organization": "h2", "start": NOW, "end": NOW - timedelta(days=1)},
])
async def test_a_grant_that_cannot_be_honoured_is_refused(data, kwargs):
    with pytest.raises(service.ConsentServiceError) as err:
        await service.grant_consent(data, person=PERSON, purposes=["TREAT"], **kwargs)
    assert err.value.status == 400
    assert await data.consents(PERSON) == []


async def test_withdrawal_keeps_the_consent_as_inactive_and_is_idempotent(data):
    stored = await service.grant_consent(data, person=PERSON, organization="h2",
                                         purposes=["TREAT"])
    withdrawn = await service.withdraw_consent(data, person=PERSON, consent_id=stored["id"])
    assert withdrawn["status"] == "inactive" and withdrawn["meta"]["versionId"] == "2"
    again = await service.withdraw_consent(data, person=PERSON, consent_id=stored["id"])
    assert again["meta"]["versionId"] == "2"
    [listed] = await service.list_consents(data, person=PERSON)
    assert listed["status"] == "inactive"


async def test_only_the_person_can_withdraw_their_consent(data):
    stored = await service.grant_consent(data, person=PERSON, organization="h2",
                                         purposes=["TREAT"])
    for person, consent_id in (("intruder", stored["id"]), (PERSON, "unknown")):
        with pytest.raises(service.ConsentServiceError) as err:
            await service.withdraw_consent(data, person=person, consent_id=consent_id)
        assert err.value.status == 404
    assert (await data.consents(PERSON))[0]["status"] == "active"


async def test_saving_over_a_stale_version_conflicts(data):
    stored = await service.grant_consent(data, person=PERSON, organization="h2",
                                         purposes=["TREAT"])
    await data.save_consent({**stored, "status": "inactive"})
    with pytest.raises(DataConflict):
        await data.save_consent({**stored, "status": "rejected"})


async def test_a_refusal_of_break_the_glass_is_stored(data):
    stored = await service.refuse(data, person=PERSON, purposes=["ETREAT"], now=NOW)
    assert stored["provision"]["type"] == "deny" and check_consent(stored) == []
    with pytest.raises(service.ConsentServiceError):
        await service.refuse(data, person=PERSON, organization="h2", practitioner="h2-dr0")
