"""Checking the hash chain: is every audit event still there, unchanged, in order?

:func:`verify` reads the head, then fetches the events by id in pages of
sequence numbers (bounded memory, whatever the length) and checks, for each
sequence ``n`` from 1 to the head's:

1. the event exists and is not a tombstone — otherwise it was **removed**;
2. its body parses and carries sequence ``n`` — otherwise it was **changed**
   (or moved: an event found under another position);
3. ``sha256(its previous hash || its canonical JSON)`` equals its stored hash —
   otherwise it was **changed**;
4. its previous hash equals the hash of event ``n - 1`` — otherwise what came
   before it was **removed** or replaced;

and finally that the last event's hash is the head's. The first failure is
reported; nothing after it can be trusted anyway.

What a hash chain cannot show on its own: someone able to rewrite the store
may cut the tail and rewrite the head, or re-hash everything. Recording the
head (``sequence`` and ``hash`` in the result) somewhere else — a ticket, a
signed e-mail, a second system — and passing it back as ``anchor`` closes that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from hie.audit.chain import (
    GENESIS,
    HEAD_ID,
    HEAD_TYPE,
    chain_fields,
    chain_hash,
    event_id,
    read_head,
    without_hash,
)
from hie.audit.fhir import AUDIT_TYPE
from hie.store.base import Store

Problem = Literal["changed", "removed", "head"]

#: Events fetched per store round trip.
PAGE = 500


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :func:`verify`: ``intact``, or the first broken record."""

    intact: bool
    count: int  # events checked and found good
    head_sequence: int
    head_hash: str
    problem: Problem | None = None
    sequence: int | None = None  # the first record that fails
    id: str | None = None
    message: str = ""
    body: bytes | None = field(default=None, repr=False)  # what is stored there, if anything

    def describe(self) -> str:
        """One line for people."""
        if self.intact:
            return (f"audit chain intact: {self.count} records, head {self.head_sequence} "
                    f"{self.head_hash}")
        where = f"record {self.sequence} ({AUDIT_TYPE}/{self.id})" if self.id else "the head"
        return f"audit chain BROKEN at {where}: {self.problem}: {self.message}"


async def verify(store: Store, *, page: int = PAGE,
                 anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Walk the chain from the first event to the head; see the module docstring.

    ``anchor`` is a ``(sequence, hash)`` recorded earlier: the event with that
    sequence must still exist with that hash.
    """
    head = await read_head(store)
    head_stored = await store.read(HEAD_TYPE, HEAD_ID)
    previous, checked = GENESIS, 0

    def broken(problem: Problem, seq: int | None, message: str,
               body: bytes | None = None) -> VerifyResult:
        return VerifyResult(False, checked, head.sequence, head.hash, problem, seq,
                            event_id(seq) if seq is not None else None, message, body)

    if head_stored is None:
        # No head: fine for an empty store, a removed head when events exist.
        first = await store.read(AUDIT_TYPE, event_id(1))
        if first is not None:
            return broken("head", None, "the chain head document is missing")
    if anchor is not None and anchor[0] > head.sequence:
        return broken("head", None, f"the head is at {head.sequence}, before the anchor "
                      f"{anchor[0]}: events after it were removed")

    for start in range(1, head.sequence + 1, page):
        stop = min(start + page, head.sequence + 1)
        found = await store.read_many([(AUDIT_TYPE, event_id(n)) for n in range(start, stop)])
        by_id = {r.id: r for r in found}
        for seq in range(start, stop):
            stored = by_id.get(event_id(seq))
            if stored is None or stored.deleted:
                return broken("removed", seq, "the record is missing from the store")
            try:
                event: Any = orjson.loads(stored.body)
            except orjson.JSONDecodeError:
                return broken("changed", seq, "the stored body is not valid JSON", stored.body)
            fields = chain_fields(event) if isinstance(event, dict) else None
            if fields is None:
                return broken("changed", seq, "the chain extension is missing or malformed",
                              stored.body)
            own_seq, prev, own_hash = fields
            if chain_hash(prev, without_hash(event)) != own_hash:
                return broken("changed", seq, "the content does not match its hash",
                              stored.body)
            if own_seq != seq:
                return broken("changed", seq, f"the record found here carries sequence "
                              f"{own_seq}: records were moved", stored.body)
            if prev != previous:
                return broken("removed", seq, "its previous hash is not the hash of record "
                              f"{seq - 1}: a record before it was removed or replaced",
                              stored.body)
            if anchor is not None and seq == anchor[0] and own_hash != anchor[1]:
                return broken("changed", seq, "the hash differs from the anchor",
                              stored.body)
            previous = own_hash
            checked += 1
    if previous != head.hash:
        return broken("head", None, "the head's hash is not the last record's hash")
    # A later append commits its events and the head together, so a newer head
    # explains an event after ours; an unchanged one means the head was rewound.
    if (await store.read(AUDIT_TYPE, event_id(head.sequence + 1)) is not None
            and (await read_head(store)).sequence <= head.sequence):
        return broken("head", None, f"record {head.sequence + 1} exists after the head: "
                          "the head was rewound")
    return VerifyResult(True, checked, head.sequence, head.hash)


def result_json(result: VerifyResult) -> dict[str, Any]:
    """The result as JSON for the CLI and an admin route (the body decoded when
    it is JSON, else shown as text)."""
    out: dict[str, Any] = {"intact": result.intact, "count": result.count,
                           "head": {"sequence": result.head_sequence, "hash": result.head_hash}}
    if not result.intact:
        out |= {"problem": result.problem, "sequence": result.sequence, "id": result.id,
                "message": result.message}
        if result.body is not None:
            try:
                out["record"] = orjson.loads(result.body)
            except orjson.JSONDecodeError:
                out["record"] = result.body.decode("utf-8", "replace")
    return out
