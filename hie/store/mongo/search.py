"""Running searches on the ``resources`` collection, inside or outside a transaction.

:class:`~hie.store.mongo.store.MongoStore` and its transactions share these
functions; a transaction passes its session, the store passes ``None`` (reads
then use the collection's majority read concern).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hie.store.base import StoreError
from hie.store.mongo.compile import compile_query, sort_stages
from hie.store.mongo.documents import RESOURCE_FIELDS, to_stored
from hie.store.query import AnyOf, ChainMatch, Cursor, Page, SearchQuery

# A chained condition is resolved to the ids of its targets first; beyond this
# many targets the query is refused rather than building an unbounded $in.
CHAIN_TARGET_LIMIT = 10_000

COUNTER_ID = "seq"


class ChainTooBroad(StoreError):
    """A chained condition matches more target resources than the store resolves."""


@dataclass(frozen=True, slots=True)
class Collections:
    """The back end's collections, with their read and write concerns set."""

    resources: Any
    versions: Any
    counters: Any
    locks: Any


async def resolve_chains(
    cols: Collections, query: SearchQuery, session: Any = None
) -> dict[ChainMatch, list[str]]:
    """Return the visible target ids of every chained condition of ``query``.

    The inner query carries the outer query's restriction, so a chain can
    never select resources through a target the caller may not see.
    """
    resolved: dict[ChainMatch, list[str]] = {}
    for any_of in query.where:
        for term in any_of.terms:
            if not isinstance(term, ChainMatch) or term in resolved:
                continue
            inner = SearchQuery(term.target_type, where=(AnyOf((term.inner,)),),
                                restriction=query.restriction)
            flt = compile_query(inner, await resolve_chains(cols, inner, session))
            docs = await cols.resources.find(
                flt, {"_id": 0, "id": 1}, session=session
            ).limit(CHAIN_TARGET_LIMIT + 1).to_list()
            if len(docs) > CHAIN_TARGET_LIMIT:
                raise ChainTooBroad(
                    f"the chained parameter {term.param!r} matches more than "
                    f"{CHAIN_TARGET_LIMIT} {term.target_type} resources; narrow it")
            resolved[term] = [d["id"] for d in docs]
    return resolved


async def max_seq(cols: Collections, session: Any = None) -> int:
    """The highest ``seq`` assigned (the counter; 0 before the first create)."""
    doc = await cols.counters.find_one({"_id": COUNTER_ID}, session=session)
    return int(doc["n"]) if doc else 0


async def search(
    cols: Collections, query: SearchQuery, *, limit: int, cursor: Cursor | None,
    session: Any = None,
) -> Page:
    """One page of ``query`` (see :meth:`hie.store.base.Store.search`)."""
    if limit <= 0:
        return Page(resources=[], next=None)
    flt = compile_query(query, await resolve_chains(cols, query, session))
    if not query.sort:
        return await _keyset_page(cols, flt, limit, cursor or Cursor(), session)
    return await _sorted_page(cols, query, flt, limit, cursor or Cursor(), session)


async def _keyset_page(
    cols: Collections, flt: dict[str, Any], limit: int, cursor: Cursor, session: Any
) -> Page:
    """Default order: ``seq`` ascending, the next page starts after the last seq.

    No snapshot is needed: new resources get higher seqs and land on later pages.
    """
    if cursor.after_seq:
        flt = {**flt, "seq": {"$gt": cursor.after_seq}}
    docs = await cols.resources.find(flt, RESOURCE_FIELDS, session=session).sort(
        [("seq", 1)]).limit(limit + 1).to_list()
    records = [to_stored(d) for d in docs[:limit]]
    nxt = Cursor(after_seq=records[-1].seq) if len(docs) > limit else None
    return Page(resources=records, next=nxt)


async def _sorted_page(
    cols: Collections, query: SearchQuery, flt: dict[str, Any], limit: int, cursor: Cursor,
    session: Any,
) -> Page:
    """``_sort`` order: an offset among resources created up to the snapshot."""
    snapshot = cursor.snapshot_seq
    if snapshot is None:
        snapshot = await max_seq(cols, session)
    pipeline = [
        {"$match": {**flt, "seq": {"$lte": snapshot}}},
        *sort_stages(query.sort),
        {"$skip": max(cursor.offset, 0)},
        {"$limit": limit + 1},
        {"$project": RESOURCE_FIELDS},
    ]
    docs = await (await cols.resources.aggregate(pipeline, session=session)).to_list()
    records = [to_stored(d) for d in docs[:limit]]
    nxt = None
    if len(docs) > limit:
        nxt = Cursor(offset=max(cursor.offset, 0) + limit, snapshot_seq=snapshot)
    return Page(resources=records, next=nxt, snapshot_seq=snapshot)


async def count(cols: Collections, query: SearchQuery) -> int:
    """How many current, non-deleted resources match ``query`` (outside transactions)."""
    flt = compile_query(query, await resolve_chains(cols, query))
    return int(await cols.resources.count_documents(flt))

