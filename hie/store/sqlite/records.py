"""Reading resource versions on one SQLite connection.

Plain synchronous functions: :class:`~hie.store.sqlite.store.SQLiteStore` runs
searches on a reader thread, and reads of one resource by key and the reads
inside a write transaction on the event loop's thread (they are a few index
lookups; see the store's module docstring). Writing is :mod:`.writes`.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from hie.store.base import StoredResource
from hie.store.query import Restriction
from hie.store.sqlite.compile import Statement
from hie.store.sqlite.restriction import restriction_sql

#: Most values bound in one ``IN (…)`` (well below SQLite's variable limit).
CHUNK = 500

_CURRENT = ("SELECT r.seq, r.type, r.id, r.version, r.last_updated, r.deleted, r.source, "
            "v.body, r.labels FROM resources r JOIN versions v ON v.vid = r.vid")
_VERSION = ("SELECT v.seq, v.type, v.id, v.version, v.last_updated, v.deleted, v.source, "
            "v.body, v.labels FROM versions v")


def to_stored(row: tuple[Any, ...]) -> StoredResource:
    """A row ``(seq, type, id, version, last_updated, deleted, source, body, …)``."""
    seq, rtype, rid, version, last_updated, deleted, source, body = row[:8]
    return StoredResource(resource_type=rtype, id=rid, version=version,
                          last_updated=last_updated, deleted=bool(deleted), body=bytes(body),
                          source=source, seq=seq)


def read_current(conn: sqlite3.Connection, resource_type: str, id: str,
                 restriction: Restriction | None) -> StoredResource | None:
    """The current version (a tombstone if deleted), or None when it does not
    exist or the restriction hides it (tested in the same statement)."""
    statement = read_statement(resource_type, id, restriction)
    row = conn.execute(statement.sql, statement.params).fetchone()
    return None if row is None else to_stored(row)


def read_statement(resource_type: str, id: str, restriction: Restriction | None) -> Statement:
    """The statement of :func:`read_current`."""
    allowed, params = restriction_sql("r", restriction, resource_type)
    return Statement(f"{_CURRENT} WHERE r.type = ? AND r.id = ? AND {allowed}",
                     (resource_type, id, *params))


def read_version(conn: sqlite3.Connection, resource_type: str, id: str, version: int,
                 restriction: Restriction | None) -> StoredResource | None:
    """One version, visible by its own source and labels (and, for a grant,
    the current index rows of its resource)."""
    statement = read_version_statement(resource_type, id, version, restriction)
    row = conn.execute(statement.sql, statement.params).fetchone()
    return None if row is None else to_stored(row)


def read_version_statement(resource_type: str, id: str, version: int,
                           restriction: Restriction | None) -> Statement:
    """The statement of :func:`read_version`."""
    allowed, params = restriction_sql("v", restriction, resource_type)
    return Statement(
        f"{_VERSION} WHERE v.type = ? AND v.id = ? AND v.version = ? AND {allowed}",
        (resource_type, id, version, *params))


def read_many(conn: sqlite3.Connection, keys: Iterable[tuple[str, str]],
              restriction: Restriction | None) -> list[StoredResource]:
    """Current, non-deleted, visible versions: one ``IN (…)`` per type and chunk."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for rtype, rid in dict.fromkeys(keys):
        by_type[rtype].append(rid)
    out: list[StoredResource] = []
    for rtype, ids in by_type.items():
        for i in range(0, len(ids), CHUNK):
            statement = read_many_statement(rtype, ids[i:i + CHUNK], restriction)
            out += [to_stored(row) for row in conn.execute(statement.sql, statement.params)]
    return out


def read_many_sql(n: int) -> str:
    """The statement of :func:`read_many` for ``n`` ids of one type. ``+``
    keeps the planner on the ``(type, id)`` index: ``(type, deleted)`` looks
    as selective to it and would walk every resource of the type."""
    return f"{_CURRENT} WHERE r.type = ? AND r.id IN ({', '.join('?' * n)}) AND +r.deleted = 0"


def read_many_statement(resource_type: str, ids: list[str],
                        restriction: Restriction | None) -> Statement:
    """:func:`read_many_sql` for ``ids`` with the restriction in the statement."""
    allowed, params = restriction_sql("r", restriction, resource_type)
    return Statement(f"{read_many_sql(len(ids))} AND {allowed}",
                     (resource_type, *ids, *params))


def fetch_page(conn: sqlite3.Connection, statement: Statement) -> list[StoredResource]:
    """Run a statement of :func:`compile.compile_search`, then fetch the bodies
    by ``vid`` and keep the statement's order."""
    rows = conn.execute(statement.sql, statement.params).fetchall()
    bodies: dict[int, bytes] = {}
    vids = [row[7] for row in rows]
    for i in range(0, len(vids), CHUNK):
        chunk = vids[i:i + CHUNK]
        bodies.update(conn.execute(
            f"SELECT vid, body FROM versions WHERE vid IN ({', '.join('?' * len(chunk))})",
            chunk).fetchall())
    return [to_stored((*row[:7], bodies[row[7]])) for row in rows]


def history(conn: sqlite3.Connection, *, resource_type: str | None, id: str | None,
            since: str | None, before: str | None, limit: int, offset: int,
            restriction: Restriction | None) -> tuple[list[StoredResource], int]:
    """Versions newest first and the total that match; see ``Store.history``."""
    page, count = history_statements(resource_type=resource_type, id=id, since=since,
                                     before=before, limit=limit, offset=offset,
                                     restriction=restriction)
    rows = conn.execute(page.sql, page.params).fetchall()
    total = conn.execute(count.sql, count.params).fetchone()[0]
    return [to_stored(row) for row in rows], total


def history_statements(*, resource_type: str | None, id: str | None, since: str | None,
                       before: str | None, limit: int, offset: int,
                       restriction: Restriction | None) -> tuple[Statement, Statement]:
    """The page and the count statements of :func:`history`. Newest first is
    ``last_updated`` then ``vid`` (write order) descending, which the
    ``(type, last_updated)`` and ``(last_updated)`` indexes yield without a
    sort (their entries end in the rowid ``vid``)."""
    if id is not None and resource_type is None:
        raise ValueError("history of one id needs its resource type")
    terms: list[str] = []
    params: list[Any] = []
    for column, value in (("type", resource_type), ("id", id)):
        if value is not None:
            terms.append(f"v.{column} = ?")
            params.append(value)
    if since is not None:
        terms.append("v.last_updated >= ?")
        params.append(since)
    if before is not None:
        terms.append("v.last_updated < ?")
        params.append(before)
    allowed, rparams = restriction_sql("v", restriction, resource_type)
    terms.append(allowed)
    params += rparams
    where = " AND ".join(terms)
    order = "v.version DESC" if id is not None else "v.last_updated DESC, v.vid DESC"
    return (Statement(f"{_VERSION} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                      (*params, limit, offset)),
            Statement(f"SELECT count(*) FROM versions v WHERE {where}", tuple(params)))
