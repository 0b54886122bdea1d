"""Grants on ``versions`` documents: which resources belong to the granted patients.

A grant opens a record of one of its patients (see
:class:`~hie.store.query.Grant`). A ``resources`` document answers that itself
(its ``_id`` and its embedded ``ref`` entries, see
:func:`~hie.store.mongo.compile.membership_filter`), but ``versions``
documents carry no index entries. So ``read_version`` and ``history`` first
ask the ``resources`` collection, per grant, for the ``seq`` of the resources
in scope that belong to its patients, and then filter versions by ``seq``
(:func:`~hie.store.mongo.compile.restriction_filter` with ``members``).

The rule this gives: an old version belongs to the patients its resource
*currently* points at (the only index entries kept — the same rule as the
SQLite back end); its own source and labels decide the rest. A deleted
resource points at nobody, so its versions are opened by no grant (a
Patient's are: it belongs by its id).
"""

from __future__ import annotations

from typing import Any

from hie.store.base import StoreError
from hie.store.mongo.compile import Filter, may_open, membership_filter, restriction_filter
from hie.store.mongo.search import Collections
from hie.store.query import Restriction

#: Most resources one grant may open in one history (or version) read; beyond
#: that the read is refused rather than sending an unbounded ``$in``.
GRANT_MEMBER_LIMIT = 100_000


class GrantTooBroad(StoreError):
    """A grant's patients own more records in scope than a history resolves."""


async def grant_members(cols: Collections, restriction: Restriction | None, scope: Filter,
                        resource_type: str | None,
                        session: Any = None) -> list[list[int]] | None:
    """Per grant of ``restriction``, the ``seq`` of the resources matching
    ``scope`` (of ``resource_type`` when known) that belong to its patients;
    None when no grant can matter (no grants, or the base rule shows all)."""
    if restriction is None or not restriction.grants or restriction_filter(restriction) == {}:
        return None
    members: list[list[int]] = []
    done: dict[tuple[Any, ...], list[int]] = {}
    for grant in restriction.grants:
        member = membership_filter(grant, resource_type)
        if (member is None or not grant.sources or not grant.patients
                or not may_open(grant, resource_type)):
            members.append([])
            continue
        key = (grant.patients, grant.params, grant.types)
        if key not in done:
            clauses = [c for c in (scope, member) if c]
            if grant.types is not None and resource_type is None:
                clauses.append({"type": {"$in": sorted(grant.types)}})
            docs = await cols.resources.find(
                {"$and": clauses}, {"_id": 0, "seq": 1}, session=session
            ).limit(GRANT_MEMBER_LIMIT + 1).to_list()
            if len(docs) > GRANT_MEMBER_LIMIT:
                raise GrantTooBroad(
                    f"a grant opens more than {GRANT_MEMBER_LIMIT} records in this history; "
                    "ask for the history of one resource type or resource")
            done[key] = [int(d["seq"]) for d in docs]
        members.append(done[key])
    return members
