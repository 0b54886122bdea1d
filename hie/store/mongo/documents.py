"""The shape of the documents the MongoDB back end stores, and their conversions.

``resources`` holds the current version of each resource, self-contained (so
that it can later live on the shard of its patient):

``{_id: "Type/id", type, id, seq, version, lu, deleted, source, labels, body,
tok: [{p, s, c}], str: [{p, n, e}], dt: [{p, lo, hi}], num: [{p, v, lo, hi}],
qty: [{p, v, lo, hi, s, c}], ref: [{p, t, i}], uri: [{p, u}], sk: [{p, k, lo, hi}]}``

``lu`` is ``last_updated``; ``labels`` are the ``_security`` codes (system
ignored) that a :class:`~hie.store.query.Restriction` may hide; ``sk`` holds,
per (parameter, kind), the smallest and largest sort value (the value a
``_sort`` ascending resp. descending orders by). A tombstone keeps no index
entries.

``versions`` holds every version, tombstones included:
``{_id: "Type/id/version", type, id, version, seq, lu, deleted, source, labels, body}``.
"""

from __future__ import annotations

from typing import Any

from hie.store.base import StoredResource, WriteRecord
from hie.store.index import IndexEntries
from hie.store.mongo.compile import doc_key

Document = dict[str, Any]

SECURITY_PARAM = "_security"

# Fields a read needs; the index arrays stay on the server.
RESOURCE_FIELDS: Document = {
    "type": 1, "id": 1, "version": 1, "lu": 1, "deleted": 1, "body": 1, "source": 1, "seq": 1,
}


def version_key(resource_type: str, id: str, version: int) -> str:
    """The ``_id`` of a version document."""
    return f"{resource_type}/{id}/{version}"


def labels_of(index: IndexEntries | None) -> list[str]:
    """The security label codes of a version (its ``_security`` token codes)."""
    if index is None:
        return []
    return sorted({code for param, _system, code in index.token if param == SECURITY_PARAM})


def _sort_keys(index: IndexEntries) -> list[Document]:
    """One ``{p, k, lo, hi}`` per (param, kind): the extreme sort values."""
    values: dict[tuple[str, str], list[tuple[Any, Any]]] = {}

    def add(param: str, kind: str, lo: Any, hi: Any) -> None:
        values.setdefault((param, kind), []).append((lo, hi))

    for p, _s, c in index.token:
        add(p, "token", c, c)
    for p, n, _e in index.string:
        add(p, "string", n, n)
    for p, lo, hi in index.date:
        add(p, "date", lo, hi)
    for p, v, _lo, _hi in index.number:
        add(p, "number", v, v)
    for p, v, _lo, _hi, _s, _c in index.quantity:
        add(p, "quantity", v, v)
    for p, t, i in index.reference:
        ref = f"{t}/{i}" if t else i
        add(p, "reference", ref, ref)
    for p, u in index.uri:
        add(p, "uri", u, u)
    return [
        {"p": p, "k": k, "lo": min(lo for lo, _ in pairs), "hi": max(hi for _, hi in pairs)}
        for (p, k), pairs in values.items()
    ]


def index_fields(index: IndexEntries | None) -> Document:
    """The embedded index arrays of a current version (empty for a tombstone)."""
    if index is None:
        index = IndexEntries()
    return {
        "tok": [{"p": p, "s": s, "c": c} for p, s, c in index.token],
        "str": [{"p": p, "n": n, "e": e} for p, n, e in index.string],
        "dt": [{"p": p, "lo": lo, "hi": hi} for p, lo, hi in index.date],
        "num": [{"p": p, "v": float(v), "lo": float(lo), "hi": float(hi)}
                for p, v, lo, hi in index.number],
        "qty": [{"p": p, "v": float(v), "lo": float(lo), "hi": float(hi), "s": s, "c": c}
                for p, v, lo, hi, s, c in index.quantity],
        "ref": [{"p": p, "t": t, "i": i} for p, t, i in index.reference],
        "uri": [{"p": p, "u": u} for p, u in index.uri],
        "sk": _sort_keys(index),
    }


def version_document(record: WriteRecord, seq: int, labels: list[str]) -> Document:
    """The ``versions`` document of ``record``."""
    return {
        "_id": version_key(record.resource_type, record.id, record.version),
        "type": record.resource_type,
        "id": record.id,
        "version": record.version,
        "seq": seq,
        "lu": record.last_updated,
        "deleted": record.deleted,
        "source": record.source,
        "labels": labels,
        "body": b"" if record.deleted else record.body,
    }


def resource_document(record: WriteRecord, seq: int, labels: list[str]) -> Document:
    """The ``resources`` document of ``record`` (the new current version)."""
    doc = version_document(record, seq, labels)
    doc["_id"] = doc_key(record.resource_type, record.id)
    doc.update(index_fields(None if record.deleted else record.index))
    return doc


def to_stored(doc: Document) -> StoredResource:
    """A resource or version document as the store interface returns it."""
    return StoredResource(
        resource_type=doc["type"],
        id=doc["id"],
        version=int(doc["version"]),
        last_updated=doc["lu"],
        deleted=bool(doc["deleted"]),
        body=bytes(doc["body"]),
        source=doc.get("source"),
        seq=int(doc["seq"]),
    )
