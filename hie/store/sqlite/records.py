"""Reading and writing resource versions on one SQLite connection.

Plain synchronous functions: :class:`~hie.store.sqlite.store.SQLiteStore` runs
them in its executors (the writer thread or a reader thread), never on the
event loop.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from hie.store.base import StoredResource, VersionConflict, WriteRecord
from hie.store.index import IndexEntries
from hie.store.query import Restriction
from hie.store.sqlite.compile import Statement
from hie.store.sqlite.conditions import restriction_sql
from hie.store.sqlite.schema import INDEX_COLUMNS, INDEX_KINDS

#: Most values bound in one ``IN (…)`` (well below SQLite's variable limit).
CHUNK = 500

_CURRENT = ("SELECT r.seq, r.type, r.id, r.version, r.last_updated, r.deleted, r.source, "
            "v.body, r.labels FROM resources r JOIN versions v ON v.vid = r.vid")
_VERSION = ("SELECT v.seq, v.type, v.id, v.version, v.last_updated, v.deleted, v.source, "
            "v.body, v.labels FROM versions v")

_INSERT_INDEX = {
    kind: (f"INSERT OR IGNORE INTO idx_{kind} (type, param, {', '.join(cols)}, seq) "
           f"VALUES ({', '.join('?' * (len(cols) + 3))})")
    for kind, cols in INDEX_COLUMNS.items()
}


def to_stored(row: tuple[Any, ...]) -> StoredResource:
    """A row ``(seq, type, id, version, last_updated, deleted, source, body, …)``."""
    seq, rtype, rid, version, last_updated, deleted, source, body = row[:8]
    return StoredResource(resource_type=rtype, id=rid, version=version,
                          last_updated=last_updated, deleted=bool(deleted), body=bytes(body),
                          source=source, seq=seq)


def visible(source: str | None, labels: str | None, restriction: Restriction | None) -> bool:
    """The restriction test of :func:`conditions.restriction_sql`, in Python."""
    if restriction is None:
        return True
    if restriction.sources is not None and source not in restriction.sources:
        return False
    if labels and restriction.hidden_labels:
        return not (set(labels.strip("|").split("|")) & restriction.hidden_labels)
    return True


def read_current(conn: sqlite3.Connection, resource_type: str, id: str,
                 restriction: Restriction | None) -> StoredResource | None:
    row = conn.execute(f"{_CURRENT} WHERE r.type = ? AND r.id = ?",
                       (resource_type, id)).fetchone()
    if row is None or not visible(row[6], row[8], restriction):
        return None
    return to_stored(row)


def read_version(conn: sqlite3.Connection, resource_type: str, id: str, version: int,
                 restriction: Restriction | None) -> StoredResource | None:
    row = conn.execute(f"{_VERSION} WHERE v.type = ? AND v.id = ? AND v.version = ?",
                       (resource_type, id, version)).fetchone()
    if row is None or not visible(row[6], row[8], restriction):
        return None
    return to_stored(row)


def read_many(conn: sqlite3.Connection, keys: Iterable[tuple[str, str]],
              restriction: Restriction | None) -> list[StoredResource]:
    """Current, non-deleted, visible versions: one ``IN (…)`` per type and chunk."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for rtype, rid in dict.fromkeys(keys):
        by_type[rtype].append(rid)
    out: list[StoredResource] = []
    for rtype, ids in by_type.items():
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            rows = conn.execute(
                f"{_CURRENT} WHERE r.type = ? AND r.id IN ({', '.join('?' * len(chunk))}) "
                "AND r.deleted = 0", (rtype, *chunk))
            out += [to_stored(row) for row in rows if visible(row[6], row[8], restriction)]
    return out


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
    allowed, rparams = restriction_sql("v", restriction)
    terms.append(allowed)
    params += rparams
    where = " AND ".join(terms)
    order = "v.version DESC" if id is not None else "v.last_updated DESC, v.vid DESC"
    rows = conn.execute(f"{_VERSION} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                        (*params, limit, offset)).fetchall()
    total = conn.execute(f"SELECT count(*) FROM versions v WHERE {where}", params).fetchone()[0]
    return [to_stored(row) for row in rows], total


def put(conn: sqlite3.Connection, record: WriteRecord) -> int:
    """Write one version inside the caller's transaction; return the ``seq``.

    Refuses with :class:`VersionConflict` unless the current version is
    ``record.version - 1``. The index rows of the previous version are replaced
    (only the tables it had rows in); a tombstone has none.
    """
    rtype, rid = record.resource_type, record.id
    row = conn.execute("SELECT seq, version, kinds FROM resources WHERE type = ? AND id = ?",
                       (rtype, rid)).fetchone()
    current = row[1] if row is not None else 0
    if record.version != current + 1:
        raise VersionConflict(f"{rtype}/{rid}: version {record.version} cannot follow "
                              f"version {current}")
    index = None if record.deleted else record.index
    labels = _labels(index)
    body = b"" if record.deleted else record.body
    if row is None:
        # under BEGIN IMMEDIATE no other writer can take the same number
        seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM resources").fetchone()[0]
    else:
        seq = row[0]
        for bit, kind in enumerate(INDEX_KINDS):
            if row[2] & (1 << bit):
                conn.execute(f"DELETE FROM idx_{kind} WHERE seq = ?", (seq,))
    vid = conn.execute(
        "INSERT INTO versions (type, id, version, seq, last_updated, deleted, source, labels, "
        "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (rtype, rid, record.version, seq, record.last_updated, int(record.deleted),
         record.source, labels, body)).lastrowid
    kinds = _insert_index(conn, rtype, seq, index)
    values = (record.version, vid, record.last_updated, int(record.deleted), record.source,
              labels, kinds)
    if row is None:
        conn.execute("INSERT INTO resources (version, vid, last_updated, deleted, source, "
                     "labels, kinds, seq, type, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (*values, seq, rtype, rid))
    else:
        conn.execute("UPDATE resources SET version = ?, vid = ?, last_updated = ?, "
                     "deleted = ?, source = ?, labels = ?, kinds = ? WHERE seq = ?",
                     (*values, seq))
    return seq


def _insert_index(conn: sqlite3.Connection, rtype: str, seq: int,
                  index: IndexEntries | None) -> int:
    """Insert the index rows (one executemany per kind); return the kinds mask."""
    if index is None:
        return 0
    kinds = 0
    for bit, kind in enumerate(INDEX_KINDS):
        entries = getattr(index, kind)
        if entries:
            conn.executemany(_INSERT_INDEX[kind], [(rtype, *e, seq) for e in entries])
            kinds |= 1 << bit
    return kinds


def _labels(index: IndexEntries | None) -> str | None:
    """``|code|code|`` of the ``_security`` tokens (system ignored), or None."""
    if index is None:
        return None
    codes = sorted({code for param, _system, code in index.token if param == "_security"})
    return "|" + "|".join(codes) + "|" if codes else None
