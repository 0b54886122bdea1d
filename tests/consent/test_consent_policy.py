"""Consents in, policy out: valid FHIR from the builders, clear refusals for
shapes the engine cannot honour exactly, and period bounds as people mean them."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta

import pytest
from consent_fixtures import GRANT_H2_EXCEPT_PSY, NOW, PERSON, custodian, label, recipient
from fhir.resources.R4B.consent import Consent

from consent.policy import (
    MASK_EXTENSION,
    ConsentError,
    build_consent,
    build_refusal,
    check_consent,
    parse_consent,
    parse_instant,
    withdraw,
)


def valid_fhir(resource: dict) -> Consent:
    return Consent.model_validate(resource)


def test_the_hand_written_consent_is_valid_and_accepted():
    valid_fhir(GRANT_H2_EXCEPT_PSY)
    assert check_consent(GRANT_H2_EXCEPT_PSY) == []
    policy = parse_consent(GRANT_H2_EXCEPT_PSY)
    assert policy.person == PERSON and policy.active and policy.id == "c-h2"
    root = policy.root
    assert root.organizations == {"h2"} and root.purposes == {"TREAT"}
    assert [p.path for p in policy.provisions] == ["provision", "provision.provision[0]"]
    assert root.children[0].effect == "deny" and root.children[0].labels == {"PSY"}


def test_build_consent_grant_to_a_hospital_is_valid_fhir():
    c = build_consent(person=PERSON, recorded=NOW, organization="h2", grantee_name="市第二医院",
                      categories=["HIV", "SEX"], end=date(2027, 1, 1), consent_id="c1")
    valid_fhir(c)
    assert c["status"] == "active" and c["id"] == "c1"
    assert c["provision"]["period"] == {"end": "2027-01-01"}
    policy = parse_consent(c)
    assert policy.root.children[0].labels == {"HIV", "SEX"}
    assert policy.root.names == (("h2", "市第二医院"),)


def test_build_consent_for_a_doctor_with_types_custodians_and_masks_is_valid_fhir():
    c = build_consent(person=PERSON, recorded=NOW, practitioner="dr-li", purposes=["TREAT"],
                      resource_types=["Observation", "DiagnosticReport"], custodians=["h1"],
                      start=NOW, end=NOW + timedelta(days=30), masks=["telecom", "address"])
    valid_fhir(c)
    root = parse_consent(c).root
    assert root.practitioners == {"dr-li"} and not root.organizations
    assert root.custodians == {"h1"}
    assert root.classes == {"Observation", "DiagnosticReport"}
    assert root.masks == {"telecom", "address"}
    assert root.start == NOW and root.until == NOW + timedelta(days=30)


def test_build_refusals_are_valid_fhir():
    for kw in ({"organization": "h3"}, {"practitioner": "dr-wu"},
               {"purposes": ["ETREAT"]}, {"categories": ["GDIS"]}):
        c = build_refusal(person=PERSON, recorded=NOW, **kw)
        valid_fhir(c)
        assert parse_consent(c).root.effect == "deny"
        assert c["policyRule"]["coding"][0]["code"] == "OPTOUT"


def test_builders_refuse_what_they_cannot_express():
    with pytest.raises(ValueError):
        build_consent(person=PERSON, recorded=NOW)  # no grantee
    with pytest.raises(ValueError):
        build_consent(person=PERSON, recorded=NOW, organization="h2", practitioner="dr")
    with pytest.raises(ConsentError, match="unsupported securityLabel"):
        build_consent(person=PERSON, recorded=NOW, organization="h2", categories=["XYZ"])
    with pytest.raises(ValueError, match="timezone"):
        build_consent(person=PERSON, recorded=datetime(2026, 1, 1), organization="h2")


def test_withdraw_makes_the_consent_inactive_and_keeps_it():
    c = build_consent(person=PERSON, recorded=NOW, organization="h2")
    w = withdraw(c)
    valid_fhir(w)
    assert w["status"] == "inactive" and c["status"] == "active"
    assert not parse_consent(w).active


def broken(**changes) -> dict:
    c = copy.deepcopy(GRANT_H2_EXCEPT_PSY)
    for key, value in changes.items():
        if value is None:
            c.pop(key, None)
        else:
            c[key] = value
    return c


def provision(**changes) -> dict:
    p = copy.deepcopy(GRANT_H2_EXCEPT_PSY["provision"])
    p.update(changes)
    return broken(provision=p)


@pytest.mark.parametrize("resource, problem", [
    ({"resourceType": "Patient"}, "not a Consent"),
    (broken(status="withdrawn"), "status"),
    (broken(scope=None), "scope"),
    (broken(category=[{"coding": [{"system": "http://loinc.org", "code": "64292-6"}]}]),
     "category"),
    (broken(patient={"reference": "Patient/123"}), "regional person"),
    (broken(policyRule=None), "policyRule"),
    (broken(provision=None), "provision: required"),
    (broken(modifierExtension=[{"url": "x", "valueBoolean": True}]), "modifierExtension"),
    (provision(type=None), "type"),
    (provision(data=[{"meaning": "instance", "reference": {"reference": "Observation/1"}}]),
     "provision.data: not supported"),
    (provision(code=[{"text": "x"}]), "provision.code: not supported"),
    (provision(action=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                               "consentaction", "code": "correct"}]}]),
     "only access"),
    (provision(actor=[]), "must name the hospital or doctor"),
    (provision(actor=[{"role": {"coding": [{"code": "IRCP"}]},
                       "reference": {"reference": "PractitionerRole/7"}}]),
     "Organization/<id> or Practitioner/<id>"),
    (provision(actor=[{"reference": {"reference": "Organization/h2"}}]), "role: required"),
    (provision(purpose=[{"code": "TREAT"}]), "purpose needs system"),
    (provision(**{"class": [{"system": "http://hl7.org/fhir/resource-types",
                             "code": "Claim"}]}), "unsupported class 'Claim'"),
    (provision(securityLabel=label("PSY")), "nested provision"),
    (provision(provision=[{"type": "deny", "securityLabel": label("R")}]),
     "unsupported securityLabel 'R'"),
    (provision(period={"start": "2027-01-01", "end": "2026-01-01"}), "ends before it starts"),
    (provision(period={"start": "1 Jan 2026"}), "not a FHIR dateTime"),
    (provision(period={"start": "2026-01-01T08:00:00"}), "needs a timezone"),
    (provision(extension=[{"url": MASK_EXTENSION, "valueCode": "name"}]), "mask must be"),
    (provision(provision=[{"type": "deny", "actor": [custodian("h1")]}]),
     "hiding one hospital's records is not supported"),
    (provision(provision=[{"type": "permit", "actor": [
        {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                        "v3-ParticipationType", "code": "CST"}]},
         "reference": {"reference": "Practitioner/dr"}}]}]), "custodian must be an Organization"),
    (broken(provision={"type": "deny", "provision": [{"type": "permit"}]}),
     "must name the hospital or doctor"),
])
def test_unsupported_or_invalid_consents_are_refused_with_a_reason(resource, problem):
    problems = check_consent(resource)
    assert any(problem in p for p in problems), problems
    with pytest.raises(ConsentError) as err:
        parse_consent(resource)
    assert err.value.problems == problems


def test_a_nested_permit_inherits_the_grantee_of_its_parent():
    c = provision(provision=[{"type": "permit", "securityLabel": label("HIV")}])
    assert check_consent(c) == []


def test_an_opt_out_with_a_named_exception_is_accepted():
    c = broken(provision={"type": "deny", "provision": [
        {"type": "permit", "actor": [recipient("Organization", "h2")]}]})
    assert check_consent(c) == []


@pytest.mark.parametrize("value, end, expected", [
    ("2026-05-20", False, "2026-05-20T00:00:00+08:00"),
    ("2027-01-01", True, "2027-01-02T00:00:00+08:00"),   # a date end includes that day
    ("2026-12", True, "2027-01-01T00:00:00+08:00"),
    ("2026-02", True, "2026-03-01T00:00:00+08:00"),
    ("2026", True, "2027-01-01T00:00:00+08:00"),
    ("2026-06-01T12:00:00Z", True, "2026-06-01T12:00:00+00:00"),  # exact instant
    ("2026-06-01T12:00:00.250+08:00", False, "2026-06-01T12:00:00.250000+08:00"),
])
def test_period_bounds_as_people_mean_them(value, end, expected):
    assert parse_instant(value, end=end).isoformat() == expected


def test_a_consent_for_another_status_is_parsed_but_not_active():
    for status in ("inactive", "rejected", "draft", "proposed", "entered-in-error"):
        assert not parse_consent(broken(status=status)).active
    assert parse_consent(broken(dateTime="2026-05-20T10:00:00+08:00")).recorded == datetime(
        2026, 5, 20, 2, 0, tzinfo=UTC)
