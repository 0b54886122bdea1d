"""Realistic Consent JSON, written out by hand as a portal or a hospital would
send it, and small helpers the consent tests share."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from consent.engine import decide
from schemas.consent import DecisionRequest, DecisionResponse

CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 6, 1, 9, 30, tzinfo=CST)
PERSON = "p-1001"

ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def recipient(kind: str, id_: str, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, str] = {"reference": f"{kind}/{id_}"}
    if display:
        ref["display"] = display
    return {"role": {"coding": [{"system": ROLE, "code": "IRCP"}]}, "reference": ref}


def custodian(id_: str) -> dict[str, Any]:
    return {"role": {"coding": [{"system": ROLE, "code": "CST"}]},
            "reference": {"reference": f"Organization/{id_}"}}


def label(*codes: str) -> list[dict[str, str]]:
    return [{"system": ACTCODE, "code": c} for c in codes]


def purpose(*codes: str) -> list[dict[str, str]]:
    return [{"system": REASON, "code": c} for c in codes]


def types(*codes: str) -> list[dict[str, str]]:
    return [{"system": "http://hl7.org/fhir/resource-types", "code": c} for c in codes]


#: The issue's story: the patient lets 市第二医院 (h2) see their records for
#: treatment, except mental health, until 2027-01-01.
GRANT_H2_EXCEPT_PSY: dict[str, Any] = {
    "resourceType": "Consent",
    "id": "c-h2",
    "status": "active",
    "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                          "code": "patient-privacy"}]},
    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0",
                              "display": "Patient consent"}]}],
    "patient": {"identifier": {"system": "urn:hie:person", "value": PERSON}},
    "dateTime": "2026-05-20T10:00:00+08:00",
    "policyRule": {"coding": [{"system": ACTCODE, "code": "OPTIN"}]},
    "provision": {
        "type": "permit",
        "period": {"start": "2026-05-20", "end": "2027-01-01"},
        "actor": [recipient("Organization", "h2", "市第二医院")],
        "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                "code": "access"}]}],
        "purpose": purpose("TREAT"),
        "provision": [{"type": "deny", "securityLabel": label("PSY")}],
    },
}


def consent(provision: dict[str, Any], *, id_: str = "c-x", status: str = "active",
            person: str = PERSON, rule: str = "OPTIN") -> dict[str, Any]:
    """A Consent around ``provision``, otherwise like :data:`GRANT_H2_EXCEPT_PSY`."""
    c = copy.deepcopy(GRANT_H2_EXCEPT_PSY)
    c.update(id=id_, status=status, provision=provision)
    c["patient"]["identifier"]["value"] = person
    c["policyRule"]["coding"][0]["code"] = rule
    return c


def grant(org: str = "h2", *, nested: list[dict[str, Any]] | None = None,
          **extra: Any) -> dict[str, Any]:
    """A permit provision for one hospital (for treatment), with extras."""
    p: dict[str, Any] = {"type": "permit", "actor": [recipient("Organization", org)],
                         "purpose": purpose("TREAT"), **extra}
    if nested:
        p["provision"] = nested
    return p


def ask(org: str = "h2", *, practitioner: str | None = None, purpose_: str = "TREAT",
        reason: str | None = None, consultation: str | None = None,
        consents: list[dict[str, Any]] | tuple = (), consultations: list | tuple = (),
        now: datetime = NOW, **kw: Any) -> DecisionResponse:
    """Decide one request about :data:`PERSON`."""
    request = DecisionRequest(organization=org, practitioner=practitioner, purpose=purpose_,
                              reason=reason, consultation=consultation, person=PERSON)
    return decide(request, consents=list(consents), consultations=list(consultations),
                  now=now, **kw)


def codes(response: DecisionResponse) -> list[str]:
    return [b.code for b in response.basis]


UTC_NOW = NOW.astimezone(UTC)
