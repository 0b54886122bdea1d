"""The consent gate on the exchange's read paths: from a request's patients to
the grants in its restriction.

Cross-hospital visibility is always per patient. A read names its patients —
the Patient or the patient-compartment references a search filters on, the
patient of ``$everything``, the patient a resource read by id belongs to — and
for each, the consent service decides what the caller may see of that
regional person's records at other hospitals. Each permit becomes a
:class:`~hie.store.query.Grant`, so the decision is part of the store query:
paging, totals and includes cannot reveal anything else. A search that names
no patient sees only the caller's own records.

Only a doctor's token (a practitioner with a purpose of use) reaches other
hospitals' records: a hospital system's token sees what its hospital wrote,
so that a person is always accountable for a cross-hospital read.

No decision is cached across requests, so a withdrawal takes effect on the
very next request — including a ``next`` link handed out before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from hie.context import RequestContext, organization_source
from hie.dicomweb.records import DICOM_TYPES
from hie.identity.service import load_link, load_person
from hie.store.base import Store
from hie.store.query import Grant, IdMatch, ReferenceMatch, Restriction, SearchQuery
from schemas.consent import DecisionRequest, DecisionResponse
from schemas.search_parameters import PATIENT_COMPARTMENT

if TYPE_CHECKING:  # the client protocol lives in the consent service package
    from consent.client import ConsentClient

#: Every reference parameter that puts a resource in a patient's compartment.
COMPARTMENT_PARAMS: frozenset[str] = frozenset(
    p for params in PATIENT_COMPARTMENT.values() for p in params)
#: Most patients one request is decided for (a search naming more sees only the
#: caller's own records for the rest).
MAX_PATIENTS = 20


@dataclass(slots=True)
class Gate:
    """The consent decisions of one request, and the restriction they make."""

    ctx: RequestContext
    store: Store
    client: ConsentClient | None
    base: Restriction
    decisions: dict[str, DecisionResponse] = field(default_factory=dict)  # by person
    members: dict[str, list[str]] = field(default_factory=dict)  # person -> Patient ids
    patients: dict[str, None] = field(default_factory=dict)  # context Patient refs
    restriction: Restriction | None = None

    @property
    def may_cross(self) -> bool:
        """Whether this caller can be granted other hospitals' records at all."""
        return (self.client is not None and bool(self.ctx.practitioner)
                and bool(self.ctx.purpose_of_use))

    async def open_for(self, patient_ids: Iterable[str]) -> Restriction:
        """The restriction for a request about these Patients (by id)."""
        for pid in list(dict.fromkeys(patient_ids))[:MAX_PATIENTS]:
            self.patients[f"Patient/{pid}"] = None
            if not self.may_cross or any(pid in m for m in self.members.values()):
                continue  # no crossing, or a Patient of a person already decided
            found = await _person_of(self.store, pid)
            if found is None or found[0] in self.decisions:
                continue
            person, self.members[person] = found
            self.decisions[person] = await self._decide(person)
        self.restriction = await self._compile()
        return self.restriction

    async def _decide(self, person: str) -> DecisionResponse:
        assert self.client is not None
        ctx = self.ctx
        return await self.client.decide(DecisionRequest(
            organization=ctx.organization, practitioner=ctx.practitioner,
            purpose=ctx.purpose_of_use or "TREAT", reason=getattr(ctx, "reason", None),
            consultation=getattr(ctx, "consultation", None), person=person))

    async def _compile(self) -> Restriction:
        grants: list[Grant] = []
        own = self.ctx.organization
        for person, decision in self.decisions.items():
            if not decision.permit:
                continue
            sources = frozenset(organization_source(o) for o in decision.visible_organizations
                                if o != own)
            if not sources:
                continue
            patients = frozenset(self.members[person])
            grants.append(Grant(
                patients=patients, sources=sources, params=COMPARTMENT_PARAMS,
                hidden_labels=frozenset(decision.hidden_labels),
                types=_with_dicom(decision.resource_types)))
        return Restriction(sources=self.base.sources, hidden_labels=self.base.hidden_labels,
                           grants=tuple(grants))

    @property
    def masks(self) -> frozenset[str]:
        """Mask obligations of every permit (applied to other hospitals' records)."""
        return frozenset(m for d in self.decisions.values() if d.permit for m in d.masks)

    @property
    def break_the_glass(self) -> bool:
        return any(d.break_the_glass and d.permit for d in self.decisions.values())

    @property
    def denied(self) -> bool:
        """Whether a decision for another hospital's records said no."""
        return any(not d.permit for d in self.decisions.values())

    @property
    def refusal(self) -> str | None:
        """Why other hospitals' records were withheld, for the audit record: the
        consent service could not be asked, or the patient's consent says no."""
        refused = [d for d in self.decisions.values() if not d.permit]
        if not refused:
            return None
        if any(b.code == "consent-unavailable" for d in refused for b in d.basis):
            return "consent service unavailable"
        return "consent refused"


def _with_dicom(types: Iterable[str] | None) -> frozenset[str] | None:
    """Resource types a decision opens; an opened ImagingStudy opens the
    study's DICOM records too."""
    if types is None:
        return None
    opened = frozenset(types)
    return opened | DICOM_TYPES if "ImagingStudy" in opened else opened


async def _person_of(store: Store, patient_id: str) -> tuple[str, list[str]] | None:
    """The regional person of a Patient and the person's Patients, in two reads."""
    link = await load_link(store, patient_id)
    if link is None:
        return None
    person = await load_person(store, link.person_id)
    if person is None:
        return link.person_id, [patient_id]
    return person.id, sorted(person.members)


def patients_of_query(query: SearchQuery) -> list[str]:
    """The Patient ids a search filters on (its patient context)."""
    out: list[str] = []
    for group in query.where:
        for term in group.terms:
            if isinstance(term, ReferenceMatch) and term.param in COMPARTMENT_PARAMS \
                    and term.target_type in ("Patient", None):
                out.append(term.target_id)
            elif isinstance(term, IdMatch) and query.resource_type == "Patient":
                out += term.ids
    return out


def mask_contacts(body: bytes, masks: frozenset[str]) -> bytes:
    """A body without the contact details a consent asked to mask (``telecom``,
    ``address``: on the resource and its contacts)."""
    drop = {m for m in masks if m in ("telecom", "address")}
    if not drop or not any(m.encode() in body for m in drop):
        return body
    resource = orjson.loads(body)
    for key in drop:
        resource.pop(key, None)
        for contact in resource.get("contact") or []:
            if isinstance(contact, dict):
                contact.pop(key, None)
    return orjson.dumps(resource)
