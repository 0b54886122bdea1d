"""The identity index's internal documents and the records it hands out.

Three internal document types live in the store beside the FHIR resources
(internal types start with ``_``, so no FHIR route can name them):

* ``_Person/{person id}`` — one regional person: its member Patients (id,
  source organisation, keyed hash of their resident ID number). Indexed by the
  *trusted* resident hashes (token ``resident``), so a deterministic match is one
  index lookup. A person merged into another keeps ``mergedInto`` as a forward
  pointer (consents and portal accounts may still name the old id).
* ``_PatientLink/{patient id}`` — which person a Patient belongs to, how it got
  there (method, score, reasons) and its normalised demographics; indexed by
  its blocking keys (token ``block``) so candidates are an index lookup.
* ``_LinkReview/{id}`` — a doubtful match waiting for an administrator,
  indexed by ``status``, ``patient`` and candidate ``person``.

Resident ID numbers never appear in these documents or their indexes: only
their keyed hash (:func:`hie.identity.resident_id.keyed_hash`).

Internal documents carry no ``source``, so a caller's restricted view of the
store (which lists the sources it may see) can never return them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from hie.identity.matching import Demographics
from hie.store.base import StoredResource, WriteRecord
from hie.store.index import IndexEntries

PERSON = "_Person"
LINK = "_PatientLink"
REVIEW = "_LinkReview"

#: How a Patient came to its person.
Method = Literal["resident-id", "score", "new", "admin", "merge"]
#: What the resident ID number of a Patient was worth.
ResidentStatus = Literal["valid", "invalid", "absent", "conflict"]


def stamp_now() -> str:
    """The current time in the store's fixed-width UTC form."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _body(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


@dataclass(slots=True)
class Member:
    """One Patient of a person."""

    source: str | None
    resident: str | None = None  # keyed hash of a valid number
    trusted: bool = True  # False: an administrator split it off; not indexed


@dataclass(slots=True)
class PersonDoc:
    id: str
    version: int = 0  # 0: not stored yet
    members: dict[str, Member] = field(default_factory=dict)
    created: str = ""
    merged_into: str | None = None

    def resident_keys(self) -> set[str]:
        """The trusted resident hashes: the numbers that identify this person."""
        return {m.resident for m in self.members.values() if m.resident and m.trusted}

    def record(self, stamp: str) -> WriteRecord:
        """The next version (a tombstone when nothing is left of the person)."""
        if not self.members and self.merged_into is None:
            return WriteRecord(PERSON, self.id, self.version + 1, stamp, b"", deleted=True)
        body = {"resourceType": PERSON, "id": self.id, "created": self.created or stamp,
                "members": {pid: {"source": m.source, "resident": m.resident,
                                  "trusted": m.trusted} for pid, m in self.members.items()}}
        if self.merged_into:
            body["mergedInto"] = self.merged_into
        index = IndexEntries(token=[("resident", "", k) for k in sorted(self.resident_keys())])
        return WriteRecord(PERSON, self.id, self.version + 1, stamp, _body(body), index=index)

    @classmethod
    def load(cls, stored: StoredResource) -> PersonDoc | None:
        if stored.deleted:
            return None
        data = orjson.loads(stored.body)
        members = {pid: Member(m.get("source"), m.get("resident"), m.get("trusted", True))
                   for pid, m in data.get("members", {}).items()}
        return cls(stored.id, stored.version, members, data.get("created", ""),
                   data.get("mergedInto"))


@dataclass(slots=True)
class LinkDoc:
    patient_id: str
    person_id: str
    source: str | None
    method: Method
    demographics: Demographics
    blocking: list[str]
    resident: str | None = None
    resident_status: ResidentStatus = "absent"
    score: float | None = None
    reasons: list[str] = field(default_factory=list)
    pinned: bool = False  # an administrator (or a merge) decided: never re-matched
    replaced_by: str | None = None  # merged into this Patient (HL7 A40)
    version: int = 0
    updated: str = ""

    def record(self, stamp: str) -> WriteRecord:
        body: dict[str, Any] = {
            "resourceType": LINK, "id": self.patient_id, "person": self.person_id,
            "source": self.source, "method": self.method, "residentStatus": self.resident_status,
            "demographics": self.demographics.to_json(), "blocking": self.blocking,
            "reasons": self.reasons, "pinned": self.pinned, "updated": stamp}
        if self.resident:
            body["resident"] = self.resident
        if self.score is not None:
            body["score"] = self.score
        if self.replaced_by:
            body["replacedBy"] = self.replaced_by
        index = IndexEntries(token=[("block", "", k) for k in self.blocking])
        index.token.append(("person", "", self.person_id))
        return WriteRecord(LINK, self.patient_id, self.version + 1, stamp, _body(body),
                           index=index)

    def tombstone(self, stamp: str) -> WriteRecord:
        return WriteRecord(LINK, self.patient_id, self.version + 1, stamp, b"", deleted=True)

    @classmethod
    def load(cls, stored: StoredResource) -> LinkDoc | None:
        if stored.deleted:
            return None
        d = orjson.loads(stored.body)
        return cls(patient_id=stored.id, person_id=d["person"], source=d.get("source"),
                   method=d["method"], demographics=Demographics.from_json(d["demographics"]),
                   blocking=list(d.get("blocking", [])), resident=d.get("resident"),
                   resident_status=d.get("residentStatus", "absent"), score=d.get("score"),
                   reasons=list(d.get("reasons", [])), pinned=bool(d.get("pinned")),
                   replaced_by=d.get("replacedBy"), version=stored.version,
                   updated=d.get("updated", ""))


@dataclass(slots=True)
class Candidate:
    """A person a Patient might belong to, and why."""

    person_id: str
    patient_id: str  # the member that scored best
    score: float
    fields: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"person": self.person_id, "patient": self.patient_id, "score": self.score,
                "fields": self.fields}


@dataclass(slots=True)
class ReviewItem:
    id: str
    patient_id: str
    source: str | None
    person_id: str  # the (provisional) person the Patient was given
    candidates: list[Candidate]
    status: Literal["open", "linked", "separate", "obsolete"] = "open"
    created: str = ""
    resolved_by: str | None = None
    resolved: str | None = None
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "resourceType": REVIEW, "id": self.id, "patient": self.patient_id,
            "source": self.source, "person": self.person_id, "status": self.status,
            "created": self.created, "candidates": [c.to_json() for c in self.candidates]}
        if self.resolved_by:
            out["resolvedBy"] = self.resolved_by
            out["resolved"] = self.resolved
        return out

    def record(self, stamp: str) -> WriteRecord:
        index = IndexEntries(token=[("status", "", self.status), ("patient", "", self.patient_id)])
        index.token += [("person", "", c.person_id) for c in self.candidates]
        return WriteRecord(REVIEW, self.id, self.version + 1, stamp, _body(self.to_json()),
                           index=index)

    @classmethod
    def load(cls, stored: StoredResource) -> ReviewItem | None:
        if stored.deleted:
            return None
        d = orjson.loads(stored.body)
        cands = [Candidate(c["person"], c["patient"], c["score"], c["fields"])
                 for c in d.get("candidates", [])]
        return cls(stored.id, d["patient"], d.get("source"), d["person"], cands,
                   d.get("status", "open"), d.get("created", ""), d.get("resolvedBy"),
                   d.get("resolved"), stored.version)


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """One change of the index, for the audit trail.

    ``action`` is ``link`` (a Patient joined a person), ``unlink`` (split off
    into a person of its own), ``merge`` (HL7 A40: ``patient_id`` was merged
    into ``replaced_by`` at its hospital) or ``review`` (queued for a person).
    ``actor`` is ``system`` for automatic links, else the administrator (or the
    HL7 feed) that acted. Never holds a resident ID number.
    """

    action: Literal["link", "unlink", "merge", "review"]
    patient_id: str
    person_id: str
    previous_person_id: str | None = None
    source: str | None = None
    method: str | None = None
    actor: str = "system"
    reason: str | None = None
    score: float | None = None
    replaced_by: str | None = None
    recorded: str = field(default_factory=stamp_now)

    def to_audit_record(self, *, organization: str | None = None) -> Any:
        """This event as a :class:`hie.audit.model.AuditRecord` (``interaction``
        ``link`` or ``unlink``; merges and reviews are links)."""
        from hie.audit.model import AuditRecord

        interaction = "unlink" if self.action == "unlink" else "link"
        detail = f"{self.action} by {self.method or 'n/a'}"
        if self.previous_person_id:
            detail += f" (from person {self.previous_person_id})"
        if self.replaced_by:
            detail += f"; merged into Patient/{self.replaced_by}"
        if self.reason:
            detail += f": {self.reason}"
        return AuditRecord(
            interaction=interaction, outcome="permit", organization=organization,
            client_id=None if self.actor == "system" else self.actor,
            person=self.person_id, patient_refs=(f"Patient/{self.patient_id}",),
            resource_type="Patient", resource_ids=(self.patient_id,), detail=detail,
            recorded=self.recorded)


@dataclass(frozen=True, slots=True)
class LinkResult:
    """What :func:`hie.identity.service.link_patient` decided."""

    patient_id: str
    person_id: str
    method: Method | Literal["unchanged", "kept"]
    score: float | None = None
    reasons: tuple[str, ...] = ()
    review_id: str | None = None
    events: tuple[LinkEvent, ...] = ()
