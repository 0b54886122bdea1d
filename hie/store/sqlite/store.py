"""The SQLite store: the async :class:`~hie.store.base.Store` over stdlib ``sqlite3``.

Threads, not the event loop, touch SQLite — except inside a write transaction
and for reads of one resource by key (:meth:`SQLiteStore._read_by_key`):

* one **writer** connection. An ``asyncio.Lock`` lets one
  :meth:`SQLiteStore.transact` at a time use it, and each write transaction
  starts with ``BEGIN IMMEDIATE`` (on a single-thread executor, as it may wait
  for another process), which takes SQLite's write lock at once. So a
  transaction holds the write lock for the whole of ``fn``, across this
  process (the asyncio lock) and other processes sharing the file (SQLite's
  lock, waited for by :func:`~.schema.begin_immediate`): a conditional
  create's search-then-create cannot interleave with another, and
  ``lock(key)`` has nothing left to do.
* the statements *inside* a transaction (its savepoint, reads, ``put``s) run
  on the event loop's thread, synchronously. They are short index lookups and
  batched inserts, while a trip to a thread costs a future and two GIL
  hand-offs, each waiting behind whatever else the process is doing
  (validating the next Bundle): a Bundle's transaction made a dozen such trips
  and held the write lock — which every other worker waits for — mostly
  waiting for its own process. A big ``put_many`` (more than
  :data:`INLINE_ROWS` rows, e.g. a whole Bundle) still goes to the writer
  thread: one trip, and the loop keeps serving requests meanwhile.
  ``COMMIT`` (the fsync) stays on the executor: it releases the GIL and the
  loop serves other requests meanwhile. WAL checkpoints are not the commit's
  (:mod:`.checkpoint`: a thread of their own, outside the write lock). Only
  one coroutine uses the connection at a time (the asyncio lock), and the
  executor's work for a transaction is awaited before the next one touches
  the connection.
* a small pool of **reader** connections in their own executor. In WAL mode
  readers never wait for the writer and see the last committed state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from hie.store.base import (
    StoredResource,
    StoreError,
    StoreUnavailable,
    Transaction,
    WriteRecord,
)
from hie.store.query import Cursor, Page, Restriction, SearchQuery
from hie.store.sqlite import records, writes
from hie.store.sqlite.checkpoint import BACKSTOP_PAGES, Checkpointer
from hie.store.sqlite.compile import compile_count, compile_search
from hie.store.sqlite.planner import choose_driver
from hie.store.sqlite.schema import begin_immediate, connect, ensure_schema, is_busy

T = TypeVar("T")

#: How often a transaction is re-run when a statement inside it (or the
#: commit) finds the file busy — rare in WAL mode once the write lock is held.
BUSY_RETRIES = 5


#: Most index and version rows a ``put_many`` writes on the event loop's thread;
#: a bigger one goes to the writer thread (see the module docstring).
INLINE_ROWS = 64


#: Most transactions committed by one fsync (bounds how long the first waits).
GROUP_COMMIT_MAX = 32


@dataclass(slots=True)
class _Batch:
    """One write transaction shared by transact() callers (group commit)."""

    committed: asyncio.Future[None]
    members: int = 0
    flush_queued: bool = False


class SQLiteStore:
    """The embedded document store in one SQLite file (WAL, ``synchronous=FULL``)."""

    def __init__(self, path: str, *, readers: int = 4) -> None:
        self.path = path
        self._reader_count = readers
        self._writer: sqlite3.Connection | None = None
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []
        self._key_reader: sqlite3.Connection | None = None  # see _read_by_key
        self._write_exec: ThreadPoolExecutor | None = None
        self._read_exec: ThreadPoolExecutor | None = None
        self._write_lock = asyncio.Lock()
        self._waiting = 0  # transact() callers waiting for the lock
        self._batch: _Batch | None = None  # the open group-commit transaction
        self._checkpointer: Checkpointer | None = None  # WAL checkpoints off the lock

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise ValueError(f"not a SQLite store URL (sqlite:///path/to/file.db): {url!r}")
        return cls(url[len(prefix):])

    # ---- lifecycle --------------------------------------------------------

    async def open(self) -> None:
        """Create the folder and the file, switch to WAL, create or upgrade the
        schema, and connect the writer and the readers."""
        self._write_exec = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
        self._read_exec = ThreadPoolExecutor(self._reader_count,
                                             thread_name_prefix="sqlite-read")

        def start() -> sqlite3.Connection:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            conn = connect(self.path, writer=True)
            try:
                ensure_schema(conn)
                # checkpoints are the Checkpointer's; the writer's own is a backstop
                conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            except BaseException:
                conn.close()
                raise
            return conn

        self._writer = await self._on_writer(start)
        for _ in range(self._reader_count):
            conn = await self._on_reader_thread(functools.partial(connect, self.path,
                                                                  writer=False))
            self._readers.append(conn)
            self._idle.put(conn)
        self._key_reader = await self._on_reader_thread(
            functools.partial(connect, self.path, writer=False))
        self._checkpointer = Checkpointer(functools.partial(connect, self.path, writer=False))
        await self._on_writer(self._checkpointer.start)

    async def close(self) -> None:
        """Close every connection once the work already started on it is done,
        and stop the threads."""
        if self._write_exec is None or self._read_exec is None:
            return
        async with self._write_lock:
            if self._batch is not None:
                await self._finish(self._batch)
            if self._writer is not None:
                await self._on_writer(self._writer.close)
                self._writer = None
            readers, self._readers = self._readers, []
            if self._key_reader is not None:
                self._key_reader.close()
                self._key_reader = None

            def close_readers() -> None:
                # each connection is taken back from the idle queue first, so
                # one still serving a read is closed only after that read
                for _ in readers:
                    self._idle.get().close()

            await self._on_reader_thread(close_readers)
            if self._checkpointer is not None:
                await self._on_writer(self._checkpointer.stop)
                self._checkpointer = None
            self._write_exec.shutdown(wait=False)
            self._read_exec.shutdown(wait=False)
            self._write_exec = self._read_exec = None

    async def ping(self) -> bool:
        try:
            return await self._read(lambda conn: conn.execute("SELECT 1").fetchone()[0] == 1)
        except (sqlite3.Error, StoreError):
            return False

    # ---- writes -------------------------------------------------------------

    async def transact(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``fn`` holding the write lock; commit, or roll back and re-raise.

        Group commit: each ``fn`` runs in its own savepoint of a write
        transaction that callers already waiting for the lock join, so one
        fsync commits them all (``synchronous=FULL`` makes the fsync, not the
        work, the cost of a small write). A caller returns only once the
        transaction holding its writes has committed; a failing ``fn`` rolls
        back its own savepoint only. ``fn`` is re-run (after rolling back its
        savepoint) when SQLite reports the file busy. Do not call ``transact``
        from inside ``fn``: it would wait for itself.
        """
        self._waiting += 1
        try:
            await self._write_lock.acquire()
        finally:
            self._waiting -= 1
        try:
            batch = self._batch
            if batch is None:
                await self._on_writer(self._begin)
                batch = self._batch = _Batch(asyncio.get_running_loop().create_future())
            result = await self._in_savepoint(fn, batch)
            batch.members += 1
            if self._waiting and batch.members < GROUP_COMMIT_MAX:
                # leave the transaction open for the next caller in line; a flush
                # queued behind the waiters commits it if none of them does
                if not batch.flush_queued:
                    batch.flush_queued = True
                    asyncio.get_running_loop().create_task(self._flush(batch))
            else:
                await self._finish(batch)
        finally:
            self._write_lock.release()
        await asyncio.shield(batch.committed)
        return result

    async def _in_savepoint(self, fn: Callable[[Transaction], Awaitable[T]],
                            batch: _Batch) -> T:
        name = f"t{batch.members}"
        for attempt in range(BUSY_RETRIES):
            self._writer_conn().execute(f"SAVEPOINT {name}")
            tx = SQLiteTransaction(self)
            try:
                result = await fn(tx)
                self._writer_conn().execute(f"RELEASE {name}")
                return result
            except BaseException as exc:
                # synchronous: a cancelled request must still undo its own writes,
                # before the next member of the batch uses the connection
                self._undo(name)
                if is_busy(exc) and attempt + 1 < BUSY_RETRIES:
                    continue
                if is_busy(exc):
                    raise StoreUnavailable("the store file stayed locked") from exc
                raise
            finally:
                tx.closed = True
        raise StoreUnavailable("the store file stayed locked")  # pragma: no cover

    async def _finish(self, batch: _Batch) -> None:
        """Commit the open transaction (the lock is held) and tell its members."""
        self._batch = None
        try:
            await asyncio.shield(self._on_writer(self._commit))
        except BaseException as exc:
            await asyncio.shield(self._on_writer(self._rollback))
            if not batch.committed.done():
                batch.committed.set_exception(exc)
            raise
        if not batch.committed.done():
            batch.committed.set_result(None)

    async def _flush(self, batch: _Batch) -> None:
        """Commit ``batch`` if nobody in line did (runs after the waiters)."""
        async with self._write_lock:
            if self._batch is batch:
                # a failed commit was told to the members through the future
                with contextlib.suppress(Exception):
                    await self._finish(batch)

    def _begin(self) -> None:
        conn = self._writer_conn()
        if conn.in_transaction:
            # left by a transact() cancelled while its BEGIN was queued: nobody
            # owns it any more (the asyncio lock was released), so drop it
            conn.execute("ROLLBACK")
        try:
            begin_immediate(conn)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"cannot start a write: {exc}") from exc

    def _commit(self) -> None:
        self._writer_conn().execute("COMMIT")
        if self._checkpointer is not None:
            self._checkpointer.poke()

    def _rollback(self) -> None:
        conn = self._writer
        if conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")

    def _undo(self, savepoint: str) -> None:
        """Roll back one member's savepoint, keeping the others' work."""
        conn = self._writer
        if conn is not None and conn.in_transaction:
            try:
                conn.execute(f"ROLLBACK TO {savepoint}")
                conn.execute(f"RELEASE {savepoint}")
            except sqlite3.OperationalError:  # the savepoint is already gone
                pass

    # ---- reads --------------------------------------------------------------

    async def read(self, resource_type: str, id: str, *,
                   restriction: Restriction | None = None) -> StoredResource | None:
        return self._read_by_key(records.read_current, resource_type, id, restriction)

    async def read_version(self, resource_type: str, id: str, version: int, *,
                           restriction: Restriction | None = None) -> StoredResource | None:
        return self._read_by_key(records.read_version, resource_type, id, version,
                                 restriction)

    async def read_many(self, keys: Iterable[tuple[str, str]], *,
                        restriction: Restriction | None = None) -> list[StoredResource]:
        return await self._read(records.read_many, list(keys), restriction)

    async def search(self, query: SearchQuery, *, limit: int,
                     cursor: Cursor | None = None) -> Page:
        """One page, fetching ``limit + 1`` rows to know whether there is a next."""
        if limit < 1:
            return Page(resources=[], next=None)
        cursor = cursor or Cursor()

        def run(conn: sqlite3.Connection) -> tuple[list[StoredResource], int | None]:
            if not query.sort:
                return _page(conn, query, limit + 1, cursor), None
            snapshot = cursor.snapshot_seq
            if snapshot is None:
                snapshot = _max_seq(conn)
            driver = choose_driver(conn, query, walk=False, max_seq=snapshot)
            statement = compile_search(query, limit=limit + 1, cursor=cursor,
                                       snapshot_seq=snapshot, driver=driver)
            return records.fetch_page(conn, statement), snapshot

        rows, snapshot = await self._read(run)
        page = Page(resources=rows[:limit], snapshot_seq=snapshot)
        if len(rows) > limit:
            if query.sort:
                page.next = Cursor(offset=cursor.offset + limit, snapshot_seq=snapshot)
            else:
                page.next = Cursor(after_seq=rows[limit - 1].seq)
        return page

    async def count(self, query: SearchQuery) -> int:
        def run(conn: sqlite3.Connection) -> int:
            statement = compile_count(query, driver=choose_driver(conn, query, walk=False))
            return conn.execute(statement.sql, statement.params).fetchone()[0]

        return await self._read(run)

    async def history(
        self, *, resource_type: str | None = None, id: str | None = None,
        since: str | None = None, before: str | None = None,
        limit: int, offset: int = 0, restriction: Restriction | None = None,
    ) -> tuple[list[StoredResource], int]:
        return await self._read(functools.partial(
            records.history, resource_type=resource_type, id=id, since=since, before=before,
            limit=limit, offset=offset, restriction=restriction))

    async def max_seq(self) -> int:
        return await self._read(_max_seq)

    # ---- threads ------------------------------------------------------------

    def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreError("the SQLite store is not open")
        return self._writer

    async def _on_writer(self, func: Callable[..., T], *args: Any) -> T:
        if self._write_exec is None:
            raise StoreError("the SQLite store is not open")
        return await asyncio.get_running_loop().run_in_executor(
            self._write_exec, functools.partial(func, *args))

    async def _on_reader_thread(self, func: Callable[..., T], *args: Any) -> T:
        if self._read_exec is None:
            raise StoreError("the SQLite store is not open")
        return await asyncio.get_running_loop().run_in_executor(
            self._read_exec, functools.partial(func, *args))

    async def _read(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(conn, *args)`` on an idle reader connection (there are as
        many connections as reader threads, so one is always free)."""
        return await self._on_reader_thread(self._with_reader, func, *args)

    def _read_by_key(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(conn, *args)`` — a read of one resource by its key —
        right here on the event loop's thread, on a reader connection of its
        own. Such a read is a few B-tree lookups (microseconds), while the
        trip to a reader thread costs ~0.1 ms on this kind of machine; a
        search by patient makes two of them before it searches. In WAL mode
        a reader never waits for a lock (except while another process
        recovers the WAL after a crash)."""
        if self._key_reader is None:
            raise StoreError("the SQLite store is not open")
        return func(self._key_reader, *args)

    def _with_reader(self, func: Callable[..., T], *args: Any) -> T:
        conn = self._idle.get()
        try:
            return func(conn, *args)
        finally:
            self._idle.put(conn)


class SQLiteTransaction:
    """The :class:`~hie.store.base.Transaction` of :meth:`SQLiteStore.transact`:
    every call runs on the writer connection, so reads see the writes made so far."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._state = writes.WriteState()
        self.closed = False

    async def read(self, resource_type: str, id: str) -> StoredResource | None:
        return await self._run(records.read_current, resource_type, id, None)

    async def search_keys(self, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
        if limit < 1:
            return []
        rows = await self._run(lambda conn: _page(conn, query, limit, Cursor()))
        return [(row.resource_type, row.id) for row in rows]

    async def lock(self, key: str) -> None:
        """Nothing to do: the transaction already holds the store's write lock."""
        self._check()

    async def put(self, record: WriteRecord) -> int:
        return await self._run(writes.put, self._state, record)

    async def put_many(self, records: Sequence[WriteRecord]) -> list[int]:
        """All of ``records`` at once (a Bundle's versions, an audit append):
        the ``versions`` and index rows go in with one ``executemany`` per
        table (:func:`.writes.put_many`)."""
        if not records:
            self._check()
            return []
        if writes.row_count(records) <= INLINE_ROWS:
            return await self._run(writes.put_many, self._state, records)
        # a big batch (an audit event naming a thousand resources) would stall
        # every request of the process for milliseconds: on the writer thread
        self._check()
        return await self._store._on_writer(writes.put_many, self._store._writer_conn(),
                                            self._state, records)

    def _check(self) -> None:
        if self.closed:
            raise StoreError("the transaction has ended")

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        """``func(writer connection, *args)`` right here on the event loop's
        thread (see the module docstring for why not on the writer thread)."""
        self._check()
        return func(self._store._writer_conn(), *args)


def _page(conn: sqlite3.Connection, query: SearchQuery, limit: int,
          cursor: Cursor) -> list[StoredResource]:
    """Up to ``limit`` matches of an unsorted ``query`` after ``cursor``."""
    driver = choose_driver(conn, query, walk=True, after_seq=cursor.after_seq)
    return records.fetch_page(conn, compile_search(query, limit=limit, cursor=cursor,
                                                   driver=driver))


def _max_seq(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(seq), 0) FROM resources").fetchone()[0]
