"""Type-level search: one page of matches, its includes, links and total.

Every store call carries the caller's :class:`~hie.store.query.Restriction`, so
matches, ``_include``/``_revinclude`` and totals can only contain what the caller
may see.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import orjson

from hie.fhir.bundles import bundle_bytes, decode_cursor, encode_cursor, link_url, search_entry
from hie.fhir.outcome import bad_request
from hie.fhir.search.extract import reference_values
from hie.fhir.search.parse import Include, ParsedSearch, SearchError, parse_search
from hie.fhir.subsetting import subset
from hie.gate.enforce import patients_of_query
from hie.identity.service import follow_links
from hie.store.base import Store, StoredResource
from hie.store.query import AnyOf, ReferenceMatch, Restriction, SearchQuery

CURSOR_PARAM = "_cursor"
#: Most resources one ``_revinclude`` adds to a page.
MAX_REVINCLUDE = 5000


@dataclass(frozen=True, slots=True)
class SearchOptions:
    base: str  # the FHIR base URL
    default_count: int
    max_count: int
    strict: bool = False
    restriction: Restriction | None = None
    #: Told of every resource returned (for the audit record of the access).
    seen: Callable[[Iterable[StoredResource]], None] | None = None
    #: The body of a stored resource as this caller may see it (masking).
    render: Callable[[StoredResource], bytes] | None = None
    #: The restriction for a read about these Patients (the consent gate);
    #: ``None``: ``restriction`` as it is.
    widen: Callable[[list[str]], Awaitable[Restriction]] | None = None

    async def restriction_for(self, patient_ids: list[str]) -> Restriction | None:
        """The restriction of a read whose patient context is ``patient_ids``."""
        if self.widen is None:
            return self.restriction
        return await self.widen(patient_ids)

    def body(self, rec: StoredResource) -> bytes:
        """``rec``'s body for this caller."""
        return self.render(rec) if self.render is not None else rec.body


def parse(resource_type: str, params: list[tuple[str, str]],
          options: SearchOptions) -> ParsedSearch:
    """Parse search parameters (without our ``_cursor``) or raise a 400."""
    try:
        return parse_search(resource_type, params, strict=options.strict, base=options.base)
    except SearchError as exc:
        raise bad_request(str(exc), getattr(exc, "param", None)) from None


async def search(store: Store, *, resource_type: str, params: list[tuple[str, str]],
                 options: SearchOptions) -> bytes:
    """Run a search and return the searchset Bundle as JSON bytes."""
    cursor_token = next((v for k, v in params if k == CURSOR_PARAM), None)
    params = [(k, v) for k, v in params if k != CURSOR_PARAM]
    parsed = parse(resource_type, params, options)
    query = SearchQuery(resource_type, parsed.query.where, parsed.query.sort)
    # A patient's records at every hospital: Patient/x also means the Patients
    # linked to the same regional person; what of them the caller may see is
    # the consent gate's decision for those patients.
    query = await follow_links(store, query)
    restriction = await options.restriction_for(patients_of_query(query))
    query = SearchQuery(resource_type, query.where, query.sort, restriction=restriction)
    self_link = link_url(options.base, resource_type, parsed.used)

    if parsed.summary == "count":
        total = await store.count(query)
        return bundle_bytes("searchset", links=[("self", self_link)], entries=[], total=total)

    cursor = None
    if cursor_token is not None:
        cursor = decode_cursor(cursor_token)
        if cursor is None:
            raise bad_request("The paging cursor is not valid", CURSOR_PARAM)
    count = parsed.count if parsed.count is not None else options.default_count
    count = min(count, options.max_count)
    if count == 0:
        total = await store.count(query) if parsed.total != "none" else None
        return bundle_bytes("searchset", links=[("self", self_link)], entries=[], total=total)

    page = await store.search(query, limit=count, cursor=cursor)
    matches: list[StoredResource] = page.resources

    total: int | None = None
    if parsed.total == "accurate":
        total = await store.count(query)
    elif parsed.total != "none" and cursor is None and page.next is None:
        total = len(matches)

    entries = [search_entry(options.base, r, "match",
                            subset(options.body(r), r.resource_type, summary=parsed.summary,
                                   elements=parsed.elements))
               for r in matches]
    if options.seen is not None:
        options.seen(matches)
    if parsed.includes or parsed.revincludes:
        included = await _includes(store, matches, parsed, restriction)
        entries += [search_entry(options.base, r, "include", options.body(r))
                    for r in included]
        if options.seen is not None:
            options.seen(included)

    links = [("self", self_link)]
    if page.next is not None:
        used = [(k, v) for k, v in parsed.used if k != "_count"]
        links.append(("next", link_url(options.base, resource_type,
                                       [*used, ("_count", str(count)),
                                        (CURSOR_PARAM, encode_cursor(page.next))])))
    return bundle_bytes("searchset", links=links, entries=entries, total=total)


async def _includes(store: Store, matches: list[StoredResource], parsed: ParsedSearch,
                    restriction: Restriction | None) -> list[StoredResource]:
    """Resources named by ``_include`` and ``_revinclude``, without duplicates."""
    seen = {(r.resource_type, r.id) for r in matches}
    out: list[StoredResource] = []
    if parsed.includes:
        bodies = [(r.resource_type, orjson.loads(r.body)) for r in matches]
        wanted: list[tuple[str, str]] = []
        for inc in parsed.includes:
            for rtype, resource in bodies:
                if rtype != inc.source_type:
                    continue
                for ttype, tid in reference_values(resource, inc.param):
                    key = (ttype, tid)
                    if ttype and (inc.target_type is None or ttype == inc.target_type) \
                            and key not in seen:
                        seen.add(key)
                        wanted.append(key)
        if wanted:
            out += await store.read_many(wanted, restriction=restriction)
    for inc in parsed.revincludes:
        out += await _revinclude(store, matches, inc, restriction, seen)
    return out


async def _revinclude(store: Store, matches: list[StoredResource], inc: Include,
                      restriction: Restriction | None,
                      seen: set[tuple[str, str]]) -> list[StoredResource]:
    terms = tuple(ReferenceMatch(inc.param, r.id, r.resource_type) for r in matches
                  if inc.target_type is None or r.resource_type == inc.target_type)
    if not terms:
        return []
    out: list[StoredResource] = []
    for i in range(0, len(terms), 500):
        query = SearchQuery(inc.source_type, (AnyOf(terms[i:i + 500]),), restriction=restriction)
        page = await store.search(query, limit=MAX_REVINCLUDE)
        for r in page.resources:
            if (r.resource_type, r.id) not in seen:
                seen.add((r.resource_type, r.id))
                out.append(r)
    return out
