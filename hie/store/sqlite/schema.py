"""The SQLite schema, its versioned upgrades and the connection settings.

The schema version lives in ``PRAGMA user_version``; :data:`UPGRADES` holds one
step per version and :func:`ensure_schema` applies the missing ones inside a
``BEGIN IMMEDIATE`` transaction, so two processes opening a fresh file at the
same time cannot both create it (the Orthanc pattern: the back end owns its
upgrade path).

Layout (see :mod:`hie.store.sqlite` for why):

* ``resources`` — the current version of each resource, keyed by the store-wide
  ``seq`` (the ``INTEGER PRIMARY KEY``, i.e. the rowid, so keyset paging and
  every index lookup ends in a rowid). ``vid`` points at the body in
  ``versions``; ``kinds`` is a bit mask of the index tables holding rows for it
  (so an update deletes only from those).
* ``versions`` — every version including tombstones, with the body, the
  ``source`` and the ``_security`` label codes (``labels``, ``|a|b|`` or NULL)
  so that a restriction can be checked on any version.
* ``idx_<kind>`` — one ``WITHOUT ROWID`` table per index kind whose primary key
  is the search index itself (``type, param, value…, seq``) and a second index
  ``(seq, param)`` that answers per-resource checks (``:not``, ``:missing``,
  conditions that do not drive the query, sort values) and deletes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

#: How long a reader waits when the file is locked (ms; in WAL mode only while
#: another process recovers the WAL after a crash).
BUSY_TIMEOUT_MS = 10_000
#: How long a write waits for another process's write lock (s).
LOCK_WAIT_S = 30.0

T = TypeVar("T")

#: The index tables, in the order of their bit in ``resources.kinds``.
INDEX_KINDS: tuple[str, ...] = (
    "token", "string", "date", "number", "quantity", "reference", "uri",
)

#: Columns of each index table after ``type, param`` (``seq`` comes last).
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "token": ("system", "code"),
    "string": ("norm", "exact"),
    "date": ("low", "high"),
    "number": ("value", "low", "high"),
    "quantity": ("value", "low", "high", "system", "code"),
    "reference": ("target_type", "target_id"),
    "uri": ("uri",),
}

_V1: tuple[str, ...] = (
    """CREATE TABLE resources (
        seq INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        vid INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        source TEXT,
        labels TEXT,
        kinds INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE UNIQUE INDEX resources_key ON resources (type, id)",
    # rowid (seq) order within a type: the default search order without a driver
    "CREATE INDEX resources_type ON resources (type, deleted)",
    "CREATE INDEX resources_updated ON resources (type, last_updated)",
    """CREATE TABLE versions (
        vid INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        source TEXT,
        labels TEXT,
        body BLOB NOT NULL
    )""",
    "CREATE UNIQUE INDEX versions_key ON versions (type, id, version)",
    "CREATE INDEX versions_type_updated ON versions (type, last_updated)",
    "CREATE INDEX versions_updated ON versions (last_updated)",
    """CREATE TABLE idx_token (
        type TEXT NOT NULL, param TEXT NOT NULL, code TEXT NOT NULL,
        system TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (type, param, code, system, seq)) WITHOUT ROWID""",
    "CREATE INDEX idx_token_seq ON idx_token (seq, param)",
    """CREATE TABLE idx_string (
        type TEXT NOT NULL, param TEXT NOT NULL, norm TEXT NOT NULL,
        exact TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (type, param, norm, exact, seq)) WITHOUT ROWID""",
    "CREATE INDEX idx_string_exact ON idx_string (type, param, exact)",
    "CREATE INDEX idx_string_seq ON idx_string (seq, param)",
    """CREATE TABLE idx_date (
        type TEXT NOT NULL, param TEXT NOT NULL, low TEXT NOT NULL,
        high TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (type, param, low, high, seq)) WITHOUT ROWID""",
    "CREATE INDEX idx_date_high ON idx_date (type, param, high)",
    "CREATE INDEX idx_date_seq ON idx_date (seq, param)",
    """CREATE TABLE idx_number (
        type TEXT NOT NULL, param TEXT NOT NULL, value REAL NOT NULL,
        low REAL NOT NULL, high REAL NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (type, param, value, low, high, seq)) WITHOUT ROWID""",
    "CREATE INDEX idx_number_seq ON idx_number (seq, param)",
    """CREATE TABLE idx_quantity (
        type TEXT NOT NULL, param TEXT NOT NULL, value REAL NOT NULL,
        low REAL NOT NULL, high REAL NOT NULL, system TEXT NOT NULL,
        code TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (type, param, value, code, system, low, high, seq)) WITHOUT ROWID""",
    "CREATE INDEX idx_quantity_code ON idx_quantity (type, param, code, value)",
    "CREATE INDEX idx_quantity_seq ON idx_quantity (seq, param)",
    """CREATE TABLE idx_reference (
        type TEXT NOT NULL, param TEXT NOT NULL, target_id TEXT NOT NULL,
        target_type TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (type, param, target_id, target_type, seq)) WITHOUT ROWID""",
    "CREATE INDEX idx_reference_seq ON idx_reference (seq, param)",
    """CREATE TABLE idx_uri (
        type TEXT NOT NULL, param TEXT NOT NULL, uri TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (type, param, uri, seq)) WITHOUT ROWID""",
    "CREATE INDEX idx_uri_seq ON idx_uri (seq, param)",
)

#: ``UPGRADES[n]`` takes a database from schema version ``n`` to ``n + 1``.
UPGRADES: tuple[Sequence[str], ...] = (_V1,)
SCHEMA_VERSION = len(UPGRADES)


def connect(path: str, *, writer: bool) -> sqlite3.Connection:
    """Open one connection with the settings every connection needs.

    Autocommit mode (``isolation_level=None``): the store issues ``BEGIN
    IMMEDIATE`` itself (:func:`begin_immediate`), so the write lock is taken
    before the first read of a transaction and a read-then-write can never
    fail to upgrade. ``check_same_thread=False`` because a connection is used
    from one executor thread at a time, not always the thread that made it.
    The writer has no busy timeout: :func:`begin_immediate` waits for the lock
    itself.
    """
    timeout_ms = 0 if writer else BUSY_TIMEOUT_MS
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=timeout_ms / 1000)
    conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")
    # FULL: a commit is on disk (WAL fsynced) before the write is acknowledged.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA temp_store = MEMORY")
    # Page cache per connection, in KiB (negative); bounded so that a writer and
    # a few readers stay far below the memory budget.
    conn.execute(f"PRAGMA cache_size = {-65536 if writer else -16384}")
    if not writer:
        conn.execute("PRAGMA query_only = 1")
    return conn


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying another connection holds a lock."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))


def begin_immediate(conn: sqlite3.Connection, wait_s: float = LOCK_WAIT_S) -> None:
    """``BEGIN IMMEDIATE``, polling every millisecond or two while another
    process holds the write lock.

    SQLite's own busy handler sleeps up to 100 ms between tries, so a waiting
    worker sleeps through most moments the lock is free and two workers write
    hardly faster than one; short polls keep the lock in use. Raises the busy
    error after ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.0002
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.002)


def ensure_schema(conn: sqlite3.Connection) -> int:
    """Switch to WAL and create or upgrade the schema; return its version.

    Raises ``RuntimeError`` for a file written by a newer version of the code
    rather than guessing at a layout it does not know.
    """
    mode = _retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
    if str(mode).lower() != "wal":
        raise RuntimeError(f"SQLite refused WAL mode (journal_mode={mode})")
    begin_immediate(conn)
    try:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise RuntimeError(f"store schema version {current} is newer than this code "
                               f"({SCHEMA_VERSION})")
        for step in UPGRADES[current:]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


def _retry_busy(func: Callable[[], T]) -> T:
    """Run ``func`` until it stops failing with a busy error (another process
    switching a fresh file to WAL at the same moment)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return func()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
