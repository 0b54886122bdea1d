"""The batched audit writer for read-path decisions.

A read must not wait for its own audit transaction (the issue's budget for
authentication plus audit is under 10% on reads), yet no record may be lost.
So :meth:`AuditLog.record` only puts the record on a bounded queue, and one
background task appends whatever has gathered — every :attr:`interval` seconds
or as soon as :attr:`batch_size` records wait — in a single store transaction.

* When the queue is full, ``record`` waits for room (back-pressure) instead of
  dropping: an exchange that cannot audit slows down rather than forgets.
* When an append fails (store unreachable), the batch is kept and retried with
  back-off; records behind it wait in order, so the chain order is the order
  in which they were recorded.
* :meth:`flush` returns once everything recorded before it is in the store
  (without waiting out the interval); :meth:`close` refuses new records,
  drains the queue and stops the task.

Writes that must be atomic with their audit record use
:func:`hie.audit.chain.append_in_tx` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hie.audit.chain import Prepared, append, prepare
from hie.audit.model import AuditRecord
from hie.store.base import Store

log = logging.getLogger(__name__)


class AuditLogClosed(RuntimeError):
    """A record arrived after :meth:`AuditLog.close`."""


class AuditLog:
    """Queue audit records and append them to the chain in batches."""

    def __init__(self, store: Store, *, interval: float = 0.05, batch_size: int = 256,
                 max_queue: int = 10_000, max_backoff: float = 5.0) -> None:
        self.store = store
        self.interval = interval
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self._queue: asyncio.Queue[AuditRecord] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._hurry = asyncio.Event()  # a whole batch waits, or someone flushes
        self._progress = asyncio.Condition()
        self._queued = 0  # records accepted so far
        #: Records appended so far (records go out in the order they came in).
        self.written = 0
        #: Appends that failed and were retried.
        self.failures = 0

    async def start(self) -> None:
        """Start the background writer (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-log-writer")

    async def record(self, record: AuditRecord) -> None:
        """Queue ``record``; returns at once unless the queue is full."""
        if self._closed:
            raise AuditLogClosed("the audit log is closed")
        if self._task is None:
            await self.start()
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            await self._queue.put(record)
        self._queued += 1
        if self._queue.qsize() >= self.batch_size:
            self._hurry.set()

    async def flush(self) -> None:
        """Wait until every record accepted before this call is in the store
        (records that keep arriving meanwhile do not make it wait longer)."""
        target = self._queued
        if self.written >= target:
            return
        await self.start()
        self._hurry.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self.written >= target)

    async def close(self, give_up_after: float | None = None) -> None:
        """Refuse new records, write the ones queued, stop the writer.

        With ``give_up_after`` (seconds), stop waiting for an unreachable store
        after that long — shutdown must end — logging how many records were
        not written. By default it waits as long as it takes.
        """
        self._closed = True
        try:
            await asyncio.wait_for(self.flush(), give_up_after)
        except TimeoutError:
            log.error("audit log closed with %d records not written: the store did not "
                      "accept them within %.1fs", self.pending, give_up_after)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def pending(self) -> int:
        """Records accepted and not yet written."""
        return self._queued - self.written

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.qsize() + 1 < self.batch_size and not self._closed:
                # Wait for the interval, or less when a full batch gathers or
                # someone flushes. Waiting on an event (not on queue.get), so a
                # timeout can never lose a record.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self.interval)
            self._hurry.clear()
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            await self._write(batch)
            async with self._progress:
                self.written += len(batch)
                self._progress.notify_all()

    async def _write(self, batch: list[AuditRecord]) -> None:
        """Append ``batch``, retrying with back-off until it is in the store.

        Each record's event is built (:func:`~hie.audit.chain.prepare`) before
        the append takes the write lock, which every write of every worker
        waits for: only the chain fields and the hash are left for inside it.
        """
        prepared: list[Prepared] | None = None
        delay = 0.05
        while True:
            try:
                if prepared is None:  # (a failure here is retried like the append)
                    prepared = [prepare(r) for r in batch]
                await append(self.store, prepared)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                log.exception("audit append of %d records failed; retrying in %.2fs",
                              len(batch), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
