"""Break-the-glass and remote consultations: time-boxed, scoped, and ended by
their own lifecycle."""

from __future__ import annotations

from datetime import timedelta

import pytest
from consent_fixtures import (
    GRANT_H2_EXCEPT_PSY,
    NOW,
    PERSON,
    ask,
    codes,
    consent,
    grant,
    label,
    purpose,
)

from consent.policy import build_consent, build_refusal
from schemas.consent import Consultation, ConsultationScope
from schemas.sensitivity import SENSITIVE_CODES

ALL = sorted(SENSITIVE_CODES)


# -- break-the-glass -----------------------------------------------------------

def test_break_the_glass_with_a_reason_opens_non_sensitive_records_for_four_hours():
    r = ask("h3", practitioner="dr-chen", purpose_="ETREAT", reason="unconscious, ED")
    assert r.permit and r.break_the_glass and r.all_organizations
    assert r.hidden_labels == ALL and r.resource_types is None
    assert r.expires == NOW + timedelta(hours=4)
    assert r.masks == ["resident-id"]
    btg = next(b for b in r.basis if b.code == "break-the-glass")
    assert "unconscious, ED" in btg.text


def test_the_break_the_glass_window_is_configurable():
    r = ask("h3", purpose_="ETREAT", reason="cardiac arrest", break_glass_hours=0.5)
    assert r.expires == NOW + timedelta(minutes=30)


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_break_the_glass_without_a_reason_is_refused(reason):
    r = ask("h3", purpose_="ETREAT", reason=reason)
    assert not r.permit and not r.break_the_glass
    assert "break-the-glass-refused" in codes(r)


def test_break_the_glass_does_not_open_categories_a_consent_opened_for_treatment():
    c = build_consent(person=PERSON, recorded=NOW, organization="h3", categories=["PSY"])
    assert "PSY" not in ask("h3", consents=[c]).hidden_labels
    r = ask("h3", purpose_="ETREAT", reason="overdose", consents=[c])
    assert r.break_the_glass and r.hidden_labels == ALL  # the consent is for TREAT


def test_a_consent_for_emergencies_keeps_its_categories_under_break_the_glass():
    c = build_consent(person=PERSON, recorded=NOW, organization="h3",
                      purposes=["TREAT", "ETREAT"], categories=["HIV"])
    r = ask("h3", purpose_="ETREAT", reason="sepsis", consents=[c])
    assert r.permit and r.break_the_glass and "HIV" not in r.hidden_labels


def test_the_patient_can_refuse_break_the_glass():
    refusal = build_refusal(person=PERSON, recorded=NOW, purposes=["ETREAT"], consent_id="no-btg")
    r = ask("h3", purpose_="ETREAT", reason="trauma", consents=[refusal])
    assert not r.permit and not r.break_the_glass
    refused = next(b for b in r.basis if b.code == "break-the-glass-refused")
    assert refused.consent == "no-btg"


def test_a_break_the_glass_refusal_for_one_hospital_leaves_the_others():
    refusal = build_refusal(person=PERSON, recorded=NOW, organization="h3",
                            purposes=["ETREAT"])
    assert not ask("h3", purpose_="ETREAT", reason="trauma", consents=[refusal]).permit
    assert ask("h4", purpose_="ETREAT", reason="trauma", consents=[refusal]).permit


@pytest.mark.parametrize("purposes", [["TREAT"], []])
def test_a_general_refusal_does_not_block_an_emergency(purposes):
    # refusing a hospital is not refusing emergency care: only a refusal that
    # names ETREAT is (see docs/consent.md)
    refusal = build_refusal(person=PERSON, recorded=NOW, organization="h3", purposes=purposes)
    r = ask("h3", purpose_="ETREAT", reason="trauma", consents=[refusal])
    assert r.permit and r.break_the_glass and r.hidden_labels == ALL


def test_a_nested_emergency_refusal_inside_a_grant():
    c = consent(grant("h3", purpose=purpose("TREAT", "ETREAT"),
                      nested=[{"type": "deny", "purpose": purpose("ETREAT"),
                               "securityLabel": label("PSY")}]))
    r = ask("h3", purpose_="ETREAT", reason="trauma", consents=[c])
    assert r.permit and r.break_the_glass  # only mental health refused, hidden anyway


def test_an_emergency_purpose_without_break_the_glass_is_an_ordinary_request():
    c = consent(grant("h2", purpose=purpose("ETREAT")))
    r = ask("h2", purpose_="ETREAT", consents=[c])
    assert r.permit and not r.break_the_glass
    assert "break-the-glass-refused" in codes(r)


# -- consultations -------------------------------------------------------------

def consultation(**kw) -> Consultation:
    base = dict(id="cons-1", person=PERSON, requester="h1", invited_organization="h2",
                invited_practitioner="dr-li", status="accepted", approved=True,
                approval="portal", start=NOW - timedelta(days=1), end=NOW + timedelta(days=6),
                reason="second opinion on CT",
                scope=ConsultationScope(resource_types=["ImagingStudy", "DiagnosticReport"]))
    base.update(kw)
    return Consultation(**base)


def test_an_open_approved_consultation_grants_its_scope_to_the_invited_doctor():
    r = ask("h2", practitioner="dr-li", consultation="cons-1",
            consultations=[consultation()])
    assert r.permit and r.all_organizations and not r.break_the_glass
    assert r.resource_types == ["DiagnosticReport", "ImagingStudy"]
    assert r.hidden_labels == ALL
    assert r.expires == NOW + timedelta(days=6)
    basis = next(b for b in r.basis if b.code == "consultation")
    assert basis.consultation == "cons-1"


def test_a_consultation_scope_can_open_categories_and_name_hospitals():
    c = consultation(scope=ConsultationScope(labels=["PSY"], organizations=["h1"]))
    r = ask("h2", practitioner="dr-li", consultation="cons-1", consultations=[c])
    assert r.permit and r.hidden_labels == sorted(SENSITIVE_CODES - {"PSY"})
    assert not r.all_organizations and r.visible_organizations == ["h2", "h1"]


def test_a_paper_consent_counts_as_approval():
    c = consultation(approval="paper")
    assert ask("h2", practitioner="dr-li", consultation="cons-1", consultations=[c]).permit


def test_consultations_may_be_given_as_plain_dicts():
    c = consultation().model_dump(mode="json")
    assert ask("h2", practitioner="dr-li", consultation="cons-1", consultations=[c]).permit


@pytest.mark.parametrize("change, why", [
    ({"status": "requested"}, "requested"),
    ({"status": "completed"}, "completed"),
    ({"status": "cancelled"}, "cancelled"),
    ({"approved": False, "approval": None}, "not approved"),
    ({"end": NOW}, "outside its period"),
    ({"start": NOW + timedelta(hours=1)}, "outside its period"),
    ({"person": "p-other"}, "no such consultation"),
    ({"id": "cons-2"}, "no such consultation"),
    ({"invited_practitioner": "dr-zhang"}, "invited practitioner"),
    ({"invited_organization": "h5", "invited_practitioner": None}, "invited organisation"),
])
def test_a_consultation_grants_nothing_outside_its_lifecycle(change, why):
    r = ask("h2", practitioner="dr-li", consultation="cons-1",
            consultations=[consultation(**change)])
    assert not r.permit
    refused = next(b for b in r.basis if b.code == "consultation-refused")
    assert why in refused.text


def test_a_consultation_for_a_hospital_lets_its_doctors_in():
    c = consultation(invited_practitioner=None)
    assert ask("h2", practitioner="dr-zhang", consultation="cons-1", consultations=[c]).permit
    assert not ask("h3", practitioner="dr-zhang", consultation="cons-1",
                   consultations=[c]).permit


def test_only_a_token_naming_the_consultation_uses_it():
    assert not ask("h2", practitioner="dr-li", consultations=[consultation()]).permit


def test_a_consultation_adds_to_what_a_consent_allows():
    c = consent(grant("h2", nested=[{"type": "permit", "securityLabel": label("HIV")}]))
    r = ask("h2", practitioner="dr-li", consultation="cons-1", consents=[c],
            consultations=[consultation(status="completed")])
    assert r.permit and r.resource_types is None and "HIV" not in r.hidden_labels
    assert "consultation-refused" in codes(r)


def test_a_consent_grant_with_a_consultation_takes_the_common_part_of_the_union():
    # the consent gives everything but categories; the consultation adds nothing wider
    r = ask("h2", practitioner="dr-li", consultation="cons-1",
            consents=[GRANT_H2_EXCEPT_PSY], consultations=[consultation()])
    assert r.permit and r.resource_types is None and r.hidden_labels == ALL


def test_a_consultation_for_one_doctor_needs_that_doctor_at_that_hospital():
    c = consultation()
    assert not ask("h9", practitioner="dr-li", consultation="cons-1", consultations=[c]).permit
    c2 = consultation(invited_organization=None)
    assert ask("h9", practitioner="dr-li", consultation="cons-1", consultations=[c2]).permit


def test_a_consultation_that_invites_no_one_grants_nothing():
    c = consultation(invited_organization=None, invited_practitioner=None)
    assert not ask("h2", practitioner="dr-li", consultation="cons-1", consultations=[c]).permit


def test_an_approved_consultation_stands_over_an_older_general_refusal():
    # the patient approved this consultation after refusing the hospital in general
    refusal = build_refusal(person=PERSON, recorded=NOW, organization="h2")
    r = ask("h2", practitioner="dr-li", consultation="cons-1", consents=[refusal],
            consultations=[consultation()])
    assert r.permit and r.resource_types == ["DiagnosticReport", "ImagingStudy"]


def test_a_consultation_record_must_be_consistent_and_aware():
    with pytest.raises(ValueError):
        consultation(approved=True, approval=None)
    with pytest.raises(ValueError):
        consultation(approved=False)  # approval "portal" without approval
    with pytest.raises(ValueError):
        consultation(end=NOW.replace(tzinfo=None))
