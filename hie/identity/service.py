"""Linking each pushed Patient to a regional person, and following the links.

:func:`link_patient` runs inside the transaction that writes the Patient, so a
Patient is never stored without its link (and a failed write leaves no link
behind). The decision, in order:

1. a *pinned* link (an administrator or an HL7 merge decided) is kept;
2. a valid resident ID number (checksum verified, 15 digits normalised, birth
   date and sex agreeing with the Patient) that a person already carries links
   to that person at once;
3. a Patient already linked stays where it is (updates do not churn links);
4. otherwise the candidates sharing a blocking key are scored: at or above
   ``auto_link`` the Patient joins the best person — unless that person's own
   resident ID differs, or the same hospital already has a record of that
   person (a hospital merges its own duplicates; we do not guess) — between
   ``review`` and ``auto_link`` it gets a provisional person of its own and a
   review item; below ``review`` it simply gets a new person.

Every candidate lookup is an index query on the internal documents of
:mod:`hie.identity.model`; nothing is scanned.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from hie.identity import resident_id
from hie.identity.keys import identity_key
from hie.identity.matching import (
    DEFAULT_POLICY,
    Demographics,
    MatchPolicy,
    blocking_keys,
    demographics,
    score,
)
from hie.identity.model import (
    LINK,
    PERSON,
    REVIEW,
    Candidate,
    LinkDoc,
    LinkEvent,
    LinkResult,
    Member,
    PersonDoc,
    ResidentStatus,
    ReviewItem,
    stamp_now,
)
from hie.store.base import StoredResource, Transaction
from hie.store.query import AnyOf, Condition, ReferenceMatch, SearchQuery, TokenMatch

#: Most review candidates kept on one review item.
MAX_REVIEW_CANDIDATES = 5
#: Most ``mergedInto`` hops followed (a loop would be a bug; never spin on it).
MAX_FORWARDS = 16


class Reader(Protocol):
    """What following links needs: a :class:`~hie.store.base.Store` (unrestricted)
    or a :class:`~hie.store.base.Transaction`."""

    async def read(self, resource_type: str, id: str) -> StoredResource | None: ...


class IdentityError(Exception):
    """An administrative request that cannot be carried out."""

    status = 409


class IdentityNotFound(IdentityError):
    status = 404


def new_id() -> str:
    return str(uuid.uuid4())


def token_query(resource_type: str, param: str, *codes: str) -> SearchQuery:
    """Internal documents with any of these token codes (system ``""``)."""
    return SearchQuery(resource_type,
                       (AnyOf(tuple(TokenMatch(param, c, "") for c in codes)),))


@dataclass(frozen=True, slots=True)
class Resident:
    """What a Patient's resident ID number is worth for linking."""

    key: str | None
    status: ResidentStatus
    reasons: tuple[str, ...] = ()


def resident_of(patient: dict[str, Any], *, system: str, key: bytes) -> Resident:
    """The keyed hash of the Patient's resident ID number, if it may be used.

    Not used (with the reason recorded): a number that fails validation, two
    different numbers, or a number whose birth date or sex contradicts the
    Patient — typically a newborn registered under a parent's number.
    """
    values = [i["value"] for i in patient.get("identifier", []) or []
              if isinstance(i, dict) and i.get("system") == system
              and isinstance(i.get("value"), str)]
    if not values:
        return Resident(None, "absent")
    reasons: list[str] = []
    found: dict[str, resident_id.ResidentId] = {}
    for value in values:
        try:
            rid = resident_id.parse(value)
        except resident_id.ResidentIdError as exc:
            reasons.append(f"resident ID number not used for linking: {exc}")
            continue
        if len(value.strip()) == 15:
            reasons.append("15-digit resident ID number normalised to 18 characters")
        found[rid.number] = rid
    if len(found) > 1:
        reasons.append("the Patient carries different resident ID numbers; none is used")
        return Resident(None, "conflict", tuple(reasons))
    if not found:
        return Resident(None, "invalid", tuple(reasons))
    rid = next(iter(found.values()))
    birth = patient.get("birthDate")
    if isinstance(birth, str) and len(birth) >= 10 and birth[:10] != rid.birth_date.isoformat():
        reasons.append("the birth date in the resident ID number differs from the Patient's "
                       "birthDate (a parent's number?); not used for linking")
        return Resident(None, "conflict", tuple(reasons))
    if patient.get("gender") in ("male", "female") and patient["gender"] != rid.gender:
        reasons.append("the sex in the resident ID number differs from the Patient's gender; "
                       "not used for linking")
        return Resident(None, "conflict", tuple(reasons))
    return Resident(resident_id.keyed_hash(rid.number, key), "valid", tuple(reasons))


# -- reading the internal documents -------------------------------------------

async def load_link(reader: Reader, patient_id: str) -> LinkDoc | None:
    stored = await reader.read(LINK, patient_id)
    return LinkDoc.load(stored) if stored is not None else None


async def load_person(reader: Reader, person_id: str) -> PersonDoc | None:
    """The person, following ``mergedInto`` to the one that absorbed it."""
    for _ in range(MAX_FORWARDS):
        stored = await reader.read(PERSON, person_id)
        doc = PersonDoc.load(stored) if stored is not None else None
        if doc is None or doc.merged_into is None:
            return doc
        person_id = doc.merged_into
    raise IdentityError("person forwarding does not end")  # pragma: no cover


async def person_id_of(reader: Reader, patient_id: str) -> str | None:
    """The regional person of a Patient (None: not linked)."""
    link = await load_link(reader, patient_id)
    if link is None:
        return None
    person = await load_person(reader, link.person_id)
    return person.id if person is not None else link.person_id


async def linked_patient_ids(reader: Reader, patient_id: str) -> list[str]:
    """Every Patient id of the same person, ``patient_id`` first.

    ``reader`` must be the unrestricted store (or a transaction): the links are
    internal documents; what the caller may see is filtered where the records
    are read.
    """
    stored = await reader.read(LINK, patient_id)
    if stored is None or stored.deleted:
        return [patient_id]
    person = await load_person(reader, orjson.loads(stored.body)["person"])
    if person is None:
        return [patient_id]
    return [patient_id, *sorted(p for p in person.members if p != patient_id)]


async def patient_ids_of_person(reader: Reader, person_id: str) -> list[str]:
    """The member Patients of a person (following merges)."""
    person = await load_person(reader, person_id)
    return sorted(person.members) if person is not None else []


async def follow_links(reader: Reader, query: SearchQuery) -> SearchQuery:
    """``query`` with every reference to a Patient widened to all Patients of
    the same person (``subject=Patient/x`` → ``subject=Patient/x,Patient/y``)."""
    groups: list[AnyOf] = []
    cache: dict[str, list[str]] = {}
    for group in query.where:
        terms: list[Condition] = []
        for term in group.terms:
            if isinstance(term, ReferenceMatch) and term.target_type in ("Patient", None):
                if term.target_id not in cache:
                    cache[term.target_id] = await linked_patient_ids(reader, term.target_id)
                terms += [ReferenceMatch(term.param, pid, term.target_type)
                          for pid in cache[term.target_id]]
            else:
                terms.append(term)
        groups.append(AnyOf(tuple(dict.fromkeys(terms))))
    return SearchQuery(query.resource_type, tuple(groups), query.sort, query.restriction)


# -- linking ------------------------------------------------------------------

async def link_patient(tx: Transaction, *, patient: dict[str, Any], source: str | None,
                       settings: Any, policy: MatchPolicy | None = None) -> LinkResult:
    """Link a Patient being written in ``tx`` (with its ``id`` set) to a person."""
    policy = policy or DEFAULT_POLICY
    pid = patient["id"]
    demo = demographics(patient)
    resident = resident_of(patient, system=settings.resident_id_system,
                           key=identity_key(settings))
    blocking = blocking_keys(demo)
    stored = await tx.read(LINK, pid)
    existing = LinkDoc.load(stored) if stored is not None else None
    base = stored.version if stored is not None else 0  # a tombstone counts too
    inc = _Incoming(pid, source, demo, blocking, resident, existing, base)
    if existing is not None and existing.demographics == demo \
            and existing.resident == resident.key and existing.source == source:
        return LinkResult(pid, existing.person_id, "unchanged", existing.score)

    stamp = stamp_now()
    reasons = list(resident.reasons)
    for k in blocking:  # MongoDB: serialise matching of look-alikes
        await tx.lock(f"identity:block:{k}")
    if existing is not None and existing.pinned:
        return await _place(tx, inc, existing.person_id, existing.method, existing.score,
                            reasons, stamp, kept=True)
    if resident.key is not None:
        await tx.lock(f"identity:resident:{resident.key}")
        found = await tx.search_keys(token_query(PERSON, "resident", resident.key), 2)
        if found:
            if len(found) > 1:
                reasons.append("more than one person carries this resident ID number; "
                               "linked to the first")
            person = await load_person(tx, found[0][1])
            assert person is not None
            others = [p for p, m in person.members.items() if m.source == source and p != pid]
            if others:
                reasons.append(f"the same hospital has another Patient of this person "
                               f"(Patient/{others[0]})")
            return await _place(tx, inc, person.id, "resident-id", None, reasons, stamp)
    if existing is not None:
        return await _place(tx, inc, existing.person_id, existing.method, existing.score,
                            reasons, stamp, kept=True)

    candidates = await _candidates(tx, pid, demo, blocking, resident, policy)
    best = candidates[0] if candidates else None
    if best is not None and best.score >= policy.auto_link:
        person = await load_person(tx, best.person_id)
        assert person is not None
        keys = person.resident_keys()
        if resident.key is not None and keys and resident.key not in keys:
            reasons.append("best match carries a different resident ID number: review")
        elif any(m.source == source for p, m in person.members.items() if p != pid):
            reasons.append("the same hospital already has a record of the best match: review")
        else:
            return await _place(tx, inc, person.id, "score", best.score, reasons, stamp)
    review = [c for c in candidates if c.score >= policy.review][:MAX_REVIEW_CANDIDATES]
    return await _place(tx, inc, None, "new", best.score if best else None, reasons, stamp,
                        review=review)


@dataclass(frozen=True, slots=True)
class _Incoming:
    """The Patient being linked, and its link as stored before."""

    pid: str
    source: str | None
    demo: Demographics
    blocking: list[str]
    resident: Resident
    existing: LinkDoc | None
    base_version: int  # the stored link's version (a tombstone's too), 0: none


async def _candidates(tx: Transaction, pid: str, demo: Demographics, blocking: list[str],
                      resident: Resident, policy: MatchPolicy) -> list[Candidate]:
    """People sharing a blocking key, best first, each with its best-scoring member."""
    if not blocking:
        return []
    hits = await tx.search_keys(token_query(LINK, "block", *blocking), policy.max_candidates)
    best: dict[str, Candidate] = {}
    for _, cid in hits:
        if cid == pid:
            continue
        doc = await load_link(tx, cid)
        if doc is None:
            continue
        if resident.key and doc.resident and doc.resident != resident.key:
            continue  # two valid, different numbers: two people
        s = score(demo, doc.demographics, policy)
        if s.total < policy.review:
            continue
        seen = best.get(doc.person_id)
        if seen is None or s.total > seen.score:
            best[doc.person_id] = Candidate(doc.person_id, cid, s.total, dict(s.fields))
    return sorted(best.values(), key=lambda c: (-c.score, c.person_id))


async def _place(tx: Transaction, inc: _Incoming, person_id: str | None, method: Any,
                 link_score: float | None, reasons: list[str], stamp: str, *,
                 kept: bool = False, review: list[Candidate] | None = None) -> LinkResult:
    """Write the link, the person(s) and any review item; return the result."""
    pid, source, resident, existing = inc.pid, inc.source, inc.resident, inc.existing
    previous = existing.person_id if existing is not None else None
    person = await load_person(tx, person_id) if person_id is not None else None
    if person is None:
        person = PersonDoc(new_id(), created=stamp)
    if previous is not None and previous != person.id:
        old = await load_person(tx, previous)
        if old is not None and pid in old.members:
            del old.members[pid]
            await tx.put(old.record(stamp))
    member = person.members.get(pid)
    person.members[pid] = Member(source, resident.key, member.trusted if member else True)
    await tx.put(person.record(stamp))
    link = LinkDoc(pid, person.id, source, method, inc.demo, inc.blocking, resident.key,
                   resident.status, link_score, reasons,
                   pinned=existing.pinned if existing else False,
                   replaced_by=existing.replaced_by if existing else None,
                   version=inc.base_version)
    await tx.put(link.record(stamp))
    events: list[LinkEvent] = []
    if previous != person.id:
        events.append(LinkEvent("link", pid, person.id, previous, source, method,
                                score=link_score, reason="; ".join(reasons) or None,
                                recorded=stamp))
    review_id = None
    if review:
        item = ReviewItem(new_id(), pid, source, person.id, review, created=stamp)
        await tx.put(item.record(stamp))
        review_id = item.id
        events.append(LinkEvent("review", pid, person.id, None, source, "score",
                                score=review[0].score, reason="queued for review",
                                recorded=stamp))
    return LinkResult(pid, person.id, "kept" if kept and previous == person.id else method,
                      link_score, tuple(reasons), review_id, tuple(events))


async def forget_patient(tx: Transaction, *, patient_id: str) -> list[LinkEvent]:
    """Remove a deleted Patient from its person and close its review items."""
    link = await load_link(tx, patient_id)
    if link is None:
        return []
    stamp = stamp_now()
    person = await load_person(tx, link.person_id)
    if person is not None and patient_id in person.members:
        del person.members[patient_id]
        await tx.put(person.record(stamp))
    await tx.put(link.tombstone(stamp))
    await close_reviews(tx, patient_id=patient_id, status="obsolete", actor="system",
                        stamp=stamp)
    return [LinkEvent("unlink", patient_id, link.person_id, link.person_id, link.source,
                      link.method, reason="Patient deleted", recorded=stamp)]


async def close_reviews(tx: Transaction, *, patient_id: str, status: str, actor: str,
                        stamp: str) -> None:
    """Close every open review item of a Patient."""
    keys = await tx.search_keys(token_query(REVIEW, "patient", patient_id), 100)
    for _, rid in keys:
        stored = await tx.read(REVIEW, rid)
        item = ReviewItem.load(stored) if stored is not None else None
        if item is not None and item.status == "open":
            item.status = status  # type: ignore[assignment]
            item.resolved_by, item.resolved = actor, stamp
            await tx.put(item.record(stamp))
