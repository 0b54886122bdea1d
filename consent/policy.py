"""A patient's consents, parsed once into a small policy model.

A consent is a FHIR R4 ``Consent`` (scope ``patient-privacy``, category LOINC
``59284-0``) whose ``provision`` tree says who may see what:

* requester conditions — ``actor`` (an ``Organization``: a hospital, or one
  ``Practitioner``), ``purpose`` (v3 PurposeOfUse codes, system
  :data:`PURPOSE_SYSTEM`) and ``period``;
* data conditions — ``class`` (resource types), ``securityLabel`` (sensitive
  categories, :mod:`schemas.sensitivity`) and custodian actors (role ``CST``:
  only records those hospitals hold).

A nested provision is an exception inside its parent: it is considered only
where the parent applies, and where it applies it decides instead of the
parent. Everything the decision engine cannot honour exactly (``data``,
``code``, ``dataPeriod``, an ``action`` other than access, modifier extensions,
unknown labels or types) is refused at write time by :func:`check_consent`
rather than silently widened. Builders for the portal produce consents this
module accepts. See ``docs/consent.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from schemas.consent import MASK_ADDRESS, MASK_TELECOM
from schemas.resource_types import RESOURCE_TYPES
from schemas.sensitivity import LABEL_SYSTEM, SENSITIVE_CODES

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
CATEGORY_SYSTEM = "http://loinc.org"
CATEGORY_CODE = "59284-0"  # Patient consent
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CLASS_SYSTEM = "http://hl7.org/fhir/resource-types"
ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_RECIPIENT = "IRCP"  # information recipient: who the provision is granted to
ROLE_CUSTODIAN = "CST"   # custodian: whose records the provision covers
ACTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentaction"
POLICY_RULE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#: The regional person, as a consent names its patient.
PERSON_SYSTEM = "urn:hie:person"
PERSON_URN = "urn:hie:person:"
#: Provision extension: a mask obligation (``telecom``, ``address``) for the grantee.
MASK_EXTENSION = "https://hie.example.org/fhir/StructureDefinition/consent-mask"
CONSENT_MASKS = frozenset({MASK_TELECOM, MASK_ADDRESS})
#: Date-only period bounds are local dates of the region (China Standard Time).
LOCAL_TZ = timezone(timedelta(hours=8), "CST")

STATUSES = frozenset({"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"})
Effect = Literal["permit", "deny"]

_DATETIME = re.compile(r"^(\d{4})(-(\d{2})(-(\d{2})(T(\d{2}):(\d{2})(:(\d{2})(\.\d+)?)?"
                       r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")


class ConsentError(ValueError):
    """A Consent the policy model cannot honour; ``problems`` says why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Provision:
    """One node of a consent's provision tree, with its own conditions only
    (ancestors' conditions hold because a node is reached through them)."""

    path: str
    effect: Effect
    organizations: frozenset[str] = frozenset()  # grantee hospitals
    practitioners: frozenset[str] = frozenset()  # grantee doctors
    custodians: frozenset[str] | None = None  # None: records of every hospital
    purposes: frozenset[str] | None = None    # None: any purpose
    classes: frozenset[str] | None = None     # None: every resource type
    labels: frozenset[str] | None = None      # None: no label condition
    start: datetime | None = None
    until: datetime | None = None  # exclusive: the instant the provision stops applying
    masks: frozenset[str] = frozenset()
    names: tuple[tuple[str, str], ...] = ()  # actor id → display, for texts
    children: tuple[Provision, ...] = ()

    def applies_to(self, *, organization: str, practitioner: str | None, purpose: str,
                   now: datetime, ignore_purpose: bool = False) -> bool:
        """Whether the requester conditions hold for this requester now."""
        named = self.organizations or self.practitioners
        if named and organization not in self.organizations and (
                practitioner is None or practitioner not in self.practitioners):
            return False
        if not ignore_purpose and self.purposes is not None and purpose not in self.purposes:
            return False
        return self.in_period(now)

    def in_period(self, now: datetime) -> bool:
        return (self.start is None or now >= self.start) and (
            self.until is None or now < self.until)

    def covers(self, custodian: str | None, resource_type: str | None, label: str | None) -> bool:
        """Whether a record cell (whose hospital, which type, which label) is in
        this provision's data scope. ``None`` stands for "any other" hospital or
        type, which a named custodian or class never matches."""
        if self.custodians is not None and custodian not in self.custodians:
            return False
        if self.classes is not None and resource_type not in self.classes:
            return False
        return self.labels is None or label in self.labels

    def walk(self) -> Iterator[Provision]:
        yield self
        for child in self.children:
            yield from child.walk()

    def name(self, key: str) -> str:
        return dict(self.names).get(key, key)


@dataclass(frozen=True, slots=True)
class Policy:
    """One parsed Consent."""

    id: str | None
    person: str
    status: str
    root: Provision
    recorded: datetime | None = None
    provisions: tuple[Provision, ...] = field(default=(), repr=False)

    @property
    def active(self) -> bool:
        """Only an active consent does anything: draft, proposed, rejected,
        inactive (withdrawn) and entered-in-error ones grant and deny nothing."""
        return self.status == "active"


# -- time ---------------------------------------------------------------------

def parse_instant(value: str, *, end: bool = False) -> datetime:
    """A FHIR ``date``/``dateTime`` as the instant a period bound means.

    A partial value covers its whole year, month or day in local time: as a
    start it means the first instant, as an ``end`` the first instant *after*
    it (so "until 2027-01-01" includes that day). A full dateTime is exact.

    >>> parse_instant("2027-01-01", end=True).isoformat()
    '2027-01-02T00:00:00+08:00'
    """
    m = _DATETIME.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"not a FHIR dateTime: {value!r}")
    if m.group(7) is not None:  # has a time: exact instant
        if m.group(12) is None:
            raise ValueError(f"a dateTime with a time needs a timezone: {value!r}")
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    year, month, day = int(m.group(1)), int(m.group(3) or 1), int(m.group(5) or 1)
    first = datetime(year, month, day, tzinfo=LOCAL_TZ)
    if not end:
        return first
    if m.group(5):
        return first + timedelta(days=1)
    if m.group(3):
        return first.replace(year=year + month // 12, month=month % 12 + 1)
    return first.replace(year=year + 1)


def fhir_datetime(value: date | datetime) -> str:
    """A ``date`` or an aware ``datetime`` in FHIR form."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("datetimes must carry a timezone")
        return value.isoformat(timespec="seconds")
    return value.isoformat()


# -- parsing -------------------------------------------------------------------

def _codings(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        value = value.get("coding", [])
    return [c for c in value or [] if isinstance(c, dict)]


def _has_coding(value: Any, system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code for c in _codings(value))


def person_of(resource: dict[str, Any]) -> str | None:
    """The regional person a Consent belongs to (``patient.identifier`` with
    system ``urn:hie:person``, or a ``urn:hie:person:…`` reference)."""
    patient = resource.get("patient")
    if not isinstance(patient, dict):
        return None
    ident = patient.get("identifier")
    if isinstance(ident, dict) and ident.get("system") == PERSON_SYSTEM and ident.get("value"):
        return str(ident["value"])
    ref = patient.get("reference")
    if isinstance(ref, str) and ref.startswith(PERSON_URN) and len(ref) > len(PERSON_URN):
        return ref[len(PERSON_URN):]
    return None


def _codes(items: Any, system: str, what: str, path: str, problems: list[str],
           allowed: frozenset[str] | None = None) -> frozenset[str] | None:
    if not items:
        return None
    codes = set()
    for c in _codings(items):
        if c.get("system") != system or not c.get("code"):
            problems.append(f"{path}: every {what} needs system {system} and a code")
        elif allowed is not None and c["code"] not in allowed:
            problems.append(f"{path}: unsupported {what} {c['code']!r}")
        else:
            codes.add(c["code"])
    return frozenset(codes)


def _provision(node: Any, path: str, problems: list[str], *,
               granted: bool) -> Provision | None:
    """Parse one provision; ``granted``: an ancestor names grantee actors."""
    if not isinstance(node, dict):
        problems.append(f"{path}: must be an object")
        return None
    for unsupported in ("data", "code", "dataPeriod", "modifierExtension"):
        if node.get(unsupported):
            problems.append(f"{path}.{unsupported}: not supported (its meaning would be lost)")
    effect = node.get("type")
    if effect not in ("permit", "deny"):
        problems.append(f"{path}.type: must be permit or deny")
        effect = "deny"
    actions = node.get("action") or []
    if actions and not any(_has_coding(a, ACTION_SYSTEM, "access") for a in actions):
        problems.append(f"{path}.action: only access is supported")

    orgs, practs, custodians, names = set(), set(), set(), []
    for i, actor in enumerate(node.get("actor") or []):
        apath = f"{path}.actor[{i}]"
        ref = (actor.get("reference") or {}) if isinstance(actor, dict) else {}
        target = ref.get("reference") if isinstance(ref, dict) else None
        kind, _, rid = (target or "").partition("/")
        if kind not in ("Organization", "Practitioner") or not rid or "/" in rid:
            problems.append(f"{apath}.reference: must be Organization/<id> or Practitioner/<id>")
            continue
        if not _codings(actor.get("role")):
            problems.append(f"{apath}.role: required")
        if ref.get("display"):
            names.append((rid, str(ref["display"])))
        if _has_coding(actor.get("role"), ROLE_SYSTEM, ROLE_CUSTODIAN):
            if kind != "Organization":
                problems.append(f"{apath}: a custodian must be an Organization")
            elif effect == "deny":
                problems.append(f"{apath}: hiding one hospital's records is not supported; "
                                "grant the hospitals whose records may be seen instead")
            custodians.add(rid)
        else:
            (orgs if kind == "Organization" else practs).add(rid)

    purposes = _codes(node.get("purpose"), PURPOSE_SYSTEM, "purpose", f"{path}.purpose", problems)
    classes = _codes(node.get("class"), CLASS_SYSTEM, "class", f"{path}.class", problems,
                     frozenset(RESOURCE_TYPES))
    labels = _codes(node.get("securityLabel"), LABEL_SYSTEM, "securityLabel",
                    f"{path}.securityLabel", problems, SENSITIVE_CODES)
    start = until = None
    period = node.get("period") or {}
    try:
        start = parse_instant(period["start"]) if period.get("start") else None
        until = parse_instant(period["end"], end=True) if period.get("end") else None
    except (ValueError, TypeError) as exc:
        problems.append(f"{path}.period: {exc}")
    if start and until and until <= start:
        problems.append(f"{path}.period: ends before it starts")

    masks = set()
    for ext in node.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == MASK_EXTENSION:
            if ext.get("valueCode") not in CONSENT_MASKS:
                problems.append(f"{path}.extension: mask must be one of {sorted(CONSENT_MASKS)}")
            elif effect == "deny":
                problems.append(f"{path}.extension: a mask belongs on a permit provision")
            else:
                masks.add(ext["valueCode"])

    granted = granted or bool(orgs or practs)
    if effect == "permit" and not granted:
        problems.append(f"{path}: a permit must name the hospital or doctor it is granted to")
    if effect == "permit" and labels and path == "provision":
        problems.append(f"{path}: opening sensitive categories needs a general permit around "
                        "it; put the securityLabel in a nested provision")
    children = []
    for i, child in enumerate(node.get("provision") or []):
        parsed = _provision(child, f"{path}.provision[{i}]", problems, granted=granted)
        if parsed is not None:
            children.append(parsed)
    return Provision(
        path=path, effect=effect, organizations=frozenset(orgs), practitioners=frozenset(practs),
        custodians=frozenset(custodians) or None, purposes=purposes, classes=classes,
        labels=labels, start=start, until=until, masks=frozenset(masks), names=tuple(names),
        children=tuple(children))


def _parse(resource: Any) -> tuple[Policy | None, list[str]]:
    problems: list[str] = []
    if not isinstance(resource, dict) or resource.get("resourceType") != "Consent":
        return None, ["not a Consent resource"]
    status = resource.get("status")
    if status not in STATUSES:
        problems.append(f"status: must be one of {sorted(STATUSES)}")
    if not _has_coding(resource.get("scope"), SCOPE_SYSTEM, "patient-privacy"):
        problems.append(f"scope: must be {SCOPE_SYSTEM}|patient-privacy")
    if not any(_has_coding(c, CATEGORY_SYSTEM, CATEGORY_CODE)
               for c in resource.get("category") or []):
        problems.append(f"category: must include {CATEGORY_SYSTEM}|{CATEGORY_CODE}")
    person = person_of(resource)
    if person is None:
        problems.append(f"patient: must name the regional person (identifier system "
                        f"{PERSON_SYSTEM})")
    if not resource.get("policy") and not resource.get("policyRule"):
        problems.append("policy or policyRule: required for a patient-privacy consent")
    if resource.get("modifierExtension"):
        problems.append("modifierExtension: not supported")
    recorded = None
    if resource.get("dateTime"):
        try:
            recorded = parse_instant(resource["dateTime"])
        except (ValueError, TypeError) as exc:
            problems.append(f"dateTime: {exc}")
    if not resource.get("provision"):
        problems.append("provision: required (a consent without rules says nothing)")
        return None, problems
    root = _provision(resource["provision"], "provision", problems, granted=False)
    if problems or root is None:
        return None, problems
    return Policy(id=resource.get("id"), person=str(person), status=str(status), root=root,
                  recorded=recorded, provisions=tuple(root.walk())), []


def check_consent(resource: Any) -> list[str]:
    """The problems that keep a Consent out of the store (empty: acceptable)."""
    return _parse(resource)[1]


def parse_consent(resource: Any) -> Policy:
    """The policy a Consent states; raises :class:`ConsentError` when it cannot
    be honoured exactly."""
    policy, problems = _parse(resource)
    if policy is None:
        raise ConsentError(problems)
    return policy


# -- builders (the portal's forms become these) ---------------------------------

def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _actor(kind: str, id_: str, role: str, display: str | None) -> dict[str, Any]:
    reference: dict[str, str] = {"reference": f"{kind}/{id_}"}
    if display:
        reference["display"] = display
    return {"role": {"coding": [_coding(ROLE_SYSTEM, role)]}, "reference": reference}


def _period(start: date | datetime | None, end: date | datetime | None) -> dict[str, str]:
    period = {}
    if start is not None:
        period["start"] = fhir_datetime(start)
    if end is not None:
        period["end"] = fhir_datetime(end)
    return period


def _envelope(*, person: str, rule: str, provision: dict[str, Any], recorded: datetime,
              consent_id: str | None) -> dict[str, Any]:
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [_coding(SCOPE_SYSTEM, "patient-privacy", "Privacy Consent")]},
        "category": [{"coding": [_coding(CATEGORY_SYSTEM, CATEGORY_CODE, "Patient consent")]}],
        "patient": {"identifier": {"system": PERSON_SYSTEM, "value": person}},
        "dateTime": fhir_datetime(recorded),
        "policyRule": {"coding": [_coding(POLICY_RULE_SYSTEM, rule)]},
        "provision": provision,
    }
    if consent_id:
        consent["id"] = consent_id
    return consent


def build_consent(*, person: str, recorded: datetime, organization: str | None = None,
                  practitioner: str | None = None, grantee_name: str | None = None,
                  purposes: tuple[str, ...] | list[str] = ("TREAT",),
                  categories: tuple[str, ...] | list[str] = (),
                  resource_types: tuple[str, ...] | list[str] | None = None,
                  custodians: tuple[str, ...] | list[str] = (),
                  start: date | datetime | None = None, end: date | datetime | None = None,
                  masks: tuple[str, ...] | list[str] = (),
                  consent_id: str | None = None) -> dict[str, Any]:
    """A grant: the patient lets one hospital (or one doctor) see their records.

    ``categories`` are the sensitive categories opened (each a nested permit);
    every other category stays hidden. ``custodians`` limits the grant to the
    records those hospitals hold (empty: every hospital of the region).
    ``masks`` adds obligations (``telecom``, ``address``) for the grantee.
    """
    if (organization is None) == (practitioner is None):
        raise ValueError("grant to exactly one organization or one practitioner")
    kind, grantee = (("Organization", organization) if organization
                     else ("Practitioner", practitioner))
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [_actor(kind, str(grantee), ROLE_RECIPIENT, grantee_name)]
        + [_actor("Organization", c, ROLE_CUSTODIAN, None) for c in custodians],
        "action": [{"coding": [_coding(ACTION_SYSTEM, "access")]}],
    }
    if period := _period(start, end):
        provision["period"] = period
    if purposes:
        provision["purpose"] = [_coding(PURPOSE_SYSTEM, p) for p in purposes]
    if resource_types:
        provision["class"] = [_coding(CLASS_SYSTEM, t) for t in resource_types]
    if masks:
        provision["extension"] = [{"url": MASK_EXTENSION, "valueCode": m} for m in masks]
    if categories:
        provision["provision"] = [{"type": "permit",
                                   "securityLabel": [_coding(LABEL_SYSTEM, c)
                                                     for c in categories]}]
    consent = _envelope(person=person, rule="OPTIN", provision=provision, recorded=recorded,
                        consent_id=consent_id)
    if problems := check_consent(consent):
        raise ConsentError(problems)
    return consent


def build_refusal(*, person: str, recorded: datetime, organization: str | None = None,
                  practitioner: str | None = None, grantee_name: str | None = None,
                  purposes: tuple[str, ...] | list[str] = (),
                  categories: tuple[str, ...] | list[str] = (),
                  start: date | datetime | None = None, end: date | datetime | None = None,
                  consent_id: str | None = None) -> dict[str, Any]:
    """An explicit refusal: deny one hospital, one doctor or (neither given)
    everyone — all records, or only ``categories``. ``purposes=("ETREAT",)``
    with no one named refuses break-the-glass."""
    if organization is not None and practitioner is not None:
        raise ValueError("refuse one organization, one practitioner, or everyone")
    provision: dict[str, Any] = {"type": "deny"}
    if organization is not None:
        provision["actor"] = [_actor("Organization", organization, ROLE_RECIPIENT, grantee_name)]
    elif practitioner is not None:
        provision["actor"] = [_actor("Practitioner", practitioner, ROLE_RECIPIENT, grantee_name)]
    if period := _period(start, end):
        provision["period"] = period
    if purposes:
        provision["purpose"] = [_coding(PURPOSE_SYSTEM, p) for p in purposes]
    if categories:
        provision["securityLabel"] = [_coding(LABEL_SYSTEM, c) for c in categories]
    consent = _envelope(person=person, rule="OPTOUT", provision=provision, recorded=recorded,
                        consent_id=consent_id)
    if problems := check_consent(consent):
        raise ConsentError(problems)
    return consent


def withdraw(consent: dict[str, Any]) -> dict[str, Any]:
    """The consent withdrawn (status ``inactive``): it stops counting at once.
    Kept rather than deleted, so the patient's history shows what was granted."""
    return {**consent, "status": "inactive"}
