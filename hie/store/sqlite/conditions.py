"""Compile the conditions of a :class:`~hie.store.query.SearchQuery` to SQL.

Each condition is compiled into two interchangeable forms:

* a *seq set* — ``SELECT seq FROM <index> WHERE type = ? AND param = ? AND …``,
  a range of one composite index that lists the resources with a matching
  value. One of the query's conditions *drives* the search this way
  (``r.seq IN (…)``: rowid lookups in the resources table);
* a *predicate* on a resources row — ``EXISTS (SELECT 1 FROM <index> x WHERE
  x.seq = r.seq AND x.param = ? AND …)``, answered by the ``(seq, param)``
  index of the index table. The other conditions filter the driver's rows this
  way, so no condition ever needs a table scan.

A rank estimates how selective a condition is (lower: fewer rows); the
compiler lets the lowest-ranked drivable condition drive. Conditions that
match resources *without* a value (``:not``, ``:missing=true``) cannot drive.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hie.store.query import (
    AnyOf,
    ChainMatch,
    Condition,
    DateMatch,
    IdMatch,
    LastUpdatedMatch,
    MissingMatch,
    NumberMatch,
    Prefix,
    QuantityMatch,
    ReferenceMatch,
    Restriction,
    StringMatch,
    TokenMatch,
    UriMatch,
)
from hie.store.sqlite.restriction import restriction_sql

#: Rank of a condition that cannot drive a search.
UNDRIVABLE = 100


@dataclass(frozen=True, slots=True)
class SeqSet:
    """``SELECT {seq} FROM {source} WHERE {where}``: resources of one type with
    a matching value (possibly listed more than once)."""

    source: str
    seq: str
    where: str
    params: tuple[Any, ...]

    def sql(self, bounds: Iterable[tuple[str, Any]] = ()) -> tuple[str, list[Any]]:
        """The SELECT, with extra ``seq`` bounds such as ``("> ?", 10)``."""
        where, params = self.where, list(self.params)
        for op, value in bounds:
            where += f" AND {self.seq} {op}"
            params.append(value)
        return f"SELECT {self.seq} FROM {self.source} WHERE {where}", params


@dataclass(slots=True)
class Compiled:
    """One condition (or one ``AnyOf``) in both forms."""

    predicate: str
    params: list[Any]
    seq_sets: list[SeqSet] | None  # None: cannot drive
    rank: int


@dataclass(slots=True)
class Context:
    """What every condition of one query shares: the restriction (a chained
    target must be visible too) and a supply of unique table aliases."""

    restriction: Restriction | None = None
    _names: itertools.count = field(default_factory=itertools.count)

    def alias(self, stem: str) -> str:
        return f"{stem}{next(self._names)}"


def compile_any_of(group: AnyOf, rtype: str, alias: str, ctx: Context) -> Compiled:
    """Compile a disjunction; values of one parameter that differ only in the
    code or target id share one ``IN (…)`` so a long ``_revinclude`` OR stays one
    index range per parameter."""
    parts = [compile_condition(term, rtype, alias, ctx) for term in _merge(group.terms)]
    if not parts:  # an empty disjunction matches nothing
        return Compiled("0", [], [], 0)
    if len(parts) == 1:
        return parts[0]
    predicate = "(" + " OR ".join(p.predicate for p in parts) + ")"
    params = [v for p in parts for v in p.params]
    if any(p.seq_sets is None for p in parts):
        return Compiled(predicate, params, None, UNDRIVABLE)
    seq_sets = [s for p in parts for s in p.seq_sets or ()]
    return Compiled(predicate, params, seq_sets, max(p.rank for p in parts) + 1)


# ---- merged terms of one AnyOf ----------------------------------------------

@dataclass(frozen=True, slots=True)
class _TokenCodes:
    param: str
    system: str | None
    codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _ReferenceIds:
    param: str
    target_type: str | None
    ids: tuple[str, ...]


def _merge(terms: tuple[Condition, ...]) -> list[Any]:
    tokens: dict[tuple[str, str | None], list[str]] = {}
    refs: dict[tuple[str, str | None], list[str]] = {}
    rest: list[Any] = []
    for term in terms:
        if isinstance(term, TokenMatch) and not term.negate and term.code is not None:
            tokens.setdefault((term.param, term.system), []).append(term.code)
        elif isinstance(term, ReferenceMatch):
            refs.setdefault((term.param, term.target_type), []).append(term.target_id)
        else:
            rest.append(term)
    merged: list[Any] = [_TokenCodes(p, s, tuple(dict.fromkeys(c))) for (p, s), c in tokens.items()]
    merged += [_ReferenceIds(p, t, tuple(dict.fromkeys(i))) for (p, t), i in refs.items()]
    return merged + rest


# ---- single conditions ------------------------------------------------------

def compile_condition(cond: Any, rtype: str, alias: str, ctx: Context) -> Compiled:
    """Compile one condition on the resources row ``alias`` of type ``rtype``."""
    if isinstance(cond, TokenMatch):
        if cond.code is not None and not cond.negate:
            return compile_condition(_TokenCodes(cond.param, cond.system, (cond.code,)),
                                     rtype, alias, ctx)
        codes = (cond.code,) if cond.code is not None else None
        where, params = _token_filter(cond.system, codes)
        rank = 7 if cond.system is not None else 8
        return _indexed("token", cond.param, where, params, rtype, alias, ctx, rank,
                        negate=cond.negate)
    if isinstance(cond, _TokenCodes):
        where, params = _token_filter(cond.system, cond.codes)
        return _indexed("token", cond.param, where, params, rtype, alias, ctx, 2)
    if isinstance(cond, ReferenceMatch):
        cond = _ReferenceIds(cond.param, cond.target_type, (cond.target_id,))
    if isinstance(cond, _ReferenceIds):
        where = f"{{x}}.target_id IN ({_marks(len(cond.ids))})"
        params: list[Any] = list(cond.ids)
        if cond.target_type is not None:
            where += " AND {x}.target_type = ?"
            params.append(cond.target_type)
        return _indexed("reference", cond.param, where, params, rtype, alias, ctx,
                        1 if cond.target_type is not None else 2)
    if isinstance(cond, StringMatch):
        return _string(cond, rtype, alias, ctx)
    if isinstance(cond, UriMatch):
        return _uri(cond, rtype, alias, ctx)
    if isinstance(cond, DateMatch):
        where, params = _range_filter(cond.prefix, "{x}.low", "{x}.high", cond.low, cond.high)
        return _indexed("date", cond.param, where, params, rtype, alias, ctx,
                        _prefix_rank(cond.prefix))
    if isinstance(cond, NumberMatch):
        where, params = _point_filter(cond.prefix, "{x}.value", cond.value, cond.low, cond.high)
        return _indexed("number", cond.param, where, params, rtype, alias, ctx,
                        _prefix_rank(cond.prefix))
    if isinstance(cond, QuantityMatch):
        where, params = _point_filter(cond.prefix, "{x}.value", cond.value, cond.low, cond.high)
        for column, value in (("code", cond.code), ("system", cond.system)):
            if value is not None:
                where += f" AND {{x}}.{column} = ?"
                params.append(value)
        return _indexed("quantity", cond.param, where, params, rtype, alias, ctx,
                        _prefix_rank(cond.prefix))
    if isinstance(cond, MissingMatch):
        return _indexed(cond.kind, cond.param, "", [], rtype, alias, ctx, 8,
                        negate=cond.missing)
    if isinstance(cond, IdMatch):
        return _ids(cond, rtype, alias, ctx)
    if isinstance(cond, LastUpdatedMatch):
        return _last_updated(cond, rtype, alias, ctx)
    if isinstance(cond, ChainMatch):
        return _chain(cond, rtype, alias, ctx)
    raise TypeError(f"unsupported search condition: {cond!r}")


def _indexed(kind: str, param: str, where: str, params: list[Any], rtype: str, alias: str,
             ctx: Context, rank: int, *, negate: bool = False) -> Compiled:
    """A condition answered by ``idx_<kind>``; ``where`` uses ``{x}`` for its alias."""
    x = ctx.alias("x")
    cond_sql = where.replace("{x}", x)
    extra = f" AND {cond_sql}" if cond_sql else ""
    exists = (f"EXISTS (SELECT 1 FROM idx_{kind} {x} WHERE {x}.seq = {alias}.seq "
              f"AND {x}.param = ?{extra})")
    if negate:
        return Compiled(f"NOT {exists}", [param, *params], None, UNDRIVABLE)
    seq_set = SeqSet(f"idx_{kind} {x}", f"{x}.seq", f"{x}.type = ? AND {x}.param = ?{extra}",
                     (rtype, param, *params))
    return Compiled(exists, [param, *params], [seq_set], rank)


def _token_filter(system: str | None, codes: tuple[str, ...] | None) -> tuple[str, list[Any]]:
    terms: list[str] = []
    params: list[Any] = []
    if codes is not None:
        terms.append(f"{{x}}.code IN ({_marks(len(codes))})")
        params += codes
    if system is not None:
        terms.append("{x}.system = ?")
        params.append(system)
    return " AND ".join(terms), params


def _string(cond: StringMatch, rtype: str, alias: str, ctx: Context) -> Compiled:
    if cond.mode == "exact":
        return _indexed("string", cond.param, "{x}.exact = ?", [cond.value], rtype, alias,
                        ctx, 2)
    if cond.mode == "contains":
        return _indexed("string", cond.param, "instr({x}.norm, ?) > 0", [cond.value], rtype,
                        alias, ctx, 8)
    where, params = _prefix_range("{x}.norm", cond.value)
    return _indexed("string", cond.param, where, params, rtype, alias, ctx, 4)


def _uri(cond: UriMatch, rtype: str, alias: str, ctx: Context) -> Compiled:
    if cond.mode == "exact":
        return _indexed("uri", cond.param, "{x}.uri = ?", [cond.value], rtype, alias, ctx, 2)
    if cond.mode == "below":
        where, params = _prefix_range("{x}.uri", cond.value)
        return _indexed("uri", cond.param, where, params, rtype, alias, ctx, 4)
    # above: the indexed uri is a prefix of the value, i.e. one of its prefixes
    prefixes = [cond.value[:n] for n in range(1, len(cond.value) + 1)]
    return _indexed("uri", cond.param, f"{{x}}.uri IN ({_marks(len(prefixes))})", prefixes,
                    rtype, alias, ctx, 3)


def _ids(cond: IdMatch, rtype: str, alias: str, ctx: Context) -> Compiled:
    if not cond.ids:
        return Compiled("0", [], [], 0)
    x = ctx.alias("x")
    marks = _marks(len(cond.ids))
    seq_set = SeqSet(f"resources {x}", f"{x}.seq", f"{x}.type = ? AND {x}.id IN ({marks})",
                     (rtype, *cond.ids))
    return Compiled(f"{alias}.id IN ({marks})", list(cond.ids), [seq_set], 0)


def _last_updated(cond: LastUpdatedMatch, rtype: str, alias: str, ctx: Context) -> Compiled:
    x = ctx.alias("x")
    where, params = _range_filter(cond.prefix, f"{x}.last_updated", f"{x}.last_updated",
                                  cond.low, cond.high)
    seq_set = SeqSet(f"resources {x}", f"{x}.seq", f"{x}.type = ? AND {where}",
                     (rtype, *params))
    predicate, pparams = _range_filter(cond.prefix, f"{alias}.last_updated",
                                       f"{alias}.last_updated", cond.low, cond.high)
    return Compiled(f"({predicate})", pparams, [seq_set], _prefix_rank(cond.prefix))


def _chain(cond: ChainMatch, rtype: str, alias: str, ctx: Context) -> Compiled:
    """The reference ``param`` points at a visible, current ``target_type``
    resource satisfying ``inner``."""
    t = ctx.alias("t")
    inner = compile_any_of(AnyOf((cond.inner,)), cond.target_type, t, ctx)
    visible, vparams = restriction_sql(t, ctx.restriction, cond.target_type)
    if inner.seq_sets:
        sets = [s.sql() for s in inner.seq_sets]
        union = " UNION ALL ".join(sql for sql, _ in sets)
        target_where = f"{t}.seq IN ({union}) AND +{t}.type = ? AND +{t}.deleted = 0"
        tparams: list[Any] = [v for _, ps in sets for v in ps] + [cond.target_type]
    else:
        target_where = f"{t}.type = ? AND {t}.deleted = 0 AND {inner.predicate}"
        tparams = [cond.target_type, *inner.params]
    x = ctx.alias("x")
    seq_set = SeqSet(
        f"idx_reference {x}", f"{x}.seq",
        f"{x}.type = ? AND {x}.param = ? AND {x}.target_type = ? AND {x}.target_id IN "
        f"(SELECT {t}.id FROM resources {t} WHERE {target_where} AND {visible})",
        (rtype, cond.param, cond.target_type, *tparams, *vparams))
    y, u = ctx.alias("x"), ctx.alias("t")
    inner_on_u = compile_any_of(AnyOf((cond.inner,)), cond.target_type, u, ctx)
    visible_u, vparams_u = restriction_sql(u, ctx.restriction, cond.target_type)
    predicate = (
        f"EXISTS (SELECT 1 FROM idx_reference {y} JOIN resources {u} "
        f"ON {u}.type = {y}.target_type AND {u}.id = {y}.target_id "
        f"WHERE {y}.seq = {alias}.seq AND {y}.param = ? AND {y}.target_type = ? "
        f"AND +{u}.deleted = 0 AND {visible_u} AND {inner_on_u.predicate})")
    params = [cond.param, cond.target_type, *vparams_u, *inner_on_u.params]
    rank = 3 if inner.seq_sets and inner.rank <= 2 else 6
    return Compiled(predicate, params, [seq_set], rank)


# ---- value filters ----------------------------------------------------------

def _range_filter(prefix: Prefix, lo: str, hi: str, slo: str, shi: str) -> tuple[str, list[Any]]:
    """Date-range semantics of query.py for a value ``[lo, hi]``. Redundant
    bounds on ``lo`` (it never exceeds ``hi``) keep each test one index range."""
    if prefix == "eq":
        return f"{lo} >= ? AND {lo} <= ? AND {hi} <= ?", [slo, shi, shi]
    if prefix == "ne":
        return f"({lo} < ? OR {hi} > ?)", [slo, shi]
    if prefix == "gt":
        return f"{hi} > ?", [shi]
    if prefix == "lt":
        return f"{lo} < ?", [slo]
    if prefix == "ge":
        return f"{hi} >= ?", [slo]
    if prefix == "le":
        return f"{lo} <= ?", [shi]
    if prefix == "sa":
        return f"{lo} > ?", [shi]
    if prefix == "eb":
        return f"{hi} < ?", [slo]
    if prefix == "ap":
        return f"{lo} <= ? AND {hi} >= ?", [shi, slo]
    raise ValueError(f"unknown prefix {prefix!r}")


def _point_filter(prefix: Prefix, v: str, value: float, low: float,
                  high: float) -> tuple[str, list[Any]]:
    """Number/quantity semantics of query.py for a point value ``v``."""
    if prefix == "eq":
        return f"{v} >= ? AND {v} < ?", [low, high]
    if prefix == "ne":
        return f"({v} < ? OR {v} >= ?)", [low, high]
    if prefix in ("gt", "sa"):
        return f"{v} > ?", [value]
    if prefix in ("lt", "eb"):
        return f"{v} < ?", [value]
    if prefix == "ge":
        return f"{v} >= ?", [value]
    if prefix == "le":
        return f"{v} <= ?", [value]
    if prefix == "ap":
        margin = abs(value) * 0.1
        return f"{v} >= ? AND {v} <= ?", [value - margin, value + margin]
    raise ValueError(f"unknown prefix {prefix!r}")


def _prefix_range(column: str, prefix: str) -> tuple[str, list[Any]]:
    """``column`` starts with ``prefix``, as an index range (no LIKE: it folds
    ASCII case and would not use the index)."""
    if not prefix:
        return "", []
    last = ord(prefix[-1]) + 1
    if last > 0x10FFFF:
        return f"{column} >= ?", [prefix]
    if 0xD800 <= last <= 0xDFFF:  # surrogates cannot be encoded; skip past them
        last = 0xE000
    return f"{column} >= ? AND {column} < ?", [prefix, prefix[:-1] + chr(last)]


def _prefix_rank(prefix: Prefix) -> int:
    return {"eq": 5, "ap": 5, "ne": 8}.get(prefix, 6)


def _marks(n: int) -> str:
    return ", ".join("?" * n)
