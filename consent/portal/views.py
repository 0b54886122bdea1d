"""What the portal's pages show, computed from FHIR resources and decisions.

Templates stay logic-free: this module turns records, Consent resources,
consultations and decisions into small rows in the reader's language. Kept
apart from the routes so that it can be tested without HTTP.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from consent.policy import LOCAL_TZ, ConsentError, parse_consent, parse_instant
from consent.portal.data import AccessEntry, organization_of
from consent.portal.i18n import MESSAGES, category_name, translator, type_name
from schemas.consent import Consultation, DecisionResponse
from schemas.sensitivity import CATEGORIES, SENSITIVE_CODES

#: Where a resource keeps the date it is about, in order of preference.
_DATE_FIELDS = ("effectiveDateTime", "effectivePeriod.start", "period.start", "onsetDateTime",
                "recordedDate", "authoredOn", "issued", "started", "occurrenceDateTime",
                "performedDateTime", "performedPeriod.start", "date", "birthDate")


def _get(resource: dict[str, Any], path: str) -> Any:
    value: Any = resource
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def record_date(resource: dict[str, Any]) -> str | None:
    """The local date (``YYYY-MM-DD``) a record is about, or None."""
    fields = _DATE_FIELDS if resource.get("resourceType") != "Patient" else ()
    for path in fields:
        value = _get(resource, path)
        if isinstance(value, str) and len(value) >= 10:
            try:
                return parse_instant(value).astimezone(LOCAL_TZ).date().isoformat()
            except ValueError:
                return value[:10]
    return None


def _concept(value: Any) -> str | None:
    """A CodeableConcept (or a bare Coding) in words."""
    if not isinstance(value, dict):
        return None
    if "coding" not in value and (value.get("display") or value.get("code")):
        return str(value.get("display") or value.get("code"))
    if value.get("text"):
        return str(value["text"])
    for coding in value.get("coding") or []:
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            code = coding.get("code")
            display = coding.get("display")
            return f"{display} ({code})" if display and code else str(display or code)
    return None


def describe(resource: dict[str, Any]) -> str:
    """A one-line summary of a record in the words of its source."""
    rtype = resource.get("resourceType", "")
    if rtype == "Patient":
        name = (resource.get("name") or [{}])[0]
        text = name.get("text") or (name.get("family", "") + "".join(name.get("given") or []))
        return " · ".join(str(p) for p in (text, resource.get("birthDate")) if p)
    if rtype == "ImagingStudy":
        modalities = "/".join(str(m.get("code")) for m in resource.get("modality") or []
                              if isinstance(m, dict) and m.get("code"))
        return " · ".join(str(p) for p in (resource.get("description"), modalities) if p)
    if rtype == "Encounter":
        return _concept(resource.get("type", [None])[0] if resource.get("type") else None) \
            or _concept(resource.get("class")) or ""
    parts = [_concept(resource.get("code")) or _concept(resource.get("medicationCodeableConcept"))
             or ""]
    qty = resource.get("valueQuantity")
    if isinstance(qty, dict) and "value" in qty:
        parts.append(f"{qty['value']} {qty.get('unit', '')}".strip())
    elif value := _concept(resource.get("valueCodeableConcept")):
        parts.append(value)
    return ": ".join(p for p in parts if p)


def labels_of(resource: dict[str, Any]) -> list[str]:
    """The sensitive categories a record is labelled with."""
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    codes = {s.get("code") for s in meta.get("security") or [] if isinstance(s, dict)}
    return sorted(c for c in codes if c in SENSITIVE_CODES)


#: Within a day: the visit, then what was found, then the rest.
_TYPE_ORDER = {"Encounter": 0, "Condition": 1, "Procedure": 2, "DiagnosticReport": 3,
               "Observation": 4, "ImagingStudy": 5, "MedicationRequest": 6}
#: Bookkeeping, not health information: left out of the page (the download has it).
_NOT_SHOWN = frozenset({"Provenance"})


@dataclass
class RecordRow:
    type: str
    summary: str
    categories: list[str]
    ref: str


@dataclass
class HospitalRecords:
    id: str
    name: str
    days: list[tuple[str, list[RecordRow]]] = field(default_factory=list)
    count: int = 0


def group_records(records: list[dict[str, Any]], names: dict[str, str],
                  lang: str) -> list[HospitalRecords]:
    """Records by hospital (by name), then by date (newest first; undated last)."""
    t = translator(lang)
    by_org: dict[str, dict[str, list[RecordRow]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(records, key=lambda r: _TYPE_ORDER.get(r.get("resourceType", ""), 99)):
        if r.get("resourceType") in _NOT_SHOWN:
            continue
        org = organization_of(r) or ""
        day = record_date(r) or ""
        by_org[org][day].append(RecordRow(
            type=type_name(r.get("resourceType", ""), lang), summary=describe(r),
            categories=[category_name(c, lang) for c in labels_of(r)],
            ref=f"{r.get('resourceType')}/{r.get('id')}"))
    out = []
    for org, days in by_org.items():
        ordered = sorted(days.items(), key=lambda kv: (kv[0] == "", kv[0]), reverse=False)
        dated = sorted((d for d in ordered if d[0]), key=lambda kv: kv[0], reverse=True)
        undated = [(t("records.date_unknown"), rows) for d, rows in ordered if not d]
        name = names.get(org, org) if org else t("records.other_source")
        out.append(HospitalRecords(id=org, name=name, days=dated + undated,
                                   count=sum(len(rows) for _, rows in days.items())))
    return sorted(out, key=lambda h: h.name)


@dataclass
class ConsentRow:
    id: str
    grantee: str
    purposes: list[str]
    categories: list[str]
    period: str
    status: str
    status_text: str
    recorded: str
    active: bool


def _date_text(value: str | None) -> str | None:
    return value[:10] if value else None


def consent_row(consent: dict[str, Any], names: dict[str, str],
                doctors: dict[str, dict[str, Any]], lang: str) -> ConsentRow:
    """One consent in words: to whom, for what, opening which categories, when."""
    t = translator(lang)
    provision = consent.get("provision") or {}
    grantees = []
    for actor in provision.get("actor") or []:
        ref = ((actor.get("reference") or {}).get("reference") or "")
        roles = [c.get("code") for c in (actor.get("role") or {}).get("coding") or []]
        if "CST" in roles:
            continue
        kind, _, rid = ref.partition("/")
        if kind == "Practitioner" and rid in doctors:
            doc = doctors[rid]
            grantees.append(t("preview.doctor", name=doc["name"],
                              hospital=names.get(doc["organization"], doc["organization"])))
        else:
            grantees.append(names.get(rid) or (actor.get("reference") or {}).get("display")
                            or rid)
    purposes = [t(f"purpose.{c['code']}") if f"purpose.{c['code']}" in MESSAGES[lang]
                else c["code"] for c in _codings(provision.get("purpose"))]
    opened: set[str] = set()
    for child in provision.get("provision") or []:
        if child.get("type") == "permit":
            opened |= {c["code"] for c in _codings(child.get("securityLabel"))}
    period = provision.get("period") or {}
    start, end = _date_text(period.get("start")), _date_text(period.get("end"))
    parts = ([t("consents.from", start=start)] if start else []) + (
        [t("consents.until", end=end)] if end else [])
    status = consent.get("status", "")
    status_text = t(f"status.{status}") if status in ("active", "inactive") else t("status.other")
    try:
        parse_consent(consent)
    except ConsentError:
        status_text = t("status.other")
    return ConsentRow(
        id=str(consent.get("id")), grantee=", ".join(grantees) or "—", purposes=purposes,
        categories=[category_name(c, lang) for c in sorted(opened)],
        period=" ".join(parts) or t("consents.always"), status=status,
        status_text=status_text, recorded=_date_text(consent.get("dateTime")) or "",
        active=status == "active")


def _codings(items: Any) -> list[dict[str, Any]]:
    return [c for c in items or [] if isinstance(c, dict) and c.get("code")]


def local_time(instant: str | datetime | None) -> str:
    """An instant as local (UTC+8) ``YYYY-MM-DD HH:MM``."""
    if instant is None:
        return ""
    try:
        value = instant if isinstance(instant, datetime) else parse_instant(instant)
    except ValueError:
        return str(instant)
    return value.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


@dataclass
class ConsultationRow:
    id: str
    requester: str
    invited: str
    reason: str
    period: str
    scope: str
    status: str
    status_text: str
    can_answer: bool
    can_decline: bool


def consultation_row(c: Consultation, names: dict[str, str],
                     doctors: dict[str, dict[str, Any]], lang: str) -> ConsultationRow:
    """One consultation request in words, and what the patient may do with it."""
    t = translator(lang)
    invited = []
    if c.invited_practitioner:
        doc = doctors.get(c.invited_practitioner)
        invited.append(doc["name"] if doc else c.invited_practitioner)
    if c.invited_organization:
        invited.append(names.get(c.invited_organization, c.invited_organization))
    scope = [type_name(rt, lang) for rt in c.scope.resource_types or []]
    scope += [category_name(code, lang) for code in c.scope.labels]
    if c.scope.organizations is not None:
        scope += [names.get(o, o) for o in c.scope.organizations]
    waiting = c.status == "requested" and c.approved  # the patient said yes; the invitee not yet
    status = t("consult.status.waiting" if waiting else f"consult.status.{c.status}")
    if c.approved and c.approval:
        status += " · " + t("consult.approved_by", how=t(f"consult.approval.{c.approval}"))
    open_ = c.status in ("requested", "accepted")
    return ConsultationRow(
        id=c.id, requester=names.get(c.requester, c.requester), invited=" · ".join(invited),
        reason=c.reason or "", period=f"{local_time(c.start)} – {local_time(c.end)}",
        scope=t("list.sep").join(scope) or t("consult.scope_all"), status=c.status,
        status_text=status,
        can_answer=open_ and not c.approved, can_decline=open_)


def until_text(expires: datetime, lang: str) -> str:
    """When access ends, as people say it: an end at local midnight is the
    previous day, included ("until 2027-01-01" ends at 2027-01-02T00:00+08:00)."""
    local = expires.astimezone(LOCAL_TZ)
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        day = (local - timedelta(days=1)).date().isoformat()
        return translator(lang)("preview.inclusive", day=day)
    return local.strftime("%Y-%m-%d %H:%M")


def access_what(entry: AccessEntry, lang: str) -> str:
    """What an access did, in words: the action and the kind of record."""
    t = translator(lang)
    table = MESSAGES[lang]
    action = table.get(f"do.{entry.interaction}", entry.interaction or "")
    kind = entry.what.split("/", 1)[0] if entry.what else ""
    text = " · ".join(p for p in (action, type_name(kind, lang) if kind else "") if p)
    if entry.count is not None:
        text += f"（{t('access.results', n=entry.count)}）" if lang == "zh" else \
            f" ({t('access.results', n=entry.count)})"
    return text or "—"


@dataclass
class PreviewRow:
    name: str
    others: str
    hidden: str | None
    masked: str | None
    types: str | None
    until: str | None
    why: list[str]


def preview_row(name: str, own: str, decision: DecisionResponse, names: dict[str, str],
                lang: str) -> PreviewRow:
    """What one hospital (or doctor) sees of the patient, from its decision."""
    t = translator(lang)
    others = [o for o in decision.visible_organizations if o != own]
    if not decision.permit or not others and not decision.all_organizations:
        seen = t("preview.no_others")
    elif decision.all_organizations:
        seen = t("preview.all_hospitals")
    else:
        seen = t("list.sep").join(names.get(o, o) for o in others)
    permit, sep = decision.permit, t("list.sep")
    hidden = sep.join(category_name(c.code, lang) for c in CATEGORIES
                      if c.code in decision.hidden_labels) if permit else ""
    masks = sep.join(t(f"mask.{m}") for m in decision.masks)
    types = sep.join(type_name(rt, lang) for rt in decision.resource_types or [])
    why = list(dict.fromkeys(t(f"basis.{b.code}") for b in decision.basis))
    return PreviewRow(name=name, others=seen, hidden=hidden or None,
                      masked=masks or None, types=types if permit and types else None,
                      until=until_text(decision.expires, lang) if decision.expires else None,
                      why=why)
