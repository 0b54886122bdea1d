"""The adapter's durable outbox: one SQLite file between the hospital's systems and
the exchange.

A source acknowledges the hospital only after :meth:`Outbox.put` (or
:meth:`Outbox.put_many`, one commit for a whole file) returns, and both return only
once the messages are committed with ``synchronous=FULL``, so an acknowledged
message survives ``kill -9`` and power loss. The pusher takes messages with
:meth:`Outbox.claim` and settles each with :meth:`done`, :meth:`retry` or
:meth:`dead`. Those settlements are committed with ``synchronous=NORMAL`` (no
fsync of their own): in WAL mode they survive ``kill -9``, and a power cut can
only undo the latest of them — a ``done`` undone sends that message once more,
which the sources' idempotent Bundles make harmless — while the next ``put``'s
fsync makes every earlier commit durable too.

Order per patient: a message is claimable only when no older message of the same
``patient_key`` is still waiting, retrying or claimed, so an update never
overtakes the create it depends on. A message about two patients (an HL7 A40
merge) names the second one as ``after``, and waits for its older messages too.
Dead letters (poison messages) do not block their patient: the exchange refused
that message for what it is, and holding every later message of the patient
hostage would lose more than it protects.

Claims are leases (``lease_seconds``): a claimed message that is neither done
nor retried (the process died) becomes claimable again when its lease runs out,
or at once after :meth:`recover`, which the pusher calls when it starts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting',      -- waiting | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    outcome TEXT,
    after_key TEXT          -- another patient whose older messages must go first
);
CREATE INDEX IF NOT EXISTS message_patient ON message (patient_key, id);
CREATE INDEX IF NOT EXISTS message_state ON message (state, not_before, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_CLAIMABLE = """
SELECT id FROM message AS m
WHERE m.state = 'waiting' AND m.not_before <= :now AND m.lease_until <= :now
  AND NOT EXISTS (SELECT 1 FROM message AS o
                  WHERE o.patient_key = m.patient_key AND o.id < m.id AND o.state = 'waiting')
  AND (m.after_key IS NULL
       OR NOT EXISTS (SELECT 1 FROM message AS o WHERE o.patient_key = m.after_key
                      AND o.id < m.id AND o.state = 'waiting'))
ORDER BY m.id LIMIT :limit
"""


@dataclass
class Fresh:
    """Messages put through one :class:`Outbox` object and not claimed yet, as far as
    this process saw them: what the pusher needs to let a batch of instances fill up
    before it sends it. Puts and claims run in different threads, hence the lock."""

    count: int = 0
    kinds: set[str] = field(default_factory=set)
    first: float = 0.0  # time.monotonic() of the oldest put still counted, 0 if none
    last: float = 0.0   # and of the latest
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, count: int, kinds: set[str]) -> None:
        now = time.monotonic()
        with self.lock:
            self.first = self.first or now
            self.last = now
            self.count += count
            self.kinds |= kinds

    def snapshot(self) -> tuple[int, frozenset[str], float, float]:
        """(count, kinds, first, last), read together."""
        with self.lock:
            return self.count, frozenset(self.kinds), self.first, self.last

    def claimed(self, count: int) -> None:
        """``count`` messages were claimed, or their put failed: they no longer wait to
        fill a batch. Puts are noted before their commit, so what a claim finds was
        noted; what is still counted afterwards came after the claim's select."""
        with self.lock:
            self.count = max(0, self.count - count)
            if not self.count:
                self.first = self.last = 0.0
                self.kinds = set()
            elif count:
                self.first = self.last


class NewMessage(NamedTuple):
    """A message for :meth:`Outbox.put_many`."""

    patient_key: str
    payload: bytes
    source: str
    kind: str = "bundle"
    #: another patient's key whose older messages must be delivered first (an A40
    #: merge waits for what was queued for the patient it merges away)
    after: str | None = None


@dataclass(frozen=True)
class Message:
    """A message claimed for sending."""

    id: int
    patient_key: str
    kind: str
    source: str
    payload: bytes
    attempts: int
    created: float


@dataclass(frozen=True)
class DeadLetter:
    """A message the exchange refused (4xx), kept with its ``OperationOutcome``."""

    id: int
    patient_key: str
    source: str
    error: str
    outcome: Any


@dataclass(frozen=True)
class Status:
    """What ``hie-adapter status`` shows."""

    depth: int
    oldest_age_seconds: float | None
    last_error: str | None
    delivered: int
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "oldest_age_seconds": self.oldest_age_seconds,
                "last_error": self.last_error, "delivered": self.delivered,
                "dead_letters": [{"id": d.id, "patient_key": d.patient_key,
                                  "source": d.source, "error": d.error}
                                 for d in self.dead_letters]}


class Outbox:
    """A SQLite outbox (WAL, ``synchronous=FULL``) at ``path``; safe to share between
    threads (one connection per thread) and processes (SQLite locking)."""

    def __init__(self, path: str | Path, *, lease_seconds: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease_seconds = lease_seconds
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # in-process wake-up for the pusher: bumped by every put and by wake()
        self._changed = threading.Condition()
        self._version = 0
        self._fresh = Fresh()
        db = self._db()
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(message)")}
        if "after_key" not in columns:  # an outbox made before after_key existed
            try:
                db.execute("ALTER TABLE message ADD COLUMN after_key TEXT")
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise

    # -- connections ------------------------------------------------------------

    def _db(self, *, durable: bool = True) -> sqlite3.Connection:
        """This thread's connection; ``durable`` ones commit with ``synchronous=FULL``."""
        name = "db" if durable else "db_settle"
        db: sqlite3.Connection | None = getattr(self._local, name, None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk (WAL fsynced) before it returns; that is
            # what lets a source acknowledge the hospital after put(). NORMAL for
            # the pusher's settlements: see the module docstring.
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            db.execute("PRAGMA busy_timeout=30000")
            setattr(self._local, name, db)
            with self._lock:
                self._all.append(db)
        return db

    def _tx(self, *, durable: bool = True) -> _Transaction:
        return _Transaction(self._db(durable=durable))

    def close(self) -> None:
        """Close every connection this object opened (all threads)."""
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- producer ---------------------------------------------------------------

    def put(self, *, patient_key: str, payload: bytes, kind: str = "bundle",
            source: str, after: str | None = None) -> int:
        """Store a message; returns its id once it is committed to disk. ``after``: see
        :class:`NewMessage`."""
        return self.put_many([NewMessage(patient_key, payload, source, kind, after)])[0]

    def put_many(self, messages: Iterable[NewMessage], *,
                 remember: Mapping[str, str] | None = None) -> list[int]:
        """Store ``messages`` in this order, and ``remember`` their source's memos, in one
        commit (one fsync); returns their ids once it is on disk. All or nothing."""
        now = time.time()
        ids = []
        messages = list(messages)
        # noted before the commit, so that a pusher claiming the moment the rows are
        # visible already knows they are fresh (see Pusher._stow_hold)
        self._fresh.note(len(messages), {m.kind for m in messages})
        try:
            if len(messages) == 1 and not remember:
                # one row: the statement is its own transaction (autocommit), as
                # durable and as atomic, without a BEGIN and a COMMIT of its own (the
                # usual case: a C-STORE, an HL7 message; ~10 % of the put's CPU)
                ids.append(self._insert(self._db(), messages[0], now))
            else:
                with self._tx() as db:
                    ids.extend(self._insert(db, m, now) for m in messages)
                    for key, value in (remember or {}).items():
                        self._set_meta(db, f"memo:{key}", value)
        except BaseException:
            self._fresh.claimed(len(messages))  # nothing was stored
            raise
        self.wake()
        return ids

    @staticmethod
    def _insert(db: sqlite3.Connection, m: NewMessage, now: float) -> int:
        cur = db.execute(
            "INSERT INTO message (patient_key, kind, source, payload, created, after_key) "
            "VALUES (?, ?, ?, ?, ?, ?)", (m.patient_key, m.kind, m.source, m.payload, now,
                                          m.after))
        assert cur.lastrowid is not None
        return cur.lastrowid

    @property
    def fresh(self) -> Fresh:
        """What was put through this object since the last :meth:`claim`."""
        return self._fresh

    @property
    def version(self) -> int:
        """Changes every time this object stores messages (or :meth:`wake` is called)."""
        return self._version

    def wake(self) -> None:
        """Wake whoever is in :meth:`wait`."""
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def wait(self, version: int, timeout: float) -> bool:
        """Wait until :attr:`version` differs from ``version`` (a put through this object
        since then), at most ``timeout`` seconds; True if it does. Puts by other
        processes are not seen: the consumer still polls."""
        with self._changed:
            return self._changed.wait_for(lambda: self._version != version, timeout)

    # -- consumer ---------------------------------------------------------------

    def claim(self, limit: int = 16) -> list[Message]:
        """Lease up to ``limit`` sendable messages, at most one per patient, oldest first."""
        now = time.time()
        with self._tx(durable=False) as db:
            ids = [r[0] for r in db.execute(_CLAIMABLE, {"now": now, "limit": limit})]
            self._fresh.claimed(len(ids))
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            db.execute(f"UPDATE message SET lease_until = ? WHERE id IN ({marks})",
                       (now + self.lease_seconds, *ids))
            rows = db.execute(
                "SELECT id, patient_key, kind, source, payload, attempts, created "
                f"FROM message WHERE id IN ({marks}) ORDER BY id", ids).fetchall()
        return [Message(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows]

    def done(self, id: int) -> None:
        """The exchange accepted message ``id``: forget it."""
        with self._tx(durable=False) as db:
            if db.execute("DELETE FROM message WHERE id = ?", (id,)).rowcount:
                db.execute("INSERT INTO meta (key, value) VALUES ('delivered', '1') "
                           "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")

    def done_many(self, ids: Iterable[int]) -> None:
        """The exchange accepted every message of ``ids`` (one STOW-RS answer): forget
        them in one transaction, so that settling a batch does not hold the write lock
        once per message against the source's puts."""
        ids = list(ids)
        if not ids:
            return
        with self._tx(durable=False) as db:
            deleted = db.executemany("DELETE FROM message WHERE id = ?",
                                     [(i,) for i in ids]).rowcount
            if deleted:
                db.execute("INSERT INTO meta (key, value) VALUES ('delivered', ?) "
                           "ON CONFLICT (key) DO UPDATE SET "
                           "value = CAST(value AS INTEGER) + excluded.value", (str(deleted),))

    def retry(self, id: int, error: str, not_before: float) -> None:
        """Sending ``id`` failed for a passing reason; try again at ``not_before`` (epoch s)."""
        with self._tx(durable=False) as db:
            db.execute("UPDATE message SET attempts = attempts + 1, not_before = ?, "
                       "lease_until = 0, last_error = ? WHERE id = ?", (not_before, error, id))
            self._set_meta(db, "last_error", f"message {id}: {error}")

    def dead(self, id: int, outcome_json: str | bytes) -> None:
        """The exchange refused ``id`` (4xx): keep it as a dead letter with the outcome."""
        text = outcome_json.decode("utf-8", "replace") if isinstance(outcome_json, bytes) \
            else outcome_json
        error = _summary(text)
        with self._tx(durable=False) as db:
            db.execute("UPDATE message SET state = 'dead', attempts = attempts + 1, "
                       "lease_until = 0, last_error = ?, outcome = ? WHERE id = ?",
                       (error, text, id))
            self._set_meta(db, "last_error", f"message {id} refused: {error}")

    def requeue(self, id: int) -> bool:
        """Send dead letter ``id`` again (after a fix); False if there is no such dead letter."""
        with self._tx() as db:
            return db.execute("UPDATE message SET state = 'waiting', not_before = 0, "
                              "lease_until = 0, attempts = 0, outcome = NULL "
                              "WHERE id = ? AND state = 'dead'", (id,)).rowcount == 1

    def hasten(self) -> int:
        """Make every message waiting out a backoff due now; returns how many. For when
        the exchange answers again after an outage: what waited for it need not wait
        out the rest of a backoff that grew while it was down."""
        with self._tx(durable=False) as db:
            n = db.execute("UPDATE message SET not_before = 0 "
                           "WHERE state = 'waiting' AND not_before > ?",
                           (time.time(),)).rowcount
        if n:
            self.wake()
        return n

    def recover(self) -> int:
        """Release every lease: the caller is the only consumer and has just started, so
        claims still held belong to a process that died. Returns how many."""
        with self._tx(durable=False) as db:
            return db.execute("UPDATE message SET lease_until = 0 "
                              "WHERE state = 'waiting' AND lease_until > 0").rowcount

    # -- inspection -------------------------------------------------------------

    def status(self) -> Status:
        """Queue depth, oldest waiting message's age, last error, dead letters."""
        db = self._db()
        depth, oldest = db.execute(
            "SELECT count(*), min(created) FROM message WHERE state = 'waiting'").fetchone()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        dead = [DeadLetter(r[0], r[1], r[2], r[3] or "", _loads(r[4])) for r in db.execute(
            "SELECT id, patient_key, source, last_error, outcome FROM message "
            "WHERE state = 'dead' ORDER BY id")]
        return Status(depth=depth, oldest_age_seconds=None if oldest is None
                      else max(0.0, time.time() - oldest),
                      last_error=meta.get("last_error"),
                      delivered=int(meta.get("delivered", 0)), dead_letters=dead)

    def next_due(self) -> float | None:
        """When the earliest waiting message may be tried (epoch s), or None if none waits."""
        row = self._db().execute("SELECT min(max(not_before, lease_until)) FROM message "
                                 "WHERE state = 'waiting'").fetchone()
        return row[0]

    # -- small key/value memory for sources (e.g. local patient id → identifier) --

    def remember(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` (durably) for a source's later runs."""
        with self._tx() as db:
            self._set_meta(db, f"memo:{key}", value)

    def recall(self, key: str) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?",
                                 (f"memo:{key}",)).fetchone()
        return row[0] if row else None

    @staticmethod
    def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on error): immediate so that two
    claimers never both read the same sendable rows before either writes."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _summary(outcome_text: str) -> str:
    """A one-line reason from an ``OperationOutcome`` (or whatever the body was)."""
    body = _loads(outcome_text)
    if isinstance(body, dict) and isinstance(body.get("issue"), list):
        parts = []
        for issue in body["issue"][:3]:
            if isinstance(issue, dict):
                text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") \
                    or issue.get("code", "")
                where = ",".join(issue.get("expression") or [])
                parts.append(f"{text} ({where})" if where else str(text))
        return "; ".join(parts)[:500]
    return outcome_text[:500]
