"""The write engine: every create, update and delete — alone or in a Bundle.

Writes are planned, then executed in one store transaction:

1. *Plan* (outside the transaction, so the CPU work does not hold the store's
   write lock): resolve conditional creates, updates, deletes and conditional
   references by searching; assign ids; rewrite ``urn:uuid:`` references; set
   ``id`` and ``meta``; serialise; extract the search indexes. Every read the plan
   relied on is recorded as a *check* (this search returned these keys, that
   resource was at that version).
2. *Execute* (in the transaction): re-run the checks — a conditional check first
   takes the store lock on its condition, which serialises identical conditional
   writes — and, when they all still hold, write the planned versions. When one
   no longer holds (a parallel write won the race), plan again inside the
   transaction, where nothing can change under us, and write that plan.

So eight identical conditional creates sent at once leave one resource: the
first commits; the others find their check stale, re-plan, and match it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson

from consent.labels import apply_labels
from hie.context import RequestContext
from hie.fhir import tenancy
from hie.fhir.outcome import FhirError, Issue, bad_request, precondition_failed
from hie.fhir.provenance import provenance_record
from hie.fhir.search.extract import extract
from hie.fhir.search.parse import SearchError, parse_search
from hie.store.base import Store, StoredResource, Transaction, WriteRecord
from hie.store.query import Restriction, SearchQuery
from schemas.resource_types import READ_ONLY_TYPES


def stamp_now() -> str:
    """Return the current time in the store's fixed-width UTC form."""
    return stamp_of(datetime.now(UTC))


def stamp_of(when: datetime) -> str:
    """Return a UTC time in the store's fixed-width form."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")


def instant(stamp: str) -> str:
    """Return a store timestamp as a FHIR ``instant``."""
    return stamp + "Z"


def new_id() -> str:
    """Return a fresh server-assigned logical id."""
    return str(uuid.uuid4())


@dataclass(slots=True)
class WriteEntry:
    """One write: ``POST`` (create, optionally ``If-None-Exist``), ``PUT`` (update
    by id or by condition) or ``DELETE`` (by id or by condition)."""

    method: str
    resource_type: str
    id: str | None = None
    condition: list[tuple[str, str]] | None = None
    resource: dict[str, Any] | None = None
    if_match: int | None = None
    full_url: str | None = None
    where: str = ""  # location prefix for error messages, e.g. "Bundle.entry[2]"


@dataclass(slots=True)
class EntryResult:
    """What happened to one entry."""

    status: int
    resource_type: str
    id: str | None = None
    version: int | None = None
    last_updated: str | None = None
    body: bytes | None = None  # the resource as stored (for Prefer: return=representation)
    message: str | None = None


class Reader(Protocol):
    async def read(self, resource_type: str, id: str) -> StoredResource | None: ...

    async def search_keys(self, query: SearchQuery, limit: int) -> list[tuple[str, str]]: ...


class StoreReader:
    """A :class:`Reader` over the store outside any transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def read(self, resource_type: str, id: str) -> StoredResource | None:
        return await self.store.read(resource_type, id)

    async def search_keys(self, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
        page = await self.store.search(query, limit=limit)
        return [(r.resource_type, r.id) for r in page.resources]


@dataclass(slots=True)
class _SearchCheck:
    key: str
    query: SearchQuery
    keys: list[tuple[str, str]]


@dataclass(slots=True)
class _VersionCheck:
    resource_type: str
    id: str
    version: int  # 0: absent


@dataclass(slots=True)
class _Plan:
    records: list[WriteRecord] = field(default_factory=list)
    results: list[EntryResult] = field(default_factory=list)
    searches: list[_SearchCheck] = field(default_factory=list)
    versions: list[_VersionCheck] = field(default_factory=list)
    recreated: set[tuple[str, str]] = field(default_factory=set)


class _Stale(Exception):
    """A check of the plan no longer holds."""


class WriteHook(Protocol):
    """Work that must commit atomically with a write (identity links, the audit
    record of the write). Runs inside the write's transaction after its
    versions are put; it may run more than once when the transaction retries,
    so it must only act through ``tx``."""

    async def __call__(self, tx: Transaction, ctx: RequestContext,
                      records: list[WriteRecord]) -> None: ...


async def execute(store: Store, ctx: RequestContext, entries: list[WriteEntry], *,
                  hooks: Sequence[WriteHook] = ()) -> list[EntryResult]:
    """Apply ``entries`` atomically; return one result per entry, in order.

    Any error (validation, failed precondition, conflict) raises
    :class:`FhirError` and nothing is written.
    """
    for e in entries:
        if e.resource_type in READ_ONLY_TYPES:
            raise FhirError(405, Issue("not-supported",
                                       f"{e.resource_type} is written by the exchange only",
                                       [e.where] if e.where else []))
    stamp = stamp_now()
    # Planning rewrites resources in place; a re-plan starts from the originals.
    originals = [orjson.dumps(e.resource) if e.resource is not None else None for e in entries]
    plan = await _make_plan(StoreReader(store), ctx, entries, stamp)

    async def run(tx: Transaction) -> list[EntryResult]:
        nonlocal plan
        try:
            await _verify(tx, plan)
        except _Stale:
            fresh = [dataclasses.replace(e, resource=orjson.loads(o) if o is not None else None)
                     for e, o in zip(entries, originals, strict=True)]
            plan = await _make_plan(tx, ctx, fresh, stamp)
        await tx.put_many(plan.records)  # one call: the store may batch them
        for hook in hooks:
            await hook(tx, ctx, plan.records)
        return plan.results

    return await store.transact(run)


async def execute_in(tx: Transaction, ctx: RequestContext, entries: list[WriteEntry], *,
                     stamp: str, hooks: Sequence[WriteHook] = ()) -> list[EntryResult]:
    """Apply ``entries`` inside a transaction the caller holds.

    For writes whose content depends on what the transaction read (a study's
    ImagingStudy, built from its DICOM records): the plan is made inside the
    transaction, where nothing can change under it."""
    plan = await _make_plan(tx, ctx, entries, stamp)
    await tx.put_many(plan.records)
    for hook in hooks:
        await hook(tx, ctx, plan.records)
    return plan.results


async def _verify(tx: Transaction, plan: _Plan) -> None:
    for check in plan.searches:
        await tx.lock(check.key)
        if await tx.search_keys(check.query, 2) != check.keys:
            raise _Stale
    for v in plan.versions:
        current = await tx.read(v.resource_type, v.id)
        if (current.version if current else 0) != v.version:
            raise _Stale


# -- planning ----------------------------------------------------------------

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2}


async def _make_plan(reader: Reader, ctx: RequestContext, entries: list[WriteEntry],
                     stamp: str) -> _Plan:
    plan = _Plan()
    plan.results = [EntryResult(0, e.resource_type) for e in entries]
    targets: dict[int, tuple[str, int, bool]] = {}  # entry index -> (id, new version, is_write)
    urls: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()

    # Resolve what each entry targets, in the processing order FHIR gives.
    for i in sorted(range(len(entries)), key=lambda k: _ORDER[entries[k].method]):
        entry = entries[i]
        if entry.resource is not None:
            tenancy.check_source(entry.resource, ctx, entry.where)
        id_, version, write = await _resolve_target(reader, ctx, plan, entry)
        if write:
            key = (entry.resource_type, id_)
            if key in seen:
                raise bad_request(
                    f"{entry.resource_type}/{id_} is written by more than one entry",
                    entry.where or None)
            seen.add(key)
        targets[i] = (id_, version, write)
        if entry.full_url:
            urls[entry.full_url] = f"{entry.resource_type}/{id_}"

    # Rewrite references, then build the new versions.
    for i, entry in enumerate(entries):
        id_, version, write = targets[i]
        result = plan.results[i]
        result.id = id_
        if entry.method == "DELETE":
            result.status = 204 if not write else 200
            if write:
                result.version, result.last_updated = version, stamp
                plan.records.append(WriteRecord(entry.resource_type, id_, version, stamp, b"",
                                                deleted=True, source=ctx.source))
            continue
        if not write:  # a conditional create that matched: nothing to write
            result.status, result.version = 200, version
            continue
        resource = entry.resource
        assert resource is not None
        if urls or _has_special_refs(resource):
            await _rewrite_references(reader, ctx, plan, resource, urls, entry.where)
        apply_labels(resource)  # sensitivity labels derived from the codes
        body = _finish(resource, id_, version, stamp, ctx)
        plan.records.append(WriteRecord(entry.resource_type, id_, version, stamp, body,
                                        source=ctx.source, index=extract(resource)))
        recreated = (entry.resource_type, id_) in plan.recreated
        result.status = 201 if version == 1 or recreated else 200
        result.version, result.last_updated, result.body = version, stamp, body
    prov = provenance_record(plan.records, ctx, stamp)
    if prov is not None:
        plan.records.append(prov)
    return plan


async def _resolve_target(reader: Reader, ctx: RequestContext, plan: _Plan,
                          entry: WriteEntry) -> tuple[str, int, bool]:
    """Return (id, version to write, whether anything is written)."""
    rtype = entry.resource_type
    if entry.method == "POST":
        if entry.condition:
            keys = await _match(reader, ctx, plan, rtype, entry.condition, entry.where)
            if len(keys) > 1:
                raise precondition_failed(
                    f"If-None-Exist matched {len(keys)} {rtype} resources; "
                    "it must match at most one")
            if keys:
                current = await reader.read(rtype, keys[0][1])
                return keys[0][1], current.version if current else 1, False
        return new_id(), 1, True

    if entry.method == "PUT":
        resource = entry.resource or {}
        body_id = resource.get("id")
        if entry.condition is not None:
            keys = await _match(reader, ctx, plan, rtype, entry.condition, entry.where)
            if len(keys) > 1:
                raise precondition_failed(
                    f"The conditional update matched {len(keys)} {rtype} resources")
            if keys:
                if body_id is not None and body_id != keys[0][1]:
                    raise bad_request(f"The resource id {body_id!r} does not match the "
                                      f"resource the condition found ({keys[0][1]})",
                                      entry.where or None)
                id_ = keys[0][1]
            elif body_id is None:  # server-assigned: no namespace to check
                return new_id(), 1, True
            else:
                id_ = body_id
        else:
            assert entry.id is not None
            if body_id is None:
                raise bad_request("An update must carry the resource id", f"{rtype}.id")
            if body_id != entry.id:
                raise bad_request(
                    f"The resource id {body_id!r} does not match the URL ({entry.id})",
                    f"{rtype}.id")
            id_ = entry.id
        return id_, await _next_version(reader, ctx, plan, entry, id_), True

    # DELETE
    if entry.condition is not None:
        keys = await _match(reader, ctx, plan, rtype, entry.condition, entry.where)
        if len(keys) > 1:
            raise precondition_failed(
                f"The conditional delete matched {len(keys)} {rtype} resources")
        if not keys:
            return "", 0, False
        id_ = keys[0][1]
    else:
        assert entry.id is not None
        id_ = entry.id
    current = await reader.read(rtype, id_)
    plan.versions.append(_VersionCheck(rtype, id_, current.version if current else 0))
    if current is None or current.deleted or not tenancy.owns(current, ctx):
        if entry.if_match is not None:
            raise precondition_failed(f"{rtype}/{id_} does not exist")
        return id_, 0, False
    _check_if_match(entry, current)
    return id_, current.version + 1, True


async def _next_version(reader: Reader, ctx: RequestContext, plan: _Plan, entry: WriteEntry,
                        id_: str) -> int:
    current = await reader.read(entry.resource_type, id_)
    plan.versions.append(_VersionCheck(entry.resource_type, id_, current.version if current else 0))
    tenancy.check_writable(current, ctx, entry.resource_type, id_)
    if current is None:
        if entry.if_match is not None:
            raise precondition_failed(f"{entry.resource_type}/{id_} does not exist")
        return 1
    _check_if_match(entry, current)
    if current.deleted:  # bringing a deleted resource back is answered 201
        plan.recreated.add((entry.resource_type, id_))
    return current.version + 1


def _check_if_match(entry: WriteEntry, current: StoredResource) -> None:
    if entry.if_match is not None and entry.if_match != current.version:
        raise precondition_failed(
            f"{entry.resource_type}/{current.id} is at version {current.version}, "
            f"not {entry.if_match} (If-Match)")


async def _match(reader: Reader, ctx: RequestContext, plan: _Plan, rtype: str,
                 condition: list[tuple[str, str]], where: str) -> list[tuple[str, str]]:
    """Search for a condition among the caller's own records."""
    if not condition:
        raise bad_request("A conditional request needs search parameters", where or None)
    try:
        parsed = parse_search(rtype, condition, strict=True)
    except SearchError as exc:
        raise bad_request(f"Invalid condition: {exc}", where or None) from None
    query = SearchQuery(rtype, parsed.query.where,
                        restriction=Restriction(sources=frozenset({ctx.source})))
    keys = await reader.search_keys(query, 2)
    lock_key = f"{rtype}?" + "&".join(f"{k}={v}" for k, v in sorted(condition))
    plan.searches.append(_SearchCheck(lock_key, query, keys))
    return keys


def conditional_params(query_string: str) -> list[tuple[str, str]]:
    """Parse ``identifier=sys|val&…`` (an ``If-None-Exist`` value or URL query)."""
    return parse_qsl(query_string.lstrip("?"), keep_blank_values=True)


# -- references ---------------------------------------------------------------

def _has_special_refs(resource: dict[str, Any]) -> bool:
    """Whether any reference is conditional or a ``urn:`` that must be resolved."""
    return any("?" in ref or ref.startswith(("urn:uuid:", "urn:oid:"))
               for ref in _iter_refs(resource))


def _iter_refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                yield v
            elif isinstance(v, dict | list):
                yield from _iter_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _iter_refs(v)


async def _rewrite_references(reader: Reader, ctx: RequestContext, plan: _Plan,
                              resource: dict[str, Any], urls: dict[str, str], where: str) -> None:
    """Point ``urn:uuid:`` references at the ids assigned in this Bundle and
    resolve conditional references (``Patient?identifier=…``) to one resource."""
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "reference" and isinstance(v, str):
                    if v in urls:
                        node[k] = urls[v]
                    elif v.startswith(("urn:uuid:", "urn:oid:")):
                        raise bad_request(f"Reference {v} names no entry of this Bundle",
                                          where or None)
                    elif "?" in v and "/" not in v.split("?", 1)[0]:
                        node[k] = await _resolve_conditional_ref(reader, ctx, plan, v, where)
                elif isinstance(v, dict | list):
                    stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)


async def _resolve_conditional_ref(reader: Reader, ctx: RequestContext, plan: _Plan,
                                   ref: str, where: str) -> str:
    rtype, _, qs = ref.partition("?")
    keys = await _match(reader, ctx, plan, rtype, conditional_params(qs), where)
    if len(keys) != 1:
        raise FhirError(412 if keys else 404, Issue(
            "not-found" if not keys else "multiple-matches",
            f"Conditional reference {ref} matched {len(keys)} resources; it must match one",
            [where] if where else []))
    return f"{keys[0][0]}/{keys[0][1]}"


def _finish(resource: dict[str, Any], id_: str, version: int, stamp: str,
            ctx: RequestContext) -> bytes:
    """Set id and meta (version, time, source) and serialise."""
    resource["id"] = id_
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant(stamp)
    meta["source"] = ctx.source
    resource["meta"] = meta
    return orjson.dumps(resource)
