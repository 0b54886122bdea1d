"""Compile a :class:`~hie.store.query.SearchQuery` into a MongoDB filter document.

Each condition becomes an ``$elemMatch`` on one of the index arrays embedded in
the resource document (see :mod:`hie.store.mongo.documents`), so that the
compound multikey indexes of :mod:`hie.store.mongo.indexes` answer it.

Safety: every key of a compiled filter is a constant of this module. Values
from the query (codes, strings, ids, dates) are only ever placed in value
positions, after a type check, and strings that become regular expressions are
escaped first, so a search value can never turn into a query operator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hie.store.base import StoreError
from hie.store.query import (
    AnyOf,
    ChainMatch,
    Condition,
    DateMatch,
    Grant,
    IdMatch,
    LastUpdatedMatch,
    MissingMatch,
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    Restriction,
    SearchQuery,
    SortKey,
    StringMatch,
    TokenMatch,
    UriMatch,
)

Filter = dict[str, Any]

# The embedded array holding each kind of index entry (see documents.py).
ARRAY_OF_KIND: dict[str, str] = {
    "token": "tok",
    "string": "str",
    "date": "dt",
    "number": "num",
    "quantity": "qty",
    "reference": "ref",
    "uri": "uri",
}

# Resolved chained conditions: the ids of the target resources that satisfy
# each ChainMatch's inner condition (see search.py, which resolves them first).
ChainTargets = Mapping[ChainMatch, list[str]]


class QueryValueError(StoreError):
    """A query value has a type the store does not accept (never silently used)."""


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise QueryValueError(f"expected a string search value, got {type(value).__name__}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryValueError(f"expected a numeric search value, got {type(value).__name__}")
    return float(value)


def literal_regex(value: str) -> str:
    """Return a regex matching ``value`` literally, anywhere.

    ``re.escape`` output is also literal for PCRE (MongoDB's engine): a
    backslash before a non-alphanumeric character means that character. NUL is
    spelt ``\\x00`` because MongoDB refuses patterns containing the byte.
    """
    return re.escape(_text(value)).replace("\x00", "\\x00")


def prefix_regex(value: str) -> str:
    """Return an anchored regex matching strings that start with ``value`` literally."""
    return "^" + literal_regex(value)


def _elem(kind: str, match: Filter) -> Filter:
    return {ARRAY_OF_KIND[kind]: {"$elemMatch": match}}


def _range_clause(lo: str, hi: str, prefix: str, low: object, high: object) -> Filter:
    """The date-prefix test on a stored range ``[lo, hi]`` (field names ``lo``/``hi``)."""
    slo, shi = _text(low), _text(high)
    match prefix:
        case "eq":
            return {lo: {"$gte": slo}, hi: {"$lte": shi}}
        case "ne":
            return {"$or": [{lo: {"$lt": slo}}, {hi: {"$gt": shi}}]}
        case "gt":
            return {hi: {"$gt": shi}}
        case "lt":
            return {lo: {"$lt": slo}}
        case "ge":
            return {hi: {"$gte": slo}}
        case "le":
            return {lo: {"$lte": shi}}
        case "sa":
            return {lo: {"$gt": shi}}
        case "eb":
            return {hi: {"$lt": slo}}
        case "ap":
            return {lo: {"$lte": shi}, hi: {"$gte": slo}}
    raise QueryValueError(f"unknown prefix {prefix!r}")


def _point_clause(prefix: str, value: object, low: object, high: object) -> Filter:
    """The number-prefix test on a stored point ``v``."""
    v, lo, hi = _number(value), _number(low), _number(high)
    match prefix:
        case "eq":
            return {"v": {"$gte": lo, "$lt": hi}}
        case "ne":
            return {"$or": [{"v": {"$lt": lo}}, {"v": {"$gte": hi}}]}
        case "gt" | "sa":
            return {"v": {"$gt": v}}
        case "lt" | "eb":
            return {"v": {"$lt": v}}
        case "ge":
            return {"v": {"$gte": v}}
        case "le":
            return {"v": {"$lte": v}}
        case "ap":
            margin = abs(v) * 0.1
            return {"v": {"$gte": v - margin, "$lte": v + margin}}
    raise QueryValueError(f"unknown prefix {prefix!r}")


def _token(c: TokenMatch) -> Filter:
    match: Filter = {"p": _text(c.param)}
    if c.system is not None:
        match["s"] = _text(c.system)
    if c.code is not None:
        match["c"] = _text(c.code)
    clause = _elem("token", match)
    # :not — no value matches, which includes resources with no value at all.
    return {"$nor": [clause]} if c.negate else clause


def _string(c: StringMatch) -> Filter:
    value = _text(c.value)
    match c.mode:
        case "exact":
            return _elem("string", {"p": _text(c.param), "e": value})
        case "contains":
            return _elem("string", {"p": _text(c.param), "n": {"$regex": literal_regex(value)}})
        case "start":
            return _elem("string", {"p": _text(c.param), "n": {"$regex": prefix_regex(value)}})
    raise QueryValueError(f"unknown string mode {c.mode!r}")


def _quantity(c: QuantityMatch) -> Filter:
    match: Filter = {"p": _text(c.param)}
    if c.system is not None:
        match["s"] = _text(c.system)
    if c.code is not None:
        match["c"] = _text(c.code)
    return _elem("quantity", {**match, **_point_clause(c.prefix, c.value, c.low, c.high)})


def _reference(c: ReferenceMatch) -> Filter:
    match: Filter = {"p": _text(c.param), "i": _text(c.target_id)}
    if c.target_type is not None:
        match["t"] = _text(c.target_type)
    return _elem("reference", match)


def _uri(c: UriMatch) -> Filter:
    value = _text(c.value)
    match c.mode:
        case "exact":
            return _elem("uri", {"p": _text(c.param), "u": value})
        case "below":
            return _elem("uri", {"p": _text(c.param), "u": {"$regex": prefix_regex(value)}})
        case "above":
            # The indexed uri is a prefix of value: one of value's prefixes.
            prefixes = [value[:n] for n in range(1, len(value) + 1)]
            return _elem("uri", {"p": _text(c.param), "u": {"$in": prefixes}})
    raise QueryValueError(f"unknown uri mode {c.mode!r}")


def _missing(c: MissingMatch) -> Filter:
    path = ARRAY_OF_KIND[c.kind] + ".p"
    param = _text(c.param)
    # On an array field, $ne means "no element equals".
    return {path: {"$ne": param}} if c.missing else {path: param}


def _last_updated_filter(c: LastUpdatedMatch) -> Filter:
    low, high = _text(c.low), _text(c.high)
    match c.prefix:
        case "eq" | "ap":
            return {"lu": {"$gte": low, "$lte": high}}
        case "ne":
            return {"$or": [{"lu": {"$lt": low}}, {"lu": {"$gt": high}}]}
        case "gt" | "sa":
            return {"lu": {"$gt": high}}
        case "lt" | "eb":
            return {"lu": {"$lt": low}}
        case "ge":
            return {"lu": {"$gte": low}}
        case "le":
            return {"lu": {"$lte": high}}
    raise QueryValueError(f"unknown prefix {c.prefix!r}")


def compile_condition(c: Condition, resource_type: str, chains: ChainTargets) -> Filter:
    """Return the filter of one condition on resources of ``resource_type``."""
    match c:
        case TokenMatch():
            return _token(c)
        case StringMatch():
            return _string(c)
        case DateMatch():
            return _elem("date", {"p": _text(c.param),
                                  **_range_clause("lo", "hi", c.prefix, c.low, c.high)})
        case NumberMatch():
            return _elem("number", {"p": _text(c.param),
                                    **_point_clause(c.prefix, c.value, c.low, c.high)})
        case QuantityMatch():
            return _quantity(c)
        case ReferenceMatch():
            return _reference(c)
        case UriMatch():
            return _uri(c)
        case MissingMatch():
            return _missing(c)
        case IdMatch():
            return {"_id": {"$in": [doc_key(resource_type, _text(i)) for i in c.ids]}}
        case LastUpdatedMatch():
            return _last_updated_filter(c)
        case ChainMatch():
            ids = chains[c]
            return _elem("reference", {"p": _text(c.param), "t": _text(c.target_type),
                                       "i": {"$in": [_text(i) for i in ids]}})
    raise QueryValueError(f"unsupported condition {type(c).__name__}")


def _merged(terms: tuple[Condition, ...]) -> list[Condition | Filter]:
    """Fold values of one parameter that differ only in the code (token) or
    the target id (reference) into one ``$in``: a long ``_revinclude`` or
    ``code=a,b,c`` OR stays one index scan with point bounds."""
    codes: dict[tuple[str, str | None], list[str]] = {}
    targets: dict[tuple[str, str | None], list[str]] = {}
    rest: list[Condition | Filter] = []
    for term in terms:
        if isinstance(term, TokenMatch) and not term.negate and term.code is not None:
            codes.setdefault((term.param, term.system), []).append(_text(term.code))
        elif isinstance(term, ReferenceMatch):
            targets.setdefault((term.param, term.target_type), []).append(_text(term.target_id))
        else:
            rest.append(term)
    merged: list[Condition | Filter] = []
    for (param, system), values in codes.items():
        match: Filter = {"p": _text(param)}
        if system is not None:
            match["s"] = _text(system)
        match["c"] = values[0] if len(values) == 1 else {"$in": sorted(set(values))}
        merged.append(_elem("token", match))
    for (param, target_type), values in targets.items():
        match = {"p": _text(param),
                 "i": values[0] if len(values) == 1 else {"$in": sorted(set(values))}}
        if target_type is not None:
            match["t"] = _text(target_type)
        merged.append(_elem("reference", match))
    return merged + rest


def compile_any_of(any_of: AnyOf, resource_type: str, chains: ChainTargets) -> Filter:
    """OR of the terms (a single term needs no ``$or``)."""
    terms = [t if isinstance(t, dict) else compile_condition(t, resource_type, chains)
             for t in _merged(any_of.terms)]
    if not terms:
        # An empty disjunction is false: nothing matches.
        return {"_id": {"$in": []}}
    return terms[0] if len(terms) == 1 else {"$or": terms}


# -- the caller's restriction ----------------------------------------------

PATIENT = "Patient"

# Matches nothing (a restriction nothing passes); ``source`` keeps it clear of
# the ``_id`` a read puts beside it.
NOTHING: Filter = {"source": {"$in": []}}


def restriction_filter(restriction: Restriction | None, resource_type: str | None = None, *,
                       members: list[list[int]] | None = None) -> Filter:
    """The caller's restriction: the base rule OR any grant (see
    :class:`~hie.store.query.Restriction`), as top-level keys to add to a filter.

    Without grants this is ``{source: {$in}, labels: {$nin}}``; with grants an
    ``$or`` of the base clause and one clause per grant (:func:`grant_filter`).
    ``resource_type``, when every document filtered has that type, resolves
    the grants' type tests here. On ``resources`` documents a grant's patients
    are matched in the document itself; ``versions`` documents carry no index
    entries, so for them pass ``members``: per grant, the ``seq`` of the
    resources that belong to its patients (:func:`hie.store.mongo.visibility.
    grant_members`).
    """
    if restriction is None:
        return {}
    base = _base_filter(restriction)
    if base == {}:  # everything passes the base rule: grants add nothing
        return {}
    terms = [] if base is None else [base]
    for n, grant in enumerate(restriction.grants):
        clause = grant_filter(grant, resource_type, None if members is None else members[n])
        if clause is not None:
            terms.append(clause)
    if not terms:
        return dict(NOTHING)
    if len(terms) == 1 and terms[0] is base:
        return base
    # always an $or: a grant clause may hold _id or seq, which must not meet
    # the _id of a read or a paging bound at the top level
    return {"$or": terms}


def _base_filter(restriction: Restriction) -> Filter | None:
    """The base rule's clauses; None when nothing passes it."""
    clauses: Filter = {}
    if restriction.sources is not None:
        if not restriction.sources and restriction.grants:
            return None
        clauses["source"] = {"$in": sorted(_text(s) for s in restriction.sources)}
    if restriction.hidden_labels:
        clauses["labels"] = {"$nin": sorted(_text(s) for s in restriction.hidden_labels)}
    return clauses


def grant_filter(grant: Grant, resource_type: str | None,
                 members: list[int] | None = None) -> Filter | None:
    """``{source: {$in}, labels: {$nin}, type: {$in}?, <membership>}`` of one
    grant, or None when it cannot open a document of ``resource_type``.

    Membership on a resource document is ``$or`` of ``_id`` in the patients'
    keys (it is one of those Patients) and a ``ref`` entry whose ``p`` is a
    granted parameter pointing at ``Patient/<one of them>``; with ``members``
    it is ``seq`` in those resolved sequences instead.
    """
    if not grant.sources or not grant.patients or not may_open(grant, resource_type):
        return None
    clause: Filter = {"source": {"$in": sorted(_text(s) for s in grant.sources)}}
    if grant.hidden_labels:
        clause["labels"] = {"$nin": sorted(_text(s) for s in grant.hidden_labels)}
    if grant.types is not None and resource_type is None:
        clause["type"] = {"$in": sorted(_text(t) for t in grant.types)}
    if members is not None:
        if not members:
            return None
        clause["seq"] = {"$in": sorted(members)}
        return clause
    member = membership_filter(grant, resource_type)
    if member is None:
        return None
    clause.update(member)
    return clause


def membership_filter(grant: Grant, resource_type: str | None) -> Filter | None:
    """Resource documents (of ``resource_type`` when known) that belong to the
    grant's patients, or None when none can. Served by ``_id`` and the
    ``ref_target`` index (``ref_patient`` when the type is not known)."""
    patients = sorted(_text(p) for p in grant.patients)
    terms: list[Filter] = []
    if resource_type is None or resource_type == PATIENT:
        terms.append({"_id": {"$in": [doc_key(PATIENT, p) for p in patients]}})
    if grant.params:
        params = sorted(_text(p) for p in grant.params)
        terms.append({ARRAY_OF_KIND["reference"]: {"$elemMatch": {
            "p": params[0] if len(params) == 1 else {"$in": params},
            "i": patients[0] if len(patients) == 1 else {"$in": patients},
            "t": PATIENT}}})
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else {"$or": terms}


def may_open(grant: Grant, resource_type: str | None) -> bool:
    """Whether ``grant.types`` admit ``resource_type`` (any type when unknown)."""
    if grant.types is None:
        return True
    return bool(grant.types) and (resource_type is None or resource_type in grant.types)


def compile_query(query: SearchQuery, chains: ChainTargets | None = None) -> Filter:
    """Return the filter selecting current, non-deleted resources matching ``query``.

    ``chains`` holds the resolved target ids of every :class:`ChainMatch` in
    ``query`` (resolve them with the same restriction first).
    """
    resolved: ChainTargets = chains or {}
    flt: Filter = {"type": _text(query.resource_type), "deleted": False}
    flt.update(restriction_filter(query.restriction, query.resource_type))
    clauses = [compile_any_of(a, query.resource_type, resolved) for a in query.where]
    if clauses:
        flt["$and"] = clauses
    return flt


def doc_key(resource_type: str, id: str) -> str:
    """The ``_id`` of a resource document."""
    return f"{resource_type}/{id}"


# -- sorting ----------------------------------------------------------------

# Sort parameters that are plain fields of every resource document.
_FIELD_SORTS = {"_id": "id", "_lastUpdated": "lu"}


def sort_stages(sort: tuple[SortKey, ...]) -> list[Filter]:
    """Aggregation stages ordering by ``sort``, missing values last, ties by ``seq``.

    Each resource document carries one ``sk`` entry per (param, kind) with the
    smallest (``lo``) and largest (``hi``) sort value; ascending uses ``lo``,
    descending ``hi``. A presence flag sorts first so that resources without a
    value come last in either direction.
    """
    add: Filter = {}
    order: dict[str, int] = {}
    for n, key in enumerate(sort):
        direction = -1 if key.descending else 1
        if key.param in _FIELD_SORTS:
            order[_FIELD_SORTS[key.param]] = direction
            continue
        # $literal: a param name starting with "$" must stay a string, not a path.
        same = {"$and": [{"$eq": ["$$this.p", {"$literal": _text(key.param)}]},
                         {"$eq": ["$$this.k", {"$literal": _text(key.kind)}]}]}
        picked = {"$filter": {"input": {"$ifNull": ["$sk", []]}, "cond": same}}
        add[f"_m{n}"] = {"$size": picked}
        add[f"_v{n}"] = {"$arrayElemAt": [
            {"$map": {"input": picked, "in": "$$this.hi" if key.descending else "$$this.lo"}},
            0]}
        order[f"_m{n}"] = -1
        order[f"_v{n}"] = direction
    order.setdefault("seq", 1)
    stages: list[Filter] = []
    if add:
        stages.append({"$addFields": add})
    stages.append({"$sort": order})
    return stages

