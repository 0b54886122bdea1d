"""``Patient/{id}/$everything``: the patient and every resource in the patient's
compartment, paged, with ``_since``, ``_type`` and ``_count`` and no cap on the
total.

Pages walk the compartment types in a fixed order, keyset-paged within each
type by the store sequence, so the cursor (type position, last sequence) stays
valid while data is written.
"""

from __future__ import annotations

from hie.fhir.bundles import bundle_bytes, decode_cursor, encode_cursor, link_url, search_entry
from hie.fhir.outcome import bad_request
from hie.fhir.searching import SearchOptions
from hie.fhir.service import instant_param, read
from hie.identity.service import linked_patient_ids
from hie.store.base import Store
from hie.store.index import DATE_MAX
from hie.store.query import (
    AnyOf,
    Cursor,
    IdMatch,
    LastUpdatedMatch,
    ReferenceMatch,
    Restriction,
    SearchQuery,
)
from schemas.resource_types import NON_CLINICAL_TYPES
from schemas.search_parameters import PATIENT_COMPARTMENT


def compartment_types() -> list[str]:
    """``Patient`` first, then every clinical type with a patient-compartment
    parameter (the audit trail is not part of the record)."""
    return ["Patient"] + sorted(t for t, ps in PATIENT_COMPARTMENT.items()
                                if ps and t != "Patient" and t not in NON_CLINICAL_TYPES)


async def everything(store: Store, *, patient_id: str, params: list[tuple[str, str]],
                     options: SearchOptions) -> bytes:
    """Return one page of the patient's ``$everything`` Bundle."""
    # the patient's records at every hospital: all Patients of the same person,
    # as far as the consent gate opens them to this caller
    ids = tuple(await linked_patient_ids(store, patient_id))
    restriction = await options.restriction_for(list(ids))
    await read(store, resource_type="Patient", id=patient_id, restriction=restriction)
    values = dict(params)
    types = compartment_types()
    if "_type" in values:
        wanted = {t.strip() for t in values["_type"].split(",") if t.strip()}
        unknown = wanted - set(types)
        if unknown:
            raise bad_request(f"_type names types outside the Patient compartment: "
                              f"{', '.join(sorted(unknown))}", "_type")
        types = [t for t in types if t in wanted]
    since_cond: tuple[AnyOf, ...] = ()
    if "_since" in values:
        since_cond = (AnyOf((LastUpdatedMatch("ge", instant_param(values["_since"], "_since"),
                                              DATE_MAX),)),)
    count = options.default_count
    if "_count" in values:
        if not values["_count"].isdigit() or int(values["_count"]) == 0:
            raise bad_request("_count must be a positive integer", "_count")
        count = min(int(values["_count"]), options.max_count)
    cursor = Cursor()
    if "_cursor" in values:
        decoded = decode_cursor(values["_cursor"])
        if decoded is None:
            raise bad_request("The paging cursor is not valid", "_cursor")
        cursor = decoded

    queries = [_query(t, ids, since_cond, restriction) for t in types]
    # The total is counted for the first page only (a dozen counts over the
    # whole compartment); later pages leave Bundle.total out, as FHIR allows,
    # rather than carry a count the caller might no longer be allowed to see.
    total: int | None = None
    if "_cursor" not in values:
        total = 0
        for q in queries:
            total += await store.count(q)

    entries: list[bytes] = []
    position, after = cursor.offset, cursor.after_seq
    next_cursor: Cursor | None = None
    while position < len(queries) and len(entries) < count:
        page = await store.search(queries[position], limit=count - len(entries),
                                  cursor=Cursor(after_seq=after))
        entries += [search_entry(options.base, r, "match", options.body(r))
                    for r in page.resources]
        if options.seen is not None:
            options.seen(page.resources)
        if page.next is not None:
            after = page.next.after_seq
        else:
            position, after = position + 1, 0
    if position < len(queries):
        next_cursor = Cursor(after_seq=after, offset=position)

    kept = [(k, v) for k, v in params if k in ("_since", "_type")]
    path = f"Patient/{patient_id}/$everything"
    links = [("self", link_url(options.base, path, kept))]
    if next_cursor is not None:
        paging = [("_count", str(count)), ("_cursor", encode_cursor(next_cursor))]
        links.append(("next", link_url(options.base, path, [*kept, *paging])))
    return bundle_bytes("searchset", links=links, entries=entries, total=total)


def _query(rtype: str, patient_ids: tuple[str, ...], extra: tuple[AnyOf, ...],
           restriction: Restriction | None) -> SearchQuery:
    if rtype == "Patient":
        where = (AnyOf((IdMatch(patient_ids),)), *extra)
    else:
        refs = tuple(ReferenceMatch(p, pid, "Patient") for p in PATIENT_COMPARTMENT[rtype]
                     for pid in patient_ids)
        where = (AnyOf(refs), *extra)
    return SearchQuery(rtype, where, restriction=restriction)

