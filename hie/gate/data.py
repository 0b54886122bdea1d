"""The consent service's data in the exchange's document store.

:class:`StoreConsentData` implements :class:`consent.data.ConsentData` over
:class:`hie.store.base.Store`, so both back ends (SQLite, MongoDB) hold it:

* a patient's consents are FHIR ``Consent`` resources;
* a consultation is a FHIR ``ServiceRequest`` (intent ``order``, category
  consultation, requester ``Organization/<requester>``, performer the invited
  hospital and/or practitioner, ``reasonCode.text``, ``occurrencePeriod``, the
  scope in an extension) plus a ``Task`` with the same id (its status mirrors the
  lifecycle, ``focus`` → the ServiceRequest, ``owner`` → the invited party,
  ``businessStatus`` → the patient's approval);
* break-the-glass sessions are internal documents (type :data:`BREAK_GLASS`).

The FHIR ones carry ``meta.source`` :data:`CONSENT_SOURCE` — the consent service
acts for the region, not for a hospital — and no hospital's restriction includes
that source, so hospitals never read a patient's consents through ``/fhir``.
Internal documents carry ``urn:hie:exchange:internal`` like every other.

The patient is named by identifier (``urn:hie:person``), which the generic
index extraction does not turn into a reference; each of these resources gets a
token row ``hie-person`` (system ``urn:hie:person``) as well, so
``consents(person)`` and ``consultations(person)`` are index queries. Every write
is one :meth:`Store.transact` of versioned :class:`WriteRecord` s; a
ServiceRequest and its Task commit together or not at all, and a consultation
is saved only over the version it was read at (the ServiceRequest's).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson

from consent.data import CONSENT_SOURCE, DataConflict, next_meta, same_requester
from consent.policy import PERSON_SYSTEM, person_of
from hie.audit.chain import append_in_tx
from hie.audit.model import AuditRecord
from hie.context import INTERNAL_SOURCE
from hie.fhir.search.extract import extract
from hie.fhir.writes import instant, stamp_now
from hie.store.base import Store, StoredResource, Transaction, WriteRecord
from hie.store.index import IndexEntries
from hie.store.query import AnyOf, SearchQuery, TokenMatch
from schemas.consent import BreakGlass, Consultation, ConsultationScope
from schemas.sensitivity import LABEL_SYSTEM

#: Internal document type of a break-the-glass session.
BREAK_GLASS = "_BreakGlass"
#: Index parameter naming the regional person on the consent service's FHIR resources.
PERSON_PARAM = "hie-person"
#: ServiceRequest.category of a consultation (SNOMED CT 11429006 |Consultation|).
CONSULTATION_CATEGORY = {"system": "http://snomed.info/sct", "code": "11429006",
                         "display": "Consultation"}
#: Extension on the ServiceRequest: the records in scope.
SCOPE_EXTENSION = "https://hie.example.org/fhir/StructureDefinition/consultation-scope"
#: Task.businessStatus codes: whether (and how) the patient approved.
APPROVAL_SYSTEM = "https://hie.example.org/fhir/CodeSystem/consultation-approval"

_SR_STATUS = {"requested": "active", "accepted": "active", "completed": "completed",
              "cancelled": "revoked", "declined": "revoked"}
_TASK_STATUS = {"requested": "requested", "accepted": "accepted", "completed": "completed",
                "cancelled": "cancelled", "declined": "rejected"}
_FROM_TASK = {v: k for k, v in _TASK_STATUS.items()}
_PAGE = 500


def _person_ref(person: str) -> dict[str, Any]:
    return {"identifier": {"system": PERSON_SYSTEM, "value": person}}


def _ref_id(ref: Any, kind: str) -> str | None:
    value = ref.get("reference") if isinstance(ref, dict) else None
    prefix = kind + "/"
    return value[len(prefix):] if isinstance(value, str) and value.startswith(prefix) else None


def _index(resource: dict[str, Any], person: str) -> IndexEntries:
    index = extract(resource)
    index.token.append((PERSON_PARAM, PERSON_SYSTEM, person))
    return index


def _by_person(resource_type: str, person: str) -> SearchQuery:
    return SearchQuery(resource_type, (AnyOf((TokenMatch(PERSON_PARAM, person,
                                                         PERSON_SYSTEM),)),))


def _ours(rec: StoredResource | None) -> dict[str, Any] | None:
    """The body of a current resource the consent service wrote, else None."""
    if rec is None or rec.deleted or rec.source != CONSENT_SOURCE:
        return None
    return orjson.loads(rec.body)


# -- consultations as FHIR ---------------------------------------------------------

def service_request(c: Consultation) -> dict[str, Any]:
    """The consultation's ServiceRequest (without meta)."""
    performer = []
    if c.invited_practitioner:
        performer.append({"reference": f"Practitioner/{c.invited_practitioner}"})
    if c.invited_organization:
        performer.append({"reference": f"Organization/{c.invited_organization}"})
    scope: list[dict[str, Any]] = [{"url": "resourceType", "valueCode": t}
                                   for t in c.scope.resource_types or ()]
    scope += [{"url": "label", "valueCoding": {"system": LABEL_SYSTEM, "code": lab}}
              for lab in c.scope.labels]
    scope += [{"url": "custodian", "valueReference": {"reference": f"Organization/{o}"}}
              for o in c.scope.organizations or ()]
    sr: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": c.id, "status": _SR_STATUS[c.status],
        "intent": "order", "category": [{"coding": [CONSULTATION_CATEGORY]}],
        "code": {"text": "Remote consultation (远程会诊)"},
        "subject": _person_ref(c.person),
        "requester": {"reference": f"Organization/{c.requester}"},
        "performer": performer,
    }
    if c.reason:
        sr["reasonCode"] = [{"text": c.reason}]
    period = {k: v.isoformat() for k, v in (("start", c.start), ("end", c.end)) if v}
    if period:
        sr["occurrencePeriod"] = period
    if scope:
        sr["extension"] = [{"url": SCOPE_EXTENSION, "extension": scope}]
    return sr


def task(c: Consultation) -> dict[str, Any]:
    """The consultation's Task (same id as its ServiceRequest; without meta)."""
    owner = (f"Practitioner/{c.invited_practitioner}" if c.invited_practitioner
             else f"Organization/{c.invited_organization}")
    approval = c.approval or ("declined" if c.status == "declined" else "pending")
    return {"resourceType": "Task", "id": c.id, "status": _TASK_STATUS[c.status],
            "intent": "order", "focus": {"reference": f"ServiceRequest/{c.id}"},
            "for": _person_ref(c.person),
            "requester": {"reference": f"Organization/{c.requester}"},
            "owner": {"reference": owner},
            "businessStatus": {"coding": [{"system": APPROVAL_SYSTEM, "code": approval}]}}


def consultation_from(sr: dict[str, Any], tk: dict[str, Any]) -> Consultation:
    """The consultation a ServiceRequest and its Task describe."""
    performer = sr.get("performer") or []
    orgs = [o for p in performer if (o := _ref_id(p, "Organization"))]
    docs = [d for p in performer if (d := _ref_id(p, "Practitioner"))]
    parts = next((e.get("extension", []) for e in sr.get("extension", [])
                  if e.get("url") == SCOPE_EXTENSION), [])
    types = [p["valueCode"] for p in parts if p.get("url") == "resourceType"]
    custodians = [o for p in parts if p.get("url") == "custodian"
                  and (o := _ref_id(p.get("valueReference"), "Organization"))]
    scope = ConsultationScope(
        resource_types=types or None, organizations=custodians or None,
        labels=[p["valueCoding"]["code"] for p in parts if p.get("url") == "label"])
    approval = next((c.get("code") for c in tk.get("businessStatus", {}).get("coding", [])
                     if c.get("system") == APPROVAL_SYSTEM), None)
    period = sr.get("occurrencePeriod") or {}
    return Consultation(
        id=sr["id"], person=sr["subject"]["identifier"]["value"],
        requester=_ref_id(sr.get("requester"), "Organization") or "",
        invited_organization=orgs[0] if orgs else None,
        invited_practitioner=docs[0] if docs else None,
        status=_FROM_TASK[tk["status"]],
        approved=approval in ("portal", "paper"),
        approval=approval if approval in ("portal", "paper") else None,
        start=datetime.fromisoformat(period["start"]) if "start" in period else None,
        end=datetime.fromisoformat(period["end"]) if "end" in period else None,
        reason=(sr.get("reasonCode") or [{}])[0].get("text"), scope=scope,
        version=int(sr["meta"]["versionId"]) if "meta" in sr else None)


# -- the adapter -----------------------------------------------------------------

class StoreConsentData:
    """:class:`consent.data.ConsentData` over the exchange's document store.

    Reads go to the store unrestricted — the consent service is the one reader
    of these records, and the routes decide who may call it."""

    def __init__(self, store: Store, *, organization: str | None = None) -> None:
        self.store = store
        #: who acts, for the audit records of the writes (a hospital calling the
        #: consultation API); None: the patient or the exchange itself
        self.organization = organization

    def _audit(self, interaction: str, person: str, resource_type: str, id_: str,
               detail: str, **fields: Any) -> AuditRecord:
        """The audit record of one consent-service write (appended in its
        transaction, like every write's)."""
        return AuditRecord(interaction=interaction, outcome="permit", person=person,
                           organization=fields.pop("organization", self.organization),
                           resource_type=resource_type, resource_ids=(f"{resource_type}/{id_}",),
                           detail=detail, **fields)

    async def _all(self, query: SearchQuery) -> list[StoredResource]:
        found: list[StoredResource] = []
        page = await self.store.search(query, limit=_PAGE)
        found += page.resources
        while page.next is not None:
            page = await self.store.search(query, limit=_PAGE, cursor=page.next)
            found += page.resources
        return found

    # consents

    async def consents(self, person: str) -> list[dict[str, Any]]:
        return [body for rec in await self._all(_by_person("Consent", person))
                if (body := _ours(rec)) is not None]

    async def save_consent(self, consent: dict[str, Any]) -> dict[str, Any]:
        person = person_of(consent)
        if person is None:
            raise ValueError("a Consent must name the regional person (urn:hie:person)")
        id_ = consent.get("id") or str(uuid.uuid4())

        async def run(tx: Transaction) -> dict[str, Any]:
            current = await tx.read("Consent", id_)
            if current is not None and current.source != CONSENT_SOURCE:
                raise ValueError(f"Consent/{id_} belongs to someone else")
            if current is not None and not current.deleted \
                    and person_of(orjson.loads(current.body)) != person:
                raise ValueError(f"Consent/{id_} belongs to another person")
            version = current.version if current is not None else 0
            stamp = stamp_now()
            stored = next_meta({**consent, "id": id_}, version, source=CONSENT_SOURCE,
                               last_updated=instant(stamp))
            await tx.put(WriteRecord("Consent", id_, version + 1, stamp, orjson.dumps(stored),
                                     source=CONSENT_SOURCE, index=_index(stored, person)))
            await append_in_tx(tx, [self._audit(
                "consent", person, "Consent", id_, f"consent {stored.get('status')}")])
            return stored

        return await self.store.transact(run)

    # consultations

    async def consultations(self, person: str) -> list[Consultation]:
        requests = [b for rec in await self._all(_by_person("ServiceRequest", person))
                    if (b := _ours(rec)) is not None]
        tasks = {rec.id: b for rec in await self.store.read_many(
            [("Task", sr["id"]) for sr in requests]) if (b := _ours(rec)) is not None}
        return [consultation_from(sr, tasks[sr["id"]]) for sr in requests if sr["id"] in tasks]

    async def consultation(self, id: str) -> Consultation | None:
        sr = _ours(await self.store.read("ServiceRequest", id))
        tk = _ours(await self.store.read("Task", id)) if sr is not None else None
        return consultation_from(sr, tk) if sr is not None and tk is not None else None

    async def save_consultation(self, c: Consultation) -> Consultation:
        async def run(tx: Transaction) -> Consultation:
            stamp = stamp_now()
            versions = []
            for resource in (service_request(c), task(c)):
                rtype = resource["resourceType"]
                current = await tx.read(rtype, c.id)
                if current is not None and current.source != CONSENT_SOURCE:
                    raise DataConflict(f"{rtype}/{c.id} belongs to someone else")
                if rtype == "ServiceRequest" and c.version != (current.version if current
                                                               else None):
                    raise DataConflict(f"consultation {c.id} changed since it was read")
                version = current.version + 1 if current is not None else 1
                versions.append(version)
                resource["meta"] = {"versionId": str(version), "lastUpdated": instant(stamp),
                                    "source": CONSENT_SOURCE}
                await tx.put(WriteRecord(rtype, c.id, version, stamp, orjson.dumps(resource),
                                         source=CONSENT_SOURCE, index=_index(resource, c.person)))
            await append_in_tx(tx, [self._audit(
                "consultation", c.person, "ServiceRequest", c.id,
                f"consultation {c.status}" + (" (approved)" if c.approved else ""))])
            return c.model_copy(update={"version": versions[0]})

        return await self.store.transact(run)

    # break-the-glass sessions

    async def break_glass(self, person: str | None = None, *, practitioner: str | None = None,
                          reviewed: bool | None = None) -> list[BreakGlass]:
        where = [AnyOf((TokenMatch(param, value, ""),)) for param, value in (
            ("person", person), ("practitioner", practitioner),
            ("reviewed", None if reviewed is None else str(reviewed).lower()))
            if value is not None]
        records = await self._all(SearchQuery(BREAK_GLASS, tuple(where)))
        sessions = [BreakGlass.model_validate_json(r.body) for r in records if not r.deleted]
        return sorted(sessions, key=lambda s: s.started)

    async def save_break_glass(self, s: BreakGlass) -> BreakGlass:
        async def run(tx: Transaction) -> BreakGlass:
            current = await tx.read(BREAK_GLASS, s.id)
            if current is None:
                # one window per requester: serialise openers, and hand back the
                # session a concurrent request opened first
                await tx.lock(f"{BREAK_GLASS}:{s.person}:{s.organization}:{s.practitioner}")
                query = SearchQuery(BREAK_GLASS, (AnyOf((TokenMatch("person", s.person, ""),)),))
                for _, id_ in await tx.search_keys(query, 1000):
                    rec = await tx.read(BREAK_GLASS, id_)
                    if rec is None or rec.deleted:
                        continue
                    other = BreakGlass.model_validate_json(rec.body)
                    if same_requester(other, s) and other.active(s.started):
                        return other
            version = current.version + 1 if current is not None else 1
            index = IndexEntries(token=[
                ("person", "", s.person), ("organization", "", s.organization),
                ("practitioner", "", s.practitioner or ""),
                ("reviewed", "", str(s.reviewed).lower())])
            await tx.put(WriteRecord(BREAK_GLASS, s.id, version, stamp_now(),
                                     s.model_dump_json().encode(), source=INTERNAL_SOURCE,
                                     index=index))
            await append_in_tx(tx, [self._audit(
                "break-the-glass", s.person, BREAK_GLASS, s.id,
                "break-the-glass reviewed" if s.reviewed else "break-the-glass opened",
                organization=s.organization, practitioner=s.practitioner,
                purpose_of_use="ETREAT", reason=s.reason)])
            return s

        return await self.store.transact(run)
