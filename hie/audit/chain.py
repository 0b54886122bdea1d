"""The hash chain: appending audit events to the store so that tampering shows.

Each event carries a strictly consecutive ``sequence`` (1, 2, 3 …), the hash of
its predecessor and its own hash::

    hash = sha256(previous_hash || canonical JSON of the event without its hash)

where the previous hash of the first event is :data:`GENESIS` and the canonical
JSON is the event with sorted keys and no whitespace (``orjson``). The event is
the whole stored ``AuditEvent`` — id, meta, every element — with only the
``hash`` member of the chain extension left out, so a change to anything a
reader sees breaks the hash.

Events live in the store as resources of type ``AuditEvent`` with the id
:func:`event_id` of their sequence, so :mod:`hie.audit.verify` can fetch them in
order by key and tell a missing one from a changed one. The chain head (last
sequence and hash) is the internal document ``_AuditHead/chain``, written in the
same transaction as the events: two appenders both write it, so the store
serialises them (SQLite's write lock; a write conflict and retry on MongoDB) and
sequence numbers can neither repeat nor skip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hie.audit.fhir import AUDIT_SOURCE, AUDIT_TYPE, CHAIN_URL, build_event, index_entries
from hie.audit.model import AuditRecord, now_stamp
from hie.context import INTERNAL_SOURCE
from hie.store.base import Store, Transaction, VersionConflict, WriteRecord
from hie.store.index import IndexEntries

HEAD_TYPE = "_AuditHead"
HEAD_ID = "chain"
#: The "previous hash" of the first event.
GENESIS = "0" * 64
#: How often :func:`append` re-runs a transaction that lost a race on the head.
APPEND_RETRIES = 20


@dataclass(frozen=True, slots=True)
class Head:
    """The end of the chain: the last sequence written and its hash."""

    sequence: int = 0
    hash: str = GENESIS
    version: int = 0  # store version of the head document (0: none yet)


def event_id(sequence: int) -> str:
    """The store id of the event with this sequence (zero-padded: sorts in order).

    >>> event_id(42)
    'hie-audit-000000000042'
    """
    return f"hie-audit-{sequence:012d}"


def canonical(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that are hashed."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def chain_hash(previous: str, event: dict[str, Any]) -> str:
    """``sha256(previous || canonical(event))`` as hex; ``event`` without its hash."""
    digest = hashlib.sha256(previous.encode("ascii"))
    digest.update(canonical(event))  # (no concatenated copy of the JSON)
    return digest.hexdigest()


def chain_fields(event: dict[str, Any]) -> tuple[int, str, str] | None:
    """(sequence, previous hash, hash) from an event's chain extension, or None."""
    for ext in event.get("extension", []) or []:
        if isinstance(ext, dict) and ext.get("url") == CHAIN_URL:
            values = {e.get("url"): e for e in ext.get("extension", []) if isinstance(e, dict)}
            try:
                seq = values["sequence"]["valueDecimal"]
                prev = values["previousHash"]["valueString"]
                own = values["hash"]["valueString"]
            except (KeyError, TypeError):
                return None
            if not isinstance(seq, int) or isinstance(seq, bool):
                return None
            return seq, str(prev), str(own)
    return None


def without_hash(event: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` whose chain extension lacks the ``hash`` member."""
    copy = dict(event)
    exts = []
    for ext in event.get("extension", []) or []:
        if isinstance(ext, dict) and ext.get("url") == CHAIN_URL:
            ext = {**ext, "extension": [e for e in ext.get("extension", [])
                                        if not (isinstance(e, dict) and e.get("url") == "hash")]}
        exts.append(ext)
    copy["extension"] = exts
    return copy


@dataclass(frozen=True, slots=True)
class Prepared:
    """What of a record's stored event does not depend on its place in the
    chain — everything after ``meta`` and the chain extension, and the index
    entries (no indexed element is chain-dependent) — built before the append
    takes the write lock (:func:`prepare`)."""

    extensions: list[dict[str, Any]]  # the record's own, after the chain's
    body: dict[str, Any]  # type, subtype, … entity, in stored order
    index: IndexEntries


def prepare(record: AuditRecord) -> Prepared:
    """The chain-independent part of ``record``'s stored event."""
    extensions: list[dict[str, Any]] = []
    body = build_event(record, {"resourceType": AUDIT_TYPE}, extensions)
    index = index_entries(body)
    del body["resourceType"]
    body.pop("extension", None)
    return Prepared(extensions, body, index)


def seal_prepared(prepared: Prepared, sequence: int, previous: str,
                  stamp: str) -> tuple[dict[str, Any], bytes, str]:
    """The stored event of a prepared record at ``sequence``: the event, its
    stored bytes and its hash.

    The event is built in its stored member order (id, meta and the chain
    extension first); the hash member is added to the chain extension once the
    rest is hashed.
    """
    links: list[dict[str, Any]] = [
        {"url": "sequence", "valueDecimal": sequence},
        {"url": "previousHash", "valueString": previous},
    ]
    event: dict[str, Any] = {
        "resourceType": AUDIT_TYPE, "id": event_id(sequence),
        "meta": {"versionId": "1", "lastUpdated": stamp + "Z", "source": AUDIT_SOURCE},
        "extension": [{"url": CHAIN_URL, "extension": links}, *prepared.extensions],
    }
    event.update(prepared.body)
    digest = chain_hash(previous, event)
    links.append({"url": "hash", "valueString": digest})
    return event, orjson.dumps(event), digest


def seal(record: AuditRecord, sequence: int, previous: str,
         stamp: str) -> tuple[dict[str, Any], bytes, str]:
    """Build the stored event for ``record`` at ``sequence``; return it, its
    stored bytes and its hash."""
    return seal_prepared(prepare(record), sequence, previous, stamp)


async def read_head(tx: Transaction | Store) -> Head:
    """The chain head as the transaction (or the store) sees it."""
    stored = await tx.read(HEAD_TYPE, HEAD_ID)
    if stored is None or stored.deleted:
        return Head()
    doc = orjson.loads(stored.body)
    return Head(int(doc["sequence"]), str(doc["hash"]), stored.version)


async def append_in_tx(tx: Transaction,
                       records: Sequence[AuditRecord | Prepared]) -> None:
    """Append ``records`` (or records already through :func:`prepare`) to the chain
    inside the caller's transaction.

    For records that must commit with a write (or not at all): call it in the
    function passed to ``store.transact``, after the write's ``put``s. The head
    document is written here too, so concurrent appenders serialise on it.
    """
    if not records:
        return
    head = await read_head(tx)
    stamp = now_stamp()
    sequence, previous = head.sequence, head.hash
    puts: list[WriteRecord] = []
    for record in records:
        sequence += 1
        prepared = record if isinstance(record, Prepared) else prepare(record)
        _, body, previous = seal_prepared(prepared, sequence, previous, stamp)
        puts.append(WriteRecord(AUDIT_TYPE, event_id(sequence), 1, stamp, body,
                                source=AUDIT_SOURCE, index=prepared.index))
    puts.append(WriteRecord(HEAD_TYPE, HEAD_ID, head.version + 1, stamp,
                            orjson.dumps({"sequence": sequence, "hash": previous}),
                            source=INTERNAL_SOURCE, index=IndexEntries()))
    await tx.put_many(puts)  # one trip to the store for the events and the head


async def append(store: Store, records: Sequence[AuditRecord | Prepared]) -> None:
    """Append ``records`` in a transaction of their own.

    Retries when another appender moved the head first (a ``VersionConflict``
    a back end did not already retry).
    """
    if not records:
        return

    async def run(tx: Transaction) -> None:
        await append_in_tx(tx, records)

    for attempt in range(APPEND_RETRIES):
        try:
            await store.transact(run)
            return
        except VersionConflict:
            if attempt + 1 == APPEND_RETRIES:
                raise
