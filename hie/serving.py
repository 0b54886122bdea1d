"""``hie serve --workers N``: worker processes that take turns accepting.

uvicorn's own multi-process mode gives every worker the listening socket and
lets each accept whatever arrives: a worker that wakes first takes every
connection waiting (libuv accepts until the queue is empty). Hospital systems
keep a few connections open for hours (adapters, PACS bridges), so the few
that arrive together — an adapter restarting with eight connections — often
all land on one worker and stay there while the others idle: the ingest
benchmark saw 8/0, 7/1 and 6/2 splits of its eight connections, and two
workers then did no more than one.

Here the workers still share one listening socket, but each publishes how many
connections it holds (a shared array, :class:`Board`) and accepts only while
it holds no more than the least loaded live worker; a worker that holds more
leaves the socket to the others for 2 ms at a time, and takes the
connection itself if nobody has after :data:`MAX_DEFERRALS` tries (the others
may be busy or gone). Requests are never refused or delayed beyond that, except
at start-up: until every worker is up (at most :data:`STARTUP_WAIT_SECONDS`),
connections wait in the listen queue, or the first worker up would take them all.

The rest is uvicorn: each worker is a ``uvicorn.Server`` whose accept loop is
:class:`Acceptor` instead of ``loop.create_server``, run by a small
:class:`Supervisor` that restarts a worker that dies and stops them all on
``SIGINT``/``SIGTERM``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

log = logging.getLogger("uvicorn.error")

#: How long a worker holding more connections than another leaves a waiting
#: connection to the others (s), and how many times before it takes it.
DEFER_SECONDS = 0.002
MAX_DEFERRALS = 25
#: At start-up, how long a worker waits for the others before it accepts
#: alone (s), and how often it looks (s): as often as a deferring worker, so
#: that one still waiting does not leave the first connections to the worker
#: that came up last.
STARTUP_WAIT_SECONDS = 30.0
STARTUP_POLL_SECONDS = DEFER_SECONDS
#: A worker that dies within this long of starting did not start (s); after
#: :data:`MAX_QUICK_DEATHS` of those in a row the supervisor gives up.
QUICK_DEATH_SECONDS = 10.0
MAX_QUICK_DEATHS = 3

_SPAWN = multiprocessing.get_context("spawn")


class Board:
    """Open connections per worker slot, in memory the workers share; -1 for
    a slot with no live worker. One more cell says whether every worker has
    been up at once (the server has started)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.counts = _SPAWN.Array("q", [-1] * slots + [0], lock=False)

    def set(self, slot: int, count: int) -> None:
        self.counts[slot] = count

    def least_other(self, slot: int) -> int | None:
        """The fewest connections any other live worker holds (None: none live).

        A worker writes its count when it accepts and when a connection ends."""
        others = [c for i, c in enumerate(self.counts[:self.slots]) if i != slot and c >= 0]
        return min(others) if others else None

    def started(self) -> bool:
        """Whether every worker has been up at once (noted the first time)."""
        if self.counts[self.slots]:
            return True
        if all(c >= 0 for c in self.counts[:self.slots]):
            self.counts[self.slots] = 1
            return True
        return False


class Acceptor:
    """Accepts connections on a shared listening socket for one worker,
    taking turns with the others through the :class:`Board`. Quacks like the
    ``asyncio.Server`` uvicorn keeps in ``Server.servers``."""

    def __init__(self, sock: socket.socket, protocol_factory: Callable[[], asyncio.Protocol],
                 *, board: Board, slot: int, held: Callable[[], int], ssl: Any = None) -> None:
        self._sock = sock
        self._factory = protocol_factory
        self._board = board
        self._slot = slot
        self._held = held  # connections this worker holds now
        self._ssl = ssl
        self._loop = asyncio.get_running_loop()
        self._deferrals = 0
        self._connecting = 0  # accepted, not yet handed to uvicorn (not in held())
        self._resume: asyncio.TimerHandle | None = None
        self._closed = False
        self._start_deadline = time.monotonic() + STARTUP_WAIT_SECONDS
        self._tasks: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        board.set(slot, held())
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        if not self._board.started() and time.monotonic() < self._start_deadline:
            # At start-up connections wait until every worker can take them:
            # the first worker up would take them all, for good (they are kept
            # alive), while the others are still importing.
            self._pause(STARTUP_POLL_SECONDS)
            return
        held = self._held() + self._connecting
        self._board.set(self._slot, held)
        least = self._board.least_other(self._slot)
        if least is not None and held > least and self._deferrals < MAX_DEFERRALS:
            self._deferrals += 1
            self._pause(DEFER_SECONDS)
            return
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):  # another worker took it
            return
        except OSError as exc:  # out of file descriptors, say: back off a little
            log.warning("accept failed: %s", exc)
            self._pause(0.1)
            return
        self._deferrals = 0
        self._connecting += 1
        self._board.set(self._slot, held + 1)
        conn.setblocking(False)
        task = self._loop.create_task(self._connect(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pause(self, seconds: float) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._resume = self._loop.call_later(seconds, self._listen)

    def _listen(self) -> None:
        self._resume = None
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._readable)

    def _protocol(self) -> asyncio.Protocol:
        """uvicorn's protocol, telling the board when its connection ends (so
        the others see this worker's count go down, not only up)."""
        protocol = self._factory()
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            lost(exc)
            if not self._closed:
                self._board.set(self._slot, self._held() + self._connecting)

        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol, conn, ssl=self._ssl)
        except asyncio.CancelledError:
            conn.close()
            raise
        except (OSError, ValueError) as exc:  # the peer left, a TLS handshake failed…
            conn.close()
            log.warning("could not take a connection: %s", exc)
        finally:
            self._connecting -= 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._board.set(self._slot, -1)

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class TurnTakingServer(uvicorn.Server):
    """A uvicorn worker whose accept loop is an :class:`Acceptor`."""

    def __init__(self, config: uvicorn.Config, *, board: Board, slot: int) -> None:
        super().__init__(config)
        self.board = board
        self.slot = slot

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if not sockets:
            await super().startup(sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state,
                app_state=self.lifespan.state)

        connections = self.server_state.connections
        self.servers = [Acceptor(sock, create_protocol, board=self.board, slot=self.slot,  # type: ignore[list-item]
                                 held=lambda: len(connections), ssl=config.ssl)
                        for sock in sockets]
        self.started = True


def _worker(config: uvicorn.Config, sock: socket.socket, board: Board, slot: int) -> None:
    """The body of a worker process."""
    config.configure_logging()
    with contextlib.suppress(KeyboardInterrupt):
        TurnTakingServer(config, board=board, slot=slot).run(sockets=[sock])


class Supervisor:
    """Starts ``config.workers`` workers on one listening socket, restarts one
    that dies, and stops them all on ``SIGINT``/``SIGTERM``."""

    def __init__(self, config: uvicorn.Config) -> None:
        self.config = config
        self.board = Board(config.workers)
        self.processes: list[Any] = [None] * config.workers
        self.started_at = [0.0] * config.workers
        self.quick_deaths = 0
        self._stop = False

    def run(self) -> int:
        sock = self.config.bind_socket()
        sock.listen(self.config.backlog)  # (loop.create_server would have)
        log.info("Started parent process [%d]", os.getpid())
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            for slot in range(self.config.workers):
                self._spawn(slot, sock)
            while not self._stop:
                time.sleep(0.5)
                for slot, proc in enumerate(self.processes):
                    if proc.is_alive() or self._stop:
                        continue
                    quick = time.monotonic() - self.started_at[slot] < QUICK_DEATH_SECONDS
                    self.quick_deaths = self.quick_deaths + 1 if quick else 0
                    if self.quick_deaths >= MAX_QUICK_DEATHS:
                        log.error("workers keep dying at start; stopping")
                        return STARTUP_FAILURE
                    log.warning("worker [%s] died (exit code %s); starting another",
                                proc.pid, proc.exitcode)
                    self._spawn(slot, sock)
            return 0
        finally:
            self._stop_all()
            sock.close()
            log.info("Stopping parent process [%d]", os.getpid())

    def _spawn(self, slot: int, sock: socket.socket) -> None:
        self.board.set(slot, -1)
        proc = _SPAWN.Process(target=_worker, args=(self.config, sock, self.board, slot),
                              name=f"hie-worker-{slot}")
        proc.start()
        self.processes[slot] = proc
        self.started_at[slot] = time.monotonic()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop = True

    def _stop_all(self) -> None:
        live = [p for p in self.processes if p is not None and p.is_alive()]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        grace = (self.config.timeout_graceful_shutdown or 30) + 5
        deadline = time.monotonic() + grace
        for proc in live:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def serve(config: uvicorn.Config) -> int:
    """Run the exchange as ``config`` says: one process, or a supervisor and
    ``config.workers`` turn-taking workers."""
    if config.workers <= 1:
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down
            server.run()
        return 0 if server.started else STARTUP_FAILURE
    return Supervisor(config).run()
