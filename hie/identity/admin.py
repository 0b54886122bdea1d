"""Administrative changes of the identity index: link, unlink, HL7 merge, review.

Each function runs inside a transaction the caller owns (so the caller can
append the returned :class:`~hie.identity.model.LinkEvent`s to the audit chain
in the same transaction) and *pins* the Patients it decides about: automatic
matching never moves a pinned Patient again.

Linking two Patients merges their persons: if A is B, then everyone already
known to be A is B too. The absorbed person keeps a ``mergedInto`` pointer.
"""

from __future__ import annotations

from typing import Literal

from hie.identity.model import REVIEW, LinkDoc, LinkEvent, Member, PersonDoc, ReviewItem, stamp_now
from hie.identity.service import (
    IdentityError,
    IdentityNotFound,
    Reader,
    close_reviews,
    load_link,
    load_person,
    new_id,
    token_query,
)
from hie.store.base import Store, Transaction
from hie.store.query import AnyOf, Cursor, Restriction, SearchQuery, TokenMatch


async def _require_link(tx: Reader, patient_id: str) -> LinkDoc:
    link = await load_link(tx, patient_id)
    if link is None:
        raise IdentityNotFound(f"Patient/{patient_id} is not linked to any person")
    return link


async def _require_person(tx: Reader, person_id: str) -> PersonDoc:
    person = await load_person(tx, person_id)
    if person is None:
        raise IdentityNotFound(f"person {person_id} does not exist")
    return person


async def link_patients(tx: Transaction, *, patient_id: str, target_patient_id: str,
                        actor: str, reason: str | None = None,
                        method: Literal["admin", "merge"] = "admin") -> list[LinkEvent]:
    """Declare ``patient_id`` the same person as ``target_patient_id``: the
    former's person is merged into the latter's."""
    link = await _require_link(tx, patient_id)
    target = await _require_link(tx, target_patient_id)
    stamp = stamp_now()
    into = await _require_person(tx, target.person_id)
    absorbed = await _require_person(tx, link.person_id)
    events: list[LinkEvent] = []
    if absorbed.id != into.id:
        for pid, member in absorbed.members.items():
            into.members[pid] = member
            moved = await _require_link(tx, pid)
            moved.person_id = into.id
            if pid == patient_id:
                moved.method, moved.pinned = method, True
            await tx.put(moved.record(stamp))
            events.append(LinkEvent("link", pid, into.id, absorbed.id, member.source,
                                    moved.method, actor=actor, reason=reason, recorded=stamp))
        absorbed.members, absorbed.merged_into = {}, into.id
        await tx.put(absorbed.record(stamp))
        await tx.put(into.record(stamp))
    else:
        link.method, link.pinned = method, True
        await tx.put(link.record(stamp))
    await close_reviews(tx, patient_id=patient_id, status="linked", actor=actor, stamp=stamp)
    return events


async def unlink_patient(tx: Transaction, *, patient_id: str, actor: str,
                         reason: str | None = None) -> list[LinkEvent]:
    """Split a Patient off into a person of its own (and keep it there)."""
    link = await _require_link(tx, patient_id)
    old = await _require_person(tx, link.person_id)
    stamp = stamp_now()
    if set(old.members) == {patient_id}:
        raise IdentityError(f"Patient/{patient_id} is the only Patient of its person")
    member = old.members.pop(patient_id)
    # Its resident ID number stays with the person it was split from: matching
    # on it must keep finding that person, not this one.
    shares_number = member.resident is not None and member.resident in old.resident_keys()
    person = PersonDoc(new_id(), created=stamp, members={
        patient_id: Member(member.source, member.resident, trusted=not shares_number)})
    link.person_id, link.method, link.pinned = person.id, "admin", True
    if shares_number:
        link.reasons = [*link.reasons, "split off by an administrator; its resident ID "
                        "number stays with the person it was split from"]
    await tx.put(old.record(stamp))
    await tx.put(person.record(stamp))
    await tx.put(link.record(stamp))
    await close_reviews(tx, patient_id=patient_id, status="separate", actor=actor, stamp=stamp)
    return [LinkEvent("unlink", patient_id, person.id, old.id, member.source, "admin",
                      actor=actor, reason=reason, recorded=stamp)]


async def merge(tx: Transaction, *, source: str, prior_patient_id: str,
                surviving_patient_id: str, actor: str = "hl7v2:A40",
                reason: str | None = None) -> list[LinkEvent]:
    """HL7 A40 "``prior`` is merged into ``surviving`` at hospital ``source``":
    both become one person and ``prior`` is marked as replaced."""
    prior = await _require_link(tx, prior_patient_id)
    surviving = await _require_link(tx, surviving_patient_id)
    if prior.source != source or surviving.source != source:
        raise IdentityError("a hospital can only merge its own Patients")
    events = await link_patients(tx, patient_id=prior_patient_id,
                                 target_patient_id=surviving_patient_id, actor=actor,
                                 reason=reason, method="merge")
    prior = await _require_link(tx, prior_patient_id)
    prior.replaced_by = surviving_patient_id
    prior.method, prior.pinned = "merge", True
    stamp = stamp_now()
    await tx.put(prior.record(stamp))
    events.append(LinkEvent("merge", prior_patient_id, prior.person_id, None, source, "merge",
                            actor=actor, reason=reason, replaced_by=surviving_patient_id,
                            recorded=stamp))
    return events


async def find_patient_id(reader: Transaction, *, source: str, system: str,
                          value: str) -> str | None:
    """The id of the Patient a hospital knows by ``system|value`` (its MRN), as
    an HL7 feed names Patients."""
    query = SearchQuery("Patient", (AnyOf((TokenMatch("identifier", value, system),)),),
                        restriction=Restriction(sources=frozenset({source})))
    keys = await reader.search_keys(query, 2)
    if len(keys) > 1:
        raise IdentityError("the identifier names more than one Patient of that hospital")
    return keys[0][1] if keys else None


# -- the review queue -----------------------------------------------------------

async def list_reviews(store: Store, *, status: str = "open", limit: int = 50,
                       after: int = 0) -> tuple[list[ReviewItem], int | None]:
    """One page of review items (oldest first) and where the next page starts."""
    page = await store.search(token_query(REVIEW, "status", status), limit=limit,
                              cursor=Cursor(after_seq=after))
    items = [item for r in page.resources if (item := ReviewItem.load(r)) is not None]
    return items, page.next.after_seq if page.next is not None else None


async def get_review(reader: Reader, review_id: str) -> ReviewItem:
    stored = await reader.read(REVIEW, review_id)
    item = ReviewItem.load(stored) if stored is not None else None
    if item is None:
        raise IdentityNotFound(f"review item {review_id} does not exist")
    return item


async def resolve_review(tx: Transaction, *, review_id: str,
                         decision: Literal["link", "separate"], actor: str,
                         person_id: str | None = None) -> list[LinkEvent]:
    """Decide a review item: link the Patient to a candidate person (the best
    one unless ``person_id`` names another) or keep it separate."""
    item = await get_review(tx, review_id)
    if item.status != "open":
        raise IdentityError(f"review item {review_id} is already {item.status}")
    if decision == "link":
        chosen = next((c for c in item.candidates
                       if person_id is None or c.person_id == person_id), None)
        if chosen is None:
            raise IdentityError(f"person {person_id} is not a candidate of this review item")
        return await link_patients(tx, patient_id=item.patient_id,
                                   target_patient_id=chosen.patient_id, actor=actor,
                                   reason=f"review {review_id}")
    link = await _require_link(tx, item.patient_id)
    stamp = stamp_now()
    link.pinned = True
    await tx.put(link.record(stamp))
    await close_reviews(tx, patient_id=item.patient_id, status="separate", actor=actor,
                        stamp=stamp)
    return [LinkEvent("link", item.patient_id, link.person_id, None, link.source, "admin",
                      actor=actor, reason=f"kept separate after review {review_id}",
                      recorded=stamp)]
