"""Writing resource versions inside a transaction on the writer connection.

A create is the hot path of ingest (bundles of ~50 new resources), so it costs
one ``INSERT`` into ``resources`` and its rows in the ``executemany`` of
``versions`` and of each index kind that :func:`put_many` runs once for all
the records it is given — nothing else:

* ``seq`` and ``vid`` are handed out from :class:`WriteState`, which reads the
  two maxima once per transaction. That is safe because the transaction holds
  SQLite's write lock (``BEGIN IMMEDIATE``) from its first statement: no other
  connection or process can insert until it commits.
* a create (version 1) does not look first: the unique ``(type, id)`` index
  refuses a duplicate, which becomes :class:`VersionConflict` (a failed
  statement does not end the SQLite transaction).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from hie.store.base import VersionConflict, WriteRecord
from hie.store.index import IndexEntries
from hie.store.sqlite.schema import INDEX_COLUMNS, INDEX_KINDS

_INSERT_INDEX = {
    kind: (f"INSERT OR IGNORE INTO idx_{kind} (type, param, {', '.join(cols)}, seq) "
           f"VALUES ({', '.join('?' * (len(cols) + 3))})")
    for kind, cols in INDEX_COLUMNS.items()
}
_INSERT_RESOURCE = ("INSERT INTO resources (version, vid, last_updated, deleted, source, labels, "
                    "kinds, seq, type, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_UPDATE_RESOURCE = ("UPDATE resources SET version = ?, vid = ?, last_updated = ?, deleted = ?, "
                    "source = ?, labels = ?, kinds = ? WHERE seq = ?")
_INSERT_VERSION = ("INSERT INTO versions (vid, type, id, version, seq, last_updated, deleted, "
                   "source, labels, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


@dataclass(slots=True)
class WriteState:
    """The next ``seq`` and ``vid`` of one transaction (read on first use)."""

    next_seq: int = 0
    next_vid: int = 0

    def load(self, conn: sqlite3.Connection) -> None:
        if not self.next_seq:
            self.next_seq = conn.execute(
                "SELECT coalesce(max(seq), 0) + 1 FROM resources").fetchone()[0]
            self.next_vid = conn.execute(
                "SELECT coalesce(max(vid), 0) + 1 FROM versions").fetchone()[0]


def put(conn: sqlite3.Connection, state: WriteState, record: WriteRecord) -> int:
    """Write one version inside the caller's transaction; return the ``seq``.

    Refuses with :class:`VersionConflict` unless the current version is
    ``record.version - 1``. The index rows of the previous version are replaced
    (only in the tables it had rows in); a tombstone has none.
    """
    return put_many(conn, state, (record,))[0]


def put_many(conn: sqlite3.Connection, state: WriteState,
             records: Sequence[WriteRecord]) -> list[int]:
    """Write several versions inside the caller's transaction, in order;
    return their ``seq``.

    The same checks as :func:`put` for each record, but the ``versions`` rows
    and the index rows of consecutive records are inserted with one
    ``executemany`` per table: a Bundle of 50 creates costs 50 small
    ``INSERT``s into ``resources`` and a handful of batched statements, not
    ~350 statements. Pending rows are flushed before an update deletes the
    index rows of a previous version, so the result is exactly that of
    putting the records one by one.
    """
    state.load(conn)
    seqs: list[int] = []
    version_rows: list[tuple] = []
    index_rows: dict[str, list[tuple]] = {}
    for record in records:
        rtype, rid = record.resource_type, record.id
        index = None if record.deleted else record.index
        labels = _labels(index)
        vid = state.next_vid
        if record.version == 1:
            seq = state.next_seq
            try:
                conn.execute(_INSERT_RESOURCE, (1, vid, record.last_updated,
                                                int(record.deleted), record.source, labels,
                                                _kinds(index), seq, rtype, rid))
            except sqlite3.IntegrityError:
                raise VersionConflict(f"{rtype}/{rid} already exists") from None
            state.next_seq += 1
        else:
            _flush(conn, version_rows, index_rows)
            row = conn.execute(
                "SELECT seq, version, kinds FROM resources WHERE type = ? AND id = ?",
                (rtype, rid)).fetchone()
            current = row[1] if row is not None else 0
            if row is None or record.version != current + 1:
                raise VersionConflict(f"{rtype}/{rid}: version {record.version} cannot "
                                      f"follow version {current}")
            seq, old_kinds = row[0], row[2]
            for bit, kind in enumerate(INDEX_KINDS):
                if old_kinds & (1 << bit):
                    conn.execute(f"DELETE FROM idx_{kind} WHERE seq = ?", (seq,))
            conn.execute(_UPDATE_RESOURCE, (record.version, vid, record.last_updated,
                                            int(record.deleted), record.source, labels,
                                            _kinds(index), seq))
        version_rows.append((vid, rtype, rid, record.version, seq, record.last_updated,
                             int(record.deleted), record.source, labels,
                             b"" if record.deleted else record.body))
        state.next_vid += 1
        if index is not None:
            for kind in INDEX_KINDS:
                entries = getattr(index, kind)
                if entries:
                    index_rows.setdefault(kind, []).extend(
                        [(rtype, *e, seq) for e in entries])
        seqs.append(seq)
    _flush(conn, version_rows, index_rows)
    return seqs


def _flush(conn: sqlite3.Connection, version_rows: list[tuple],
           index_rows: dict[str, list[tuple]]) -> None:
    """Insert the pending ``versions`` and index rows and clear them."""
    if version_rows:
        conn.executemany(_INSERT_VERSION, version_rows)
        version_rows.clear()
    for kind, rows in index_rows.items():
        conn.executemany(_INSERT_INDEX[kind], rows)
    index_rows.clear()


def row_count(records: Sequence[WriteRecord]) -> int:
    """How many rows :func:`put_many` inserts for ``records`` (its cost)."""
    total = len(records)
    for record in records:
        index = record.index
        if index is not None and not record.deleted:
            total += sum(len(getattr(index, kind)) for kind in INDEX_KINDS)
    return total


def _kinds(index: IndexEntries | None) -> int:
    """Bit mask of the index tables ``index`` has rows for."""
    if index is None:
        return 0
    return sum(1 << bit for bit, kind in enumerate(INDEX_KINDS) if getattr(index, kind))


def _labels(index: IndexEntries | None) -> str | None:
    """``|code|code|`` of the ``_security`` tokens (system ignored), or None."""
    if index is None:
        return None
    codes = sorted({code for param, _system, code in index.token if param == "_security"})
    return "|" + "|".join(codes) + "|" if codes else None
