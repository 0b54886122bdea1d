"""WAL checkpoints on a thread of their own, outside the write lock.

By default SQLite checkpoints inside ``COMMIT``: the commit that takes the WAL
past 1,000 pages copies them into the database file and fsyncs it, while its
connection still holds the write lock. Under a steady write load that is most
commits (a group commit of a few Bundles writes more than 1,000 pages), so the
lock — which every other transaction of this process and of every other worker
waits for — was held ~10 ms longer per commit for work no transaction needs.

Here the writer's automatic checkpoint is only a backstop
(:data:`BACKSTOP_PAGES`); a :class:`Checkpointer` thread runs a ``PASSIVE``
checkpoint on its own connection shortly after commits. A passive checkpoint
takes no write lock: writers and readers go on meanwhile (SQLite copies only
frames no reader still needs), and it never waits (another process's
checkpoint in progress just makes this one a no-op). The GIL is released while
SQLite works, so the copy runs on the otherwise idle core. Durability is not
touched: a commit is durable once its WAL frames are fsynced
(``synchronous=FULL``), before any checkpoint.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

#: The writer's own automatic checkpoint, in pages: reached only if the thread
#: falls behind or fails (64 MiB of WAL with 4 KiB pages).
BACKSTOP_PAGES = 16384
#: Shortest time between two checkpoints (s): commits in between are copied
#: by one checkpoint, and the database file is fsynced once for them.
MIN_INTERVAL = 0.1
#: A checkpoint runs at least this often while anything is left to copy (s).
IDLE_INTERVAL = 5.0


class Checkpointer:
    """A daemon thread that checkpoints the WAL of one database file."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *,
                 min_interval: float = MIN_INTERVAL) -> None:
        self._connect = connect
        self._min_interval = min_interval
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: Checkpoints run so far, and the last one's (busy, WAL frames, frames copied).
        self.runs = 0
        self.last: tuple[int, int, int] | None = None

    def start(self) -> None:
        conn = self._connect()  # in the caller's thread: a bad path fails here
        self._thread = threading.Thread(target=self._run, args=(conn,),
                                        name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A commit happened: checkpoint soon (cheap; called after every commit)."""
        self._wanted.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Run a last checkpoint and end the thread."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wanted.set()
        self._thread.join(timeout)
        self._thread = None

    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                self._wanted.wait(IDLE_INTERVAL)
                self._wanted.clear()
                self._checkpoint(conn)
                if self._stopping.is_set():
                    return
                # let commits gather; stop() cuts the wait short
                self._stopping.wait(self._min_interval)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the backstop still bounds the WAL
            log.warning("WAL checkpoint failed: %s", exc)
            return
        self.runs += 1
        self.last = (int(row[0]), int(row[1]), int(row[2]))
