"""Consent decisions as the patient, the doctors and a privacy officer expect
them: default deny, own records, grants and refusals, nested exceptions,
periods, withdrawal, doctor-level grants, purposes and masks."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta

import pytest
from consent_fixtures import (
    CST,
    GRANT_H2_EXCEPT_PSY,
    NOW,
    PERSON,
    ask,
    codes,
    consent,
    custodian,
    grant,
    label,
    purpose,
    recipient,
    types,
)

from consent.engine import decide
from consent.policy import MASK_EXTENSION, build_consent, build_refusal, parse_consent, withdraw
from schemas.consent import DecisionRequest, DecisionResponse
from schemas.sensitivity import SENSITIVE_CODES

ALL = sorted(SENSITIVE_CODES)


def opened(response: DecisionResponse) -> set[str]:
    return set(SENSITIVE_CODES) - set(response.hidden_labels)


# -- default deny and own records ---------------------------------------------

def test_no_consent_means_other_hospitals_are_denied():
    r = ask("h2")
    assert r.permit is False
    assert r.visible_organizations == ["h2"]  # but its own records stay visible
    assert not r.all_organizations and not r.sees("h1")
    assert r.sees("h2")
    assert r.hidden_labels == ALL and r.masks == ["resident-id"]
    assert codes(r) == ["own-records", "default-deny"]


def test_the_grant_of_the_issue_story():
    r = ask("h2", consents=[GRANT_H2_EXCEPT_PSY])
    assert r.permit and r.all_organizations and r.sees("h1") and r.sees("h3")
    assert r.visible_organizations == ["h2"]
    assert r.resource_types is None
    assert r.hidden_labels == ALL  # PSY denied; the others never opened
    assert r.masks == ["resident-id"]
    assert r.break_the_glass is False
    assert r.expires == datetime(2027, 1, 2, tzinfo=CST)  # the whole of 2027-01-01
    permit = next(b for b in r.basis if b.code == "consent-permit")
    assert permit.consent == "c-h2" and permit.provision == "provision"
    assert permit.text == ("Patient allowed 市第二医院 to see records for treatment except "
                           "mental health from 2026-05-20 until 2027-01-01")
    deny = next(b for b in r.basis if b.code == "consent-deny")
    assert deny.provision == "provision.provision[0]" and deny.labels == ["PSY"]


def test_the_grant_is_for_the_named_hospital_only():
    r = ask("h3", consents=[GRANT_H2_EXCEPT_PSY])
    assert not r.permit and r.visible_organizations == ["h3"]


def test_a_grant_opens_only_the_categories_it_lists():
    c = consent(grant(nested=[{"type": "permit", "securityLabel": label("HIV", "SEX")}]))
    r = ask("h2", consents=[c])
    assert r.permit and opened(r) == {"HIV", "SEX"}
    assert "category-opened" in codes(r)
    hidden = next(b for b in r.basis if b.code == "category-hidden")
    assert set(hidden.labels) == {"PSY", "ETH", "STD", "GDIS"}


def test_a_nested_deny_of_a_category_wins_over_a_sibling_permit_of_it():
    c = consent(grant(nested=[{"type": "permit", "securityLabel": label("PSY", "HIV")},
                              {"type": "deny", "securityLabel": label("PSY")}]))
    r = ask("h2", consents=[c])
    assert opened(r) == {"HIV"}


def test_an_exception_inside_an_opened_category():
    # open mental health and HIV, except that the deny under the open names HIV again
    c = consent(grant(nested=[{"type": "permit", "securityLabel": label("PSY", "HIV"),
                               "provision": [{"type": "deny", "securityLabel": label("HIV")}]}]))
    assert opened(ask("h2", consents=[c])) == {"PSY"}


# -- deny wins -------------------------------------------------------------------

def test_a_refusal_in_another_consent_wins_over_a_grant():
    refusal = build_refusal(person=PERSON, recorded=NOW, organization="h2", consent_id="no-h2")
    r = ask("h2", consents=[GRANT_H2_EXCEPT_PSY, refusal])
    assert not r.permit
    assert {b.consent for b in r.basis if b.code == "consent-deny"} == {"c-h2", "no-h2"}


def test_a_category_refusal_for_everyone_wins_over_a_grant_that_opened_it():
    c = consent(grant(nested=[{"type": "permit", "securityLabel": label("HIV", "GDIS")}]))
    refusal = build_refusal(person=PERSON, recorded=NOW, categories=["GDIS"], consent_id="nogen")
    r = ask("h2", consents=[c, refusal])
    assert r.permit and opened(r) == {"HIV"}
    assert any(b.code == "consent-deny" and b.consent == "nogen" for b in r.basis)


def test_an_opt_out_with_a_named_exception():
    c = consent({"type": "deny", "provision": [
        {"type": "permit", "actor": [recipient("Organization", "h2")]}]}, rule="OPTOUT")
    assert ask("h2", consents=[c]).permit
    assert not ask("h3", consents=[c]).permit


def test_a_permit_never_opens_a_category_it_does_not_list_even_in_an_opt_out():
    c = consent({"type": "deny", "provision": [
        {"type": "permit", "actor": [recipient("Organization", "h2")]}]}, rule="OPTOUT")
    assert ask("h2", consents=[c]).hidden_labels == ALL


# -- scope: types, custodians, masks ---------------------------------------------

def test_a_grant_limited_to_resource_types():
    c = consent(grant(**{"class": types("Observation", "DiagnosticReport")}))
    r = ask("h2", consents=[c])
    assert r.permit and r.resource_types == ["DiagnosticReport", "Observation"]


def test_a_nested_deny_of_a_type_removes_it():
    c = consent(grant(nested=[{"type": "deny", "class": types("DocumentReference")}]))
    r = ask("h2", consents=[c])
    assert r.permit and r.resource_types is not None
    assert "DocumentReference" not in r.resource_types and "Observation" in r.resource_types


def test_a_grant_limited_to_the_records_one_hospital_holds():
    c = consent(grant(actor=[recipient("Organization", "h2"), custodian("h1")]))
    r = ask("h2", consents=[c])
    assert r.permit and not r.all_organizations
    assert r.visible_organizations == ["h2", "h1"]
    assert r.sees("h1") and not r.sees("h3")


def test_different_scopes_in_two_consents_give_only_their_common_part():
    narrow = consent(grant(**{"class": types("Observation")},
                           nested=[{"type": "permit", "securityLabel": label("PSY")}]),
                     id_="obs-psy")
    wide = consent(grant(), id_="all")
    r = ask("h2", consents=[narrow, wide])
    # every type is granted, but mental health only for Observations: hidden
    assert r.permit and r.resource_types is None and "PSY" in r.hidden_labels


def test_masks_from_the_consent_add_to_the_resident_id():
    c = consent(grant(extension=[{"url": MASK_EXTENSION, "valueCode": "telecom"},
                                 {"url": MASK_EXTENSION, "valueCode": "address"}]))
    r = ask("h2", consents=[c])
    assert r.masks == ["address", "resident-id", "telecom"]
    assert "mask" in codes(r)


# -- time ------------------------------------------------------------------------

@pytest.mark.parametrize("now, permitted", [
    (datetime(2026, 5, 19, 23, 59, 59, tzinfo=CST), False),  # before the start day
    (datetime(2026, 5, 20, 0, 0, tzinfo=CST), True),         # the start day, local time
    (datetime(2027, 1, 1, 23, 59, 59, tzinfo=CST), True),    # the whole last day
    (datetime(2027, 1, 1, 16, 0, tzinfo=UTC), False),        # = 2027-01-02 00:00 CST
    (datetime(2027, 3, 1, tzinfo=CST), False),
])
def test_period_boundaries(now, permitted):
    assert ask("h2", consents=[GRANT_H2_EXCEPT_PSY], now=now).permit is permitted


def test_an_exact_end_instant_ends_access_at_that_instant():
    end = NOW + timedelta(hours=2)
    c = build_consent(person=PERSON, recorded=NOW, organization="h2", end=end)
    assert ask("h2", consents=[c], now=end - timedelta(microseconds=1)).permit
    assert ask("h2", consents=[c], now=end - timedelta(microseconds=1)).expires == end
    assert not ask("h2", consents=[c], now=end).permit


def test_a_nested_exception_with_its_own_period():
    # mental health opened, but only during June
    c = consent(grant(nested=[{"type": "permit", "securityLabel": label("PSY"),
                               "period": {"start": "2026-06-01", "end": "2026-06-30"}}]))
    assert opened(ask("h2", consents=[c], now=datetime(2026, 6, 15, tzinfo=CST))) == {"PSY"}
    assert opened(ask("h2", consents=[c], now=datetime(2026, 7, 1, tzinfo=CST))) == set()
    r = ask("h2", consents=[c], now=datetime(2026, 6, 15, tzinfo=CST))
    assert r.expires == datetime(2026, 7, 1, tzinfo=CST)


def test_now_must_be_aware():
    with pytest.raises(ValueError):
        ask("h2", now=datetime(2026, 6, 1))


# -- withdrawal --------------------------------------------------------------------

@pytest.mark.parametrize("status", ["inactive", "rejected", "draft", "proposed",
                                    "entered-in-error"])
def test_only_active_consents_count(status):
    c = copy.deepcopy(GRANT_H2_EXCEPT_PSY)
    c["status"] = status
    assert not ask("h2", consents=[c]).permit


def test_withdrawal_works_at_once():
    c = build_consent(person=PERSON, recorded=NOW, organization="h2")
    assert ask("h2", consents=[c]).permit
    assert not ask("h2", consents=[withdraw(c)]).permit


def test_a_withdrawn_refusal_no_longer_blocks():
    refusal = build_refusal(person=PERSON, recorded=NOW, organization="h2")
    assert not ask("h2", consents=[GRANT_H2_EXCEPT_PSY, refusal]).permit
    assert ask("h2", consents=[GRANT_H2_EXCEPT_PSY, withdraw(refusal)]).permit


# -- who asks ----------------------------------------------------------------------

def test_a_grant_to_one_doctor_is_not_a_grant_to_their_hospital():
    c = build_consent(person=PERSON, recorded=NOW, practitioner="dr-li", grantee_name="李医生")
    assert ask("h2", practitioner="dr-li", consents=[c]).permit
    assert not ask("h2", practitioner="dr-zhang", consents=[c]).permit  # same hospital
    assert not ask("h2", consents=[c]).permit  # the hospital's system, no doctor


def test_a_grant_to_a_hospital_covers_its_doctors():
    assert ask("h2", practitioner="dr-zhang", consents=[GRANT_H2_EXCEPT_PSY]).permit


def test_a_refusal_of_one_doctor_inside_a_hospital_grant():
    c = consent(grant(nested=[{"type": "deny",
                               "actor": [recipient("Practitioner", "dr-wu")]}]))
    assert ask("h2", practitioner="dr-li", consents=[c]).permit
    assert not ask("h2", practitioner="dr-wu", consents=[c]).permit


def test_purpose_mismatch_is_denied():
    assert not ask("h2", purpose_="HRESCH", consents=[GRANT_H2_EXCEPT_PSY]).permit
    c = consent(grant(purpose=purpose("TREAT", "HRESCH")))
    assert ask("h2", purpose_="HRESCH", consents=[c]).permit


def test_a_grant_without_purpose_covers_every_purpose():
    c = build_consent(person=PERSON, recorded=NOW, organization="h2", purposes=())
    assert ask("h2", purpose_="HOPERAT", consents=[c]).permit


def test_consents_of_another_person_do_not_count():
    other = consent(grant(), person="p-2")
    assert not ask("h2", consents=[other]).permit
    assert ask("h2", consents=[other], also_known_as=["p-2"]).permit  # merged person


def test_an_unreadable_consent_fails_closed():
    bad = copy.deepcopy(GRANT_H2_EXCEPT_PSY)
    bad["provision"]["provision"][0]["securityLabel"] = label("NOPE")
    r = ask("h2", consents=[GRANT_H2_EXCEPT_PSY, bad])
    assert not r.permit
    assert "could not be read" in r.basis[-1].text


def test_parsed_policies_can_be_passed_instead_of_resources():
    policy = parse_consent(GRANT_H2_EXCEPT_PSY)
    assert ask("h2", consents=[policy]) == ask("h2", consents=[GRANT_H2_EXCEPT_PSY])


def test_the_response_round_trips_as_json():
    r = ask("h2", consents=[GRANT_H2_EXCEPT_PSY])
    assert DecisionResponse.model_validate_json(r.model_dump_json()) == r


def test_the_same_inputs_give_the_same_answer():
    request = DecisionRequest(organization="h2", purpose="TREAT", person=PERSON)
    c = build_consent(person=PERSON, recorded=NOW, organization="h2", categories=["HIV"],
                      end=date(2027, 1, 1))
    assert decide(request, consents=[c], now=NOW) == decide(request, consents=[c], now=NOW)


def test_a_grant_of_the_requesters_own_records_adds_nothing():
    c = consent(grant(actor=[recipient("Organization", "h2"), custodian("h2")]))
    r = ask("h2", consents=[c])
    assert not r.permit and r.visible_organizations == ["h2"]
