"""Compile a :class:`~hie.store.query.SearchQuery` into one SQL statement.

The statement reads only the ``resources`` table (alias ``r``) and the index
tables; bodies are fetched afterwards by ``vid`` (rowid lookups), so a sorted
search sorts small rows, never documents.

Shape::

    SELECT … FROM resources r
    WHERE r.seq IN (<seq set of the driving condition>)   -- rowid lookups
      AND +r.type = ? AND +r.deleted = 0                   -- '+': never an index
      AND <other conditions as EXISTS on (seq, param)>
      AND <restriction>
    ORDER BY <sort values> NULLS LAST, r.seq LIMIT ? OFFSET ?

Without a drivable condition (or when :mod:`.planner` finds every condition
broad) the type index ``(type, deleted)`` drives, in ``seq`` order. The ``+``
on the driver's type test keeps SQLite from preferring that index (it yields
``seq`` order, which tempts the planner) over the far more selective seq set.

:func:`compile_search` and :func:`compile_count` are public so that tests can
run ``EXPLAIN QUERY PLAN`` on exactly the SQL the store executes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from hie.store.query import Cursor, SearchQuery, SortKey
from hie.store.sqlite.conditions import Compiled, Context, compile_any_of
from hie.store.sqlite.restriction import implied_patients, restriction_sql

#: What drives a search: ``"rank"`` (the most selective-looking condition,
#: by rank), the position of a group in ``where`` (chosen by probing, see
#: :mod:`.planner`), or ``"walk"`` (the ``(type, deleted)`` index in seq order,
#: every condition a filter — cheapest when every condition is broad and only
#: the first page of the default order is wanted).
Driver: TypeAlias = int | Literal["rank", "walk"]

#: Columns of a result row (see :func:`hie.store.sqlite.records.to_stored`).
RESULT_COLUMNS = "r.seq, r.type, r.id, r.version, r.last_updated, r.deleted, r.source, r.vid"

#: The column a sort key reads in each index table (dates: low ascending,
#: high descending — the smallest and the largest instant of the value).
_SORT_COLUMN = {
    "token": "code", "string": "norm", "number": "value", "quantity": "value",
    "reference": "target_id", "uri": "uri",
}


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL text and its parameters."""

    sql: str
    params: tuple[Any, ...]


def compile_where(query: SearchQuery, *, after_seq: int = 0, max_seq: int | None = None,
                  driver: Driver = "rank") -> Statement:
    """The WHERE clause (without the keyword) selecting the current,
    non-deleted, visible resources of ``query`` with ``after_seq < seq <=
    max_seq``, driven as ``driver`` says."""
    ctx = Context(restriction=query.restriction)
    parts = [compile_any_of(group, query.resource_type, "r", ctx) for group in query.where]
    if any(p.seq_sets == [] for p in parts):  # e.g. an empty _id list: nothing can match
        return Statement("0", ())
    bounds = _bounds(after_seq, max_seq)

    chosen = _driver(parts, driver)
    terms: list[str] = []
    params: list[Any] = []
    if chosen is not None:
        sets = [s.sql(bounds) for s in chosen.seq_sets or ()]
        terms.append("r.seq IN (" + " UNION ALL ".join(sql for sql, _ in sets) + ")")
        params += [v for _, ps in sets for v in ps]
        terms.append("+r.type = ? AND +r.deleted = 0")
    else:
        terms.append("r.type = ? AND r.deleted = 0")
    params.append(query.resource_type)
    for op, value in bounds:
        terms.append(f"r.seq {op}")
        params.append(value)
    for part in parts:
        if part is not chosen:
            terms.append(part.predicate)
            params += part.params
    visible, vparams = restriction_sql("r", query.restriction, query.resource_type,
                                       implied=implied_patients(query.where))
    if visible != "1":
        terms.append(visible)
        params += vparams
    return Statement(" AND ".join(terms), tuple(params))


def compile_search(query: SearchQuery, *, limit: int, cursor: Cursor | None = None,
                   snapshot_seq: int | None = None, driver: Driver = "rank") -> Statement:
    """One page of ``query``: keyset on ``seq`` without sort, otherwise
    ``offset`` among resources with ``seq <= snapshot_seq``."""
    cursor = cursor or Cursor()
    if query.sort:
        where = compile_where(query, max_seq=snapshot_seq, driver=driver)
    else:
        where = compile_where(query, after_seq=cursor.after_seq, driver=driver)
    order, oparams = _order_by(query.sort)
    sql = (f"SELECT {RESULT_COLUMNS} FROM resources r WHERE {where.sql} "
           f"ORDER BY {order} LIMIT ? OFFSET ?")
    return Statement(sql, (*where.params, *oparams, limit, cursor.offset))


def compile_count(query: SearchQuery, *, driver: Driver = "rank") -> Statement:
    """How many current, non-deleted, visible resources match ``query``."""
    where = compile_where(query, driver=driver)
    return Statement(f"SELECT count(*) FROM resources r WHERE {where.sql}", where.params)


def compile_probes(query: SearchQuery, *, after_seq: int = 0,
                   max_seq: int | None = None) -> list[Probe]:
    """For each group of ``query.where`` that can drive: a count of the index
    rows of its seq set, up to a limit given as the last parameter (so a probe
    reads at most that many index entries, however broad the condition)."""
    ctx = Context(restriction=query.restriction)
    bounds = _bounds(after_seq, max_seq)
    probes: list[Probe] = []
    for position, group in enumerate(query.where):
        part = compile_any_of(group, query.resource_type, "r", ctx)
        if not part.seq_sets:
            continue
        sets = [s.sql(bounds) for s in part.seq_sets]
        union = " UNION ALL ".join(sql for sql, _ in sets)
        probes.append(Probe(position, part.rank, Statement(
            f"SELECT count(*) FROM ({union} LIMIT ?)",
            tuple(v for _, ps in sets for v in ps))))
    return probes


@dataclass(frozen=True, slots=True)
class Probe:
    """The probe of one group: its position in ``where``, its rank, and the
    SQL (whose parameters lack the final ``LIMIT``)."""

    position: int
    rank: int
    statement: Statement

    def run_params(self, limit: int) -> tuple[Any, ...]:
        return (*self.statement.params, limit)


def _bounds(after_seq: int, max_seq: int | None) -> list[tuple[str, Any]]:
    bounds: list[tuple[str, Any]] = []
    if after_seq:
        bounds.append(("> ?", after_seq))
    if max_seq is not None:
        bounds.append(("<= ?", max_seq))
    return bounds


def _driver(parts: list[Compiled], driver: Driver) -> Compiled | None:
    """The part whose seq set drives, or None to walk the type index."""
    if driver == "walk":
        return None
    if isinstance(driver, int) and parts[driver].seq_sets is not None:
        return parts[driver]
    drivable = [p for p in parts if p.seq_sets is not None]
    return min(drivable, key=lambda p: p.rank) if drivable else None


def _order_by(sort: tuple[SortKey, ...]) -> tuple[str, list[Any]]:
    """ORDER BY terms: sort values first (missing values last), ties by seq."""
    terms: list[str] = []
    params: list[Any] = []
    for key in sort:
        direction = "DESC" if key.descending else "ASC"
        if key.param == "_id":
            terms.append(f"r.id {direction}")
        elif key.param == "_lastUpdated":
            terms.append(f"r.last_updated {direction}")
        else:
            column = _SORT_COLUMN.get(key.kind) or ("high" if key.descending else "low")
            func = "max" if key.descending else "min"
            terms.append(f"(SELECT {func}(s.{column}) FROM idx_{key.kind} s "
                         f"WHERE s.seq = r.seq AND s.param = ?) {direction} NULLS LAST")
            params.append(key.param)
    terms.append("r.seq")
    return ", ".join(terms), params
