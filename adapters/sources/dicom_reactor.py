"""Prompt reactors for pynetdicom associations: no millisecond naps between C-STOREs.

pynetdicom 3 runs each association with two polling loops, and both sleep when
they find nothing to do: the DUL reactor (socket ↔ PDUs) naps
``DULServiceProvider._run_loop_delay`` (1 ms) and the association reactor (DIMSE
messages → our handler) a fixed 1 ms. A sender that waits for each C-STORE
response before sending the next instance (``storescu``, most modalities) meets
both naps on every instance: a do-nothing pynetdicom SCP takes ~350 instances/s
from ``storescu``, while the sender and the wire allow several times that.

:func:`make_prompt` keeps pynetdicom's own loops (same states, timers, release
and abort handling) and changes only how they wait: each loop gets a copy of its
function whose ``time.sleep`` returns as soon as there is work, i.e.

- the DUL reactor waits on ``select`` for the socket to be readable or for a
  primitive to send (our C-STORE response wakes it through a socket pair), at
  most ``_run_loop_delay`` so that its timers are checked as before;
- the association reactor waits for a DIMSE message on its queue, at most 1 ms.

So an idle association costs what it did (one wake-up per millisecond per loop)
and a busy one answers without naps. When pynetdicom's loops no longer look like
this (another major version), nothing is changed and the defaults apply.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import time
import types
from typing import Any

log = logging.getLogger(__name__)


def _sleeping_copy(function: types.FunctionType, sleep: Any) -> types.FunctionType | None:
    """``function`` with ``time.sleep`` in its globals replaced by ``sleep``; None when
    it does not call ``time.sleep`` (a pynetdicom we do not know)."""
    names = function.__code__.co_names
    if "time" not in names or "sleep" not in names:
        return None
    shim = types.SimpleNamespace(sleep=sleep)
    copy = types.FunctionType(function.__code__, {**function.__globals__, "time": shim},
                              function.__name__, function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


class _WakingQueue(queue.Queue):
    """The DUL's outgoing queue: every put also wakes the DUL reactor's ``select``."""

    def __init__(self) -> None:
        super().__init__()
        self.wake: socket.socket | None = None

    def _put(self, item: Any) -> None:
        super()._put(item)
        if self.wake is not None:
            with contextlib.suppress(OSError):  # full (already awake) or closed (ending)
                self.wake.send(b"\0")


def make_prompt(assoc: Any) -> bool:
    """Give the acceptor association ``assoc`` (from an ``EVT_CONN_OPEN`` handler,
    before its threads start) loops that wait for work instead of napping. Returns
    False, changing nothing, when this pynetdicom's loops are not the expected ones."""
    dul = assoc.dul
    dul_loop = type(dul).run_reactor
    assoc_loop = type(assoc)._run_reactor
    messages = getattr(assoc.dimse, "msg_queue", None)
    outgoing = getattr(dul, "to_provider_queue", None)
    if not (isinstance(dul_loop, types.FunctionType)
            and isinstance(assoc_loop, types.FunctionType)
            and isinstance(messages, queue.Queue) and isinstance(outgoing, queue.Queue)
            and outgoing.empty() and not dul.is_alive()):
        return False
    sending = _WakingQueue()
    woken: list[socket.socket] = []  # the DUL thread's end of the wake-up pair

    def dul_wait(seconds: float) -> None:
        sock = getattr(dul.socket, "socket", None)
        watch = woken if sock is None else [*woken, sock]
        try:
            ready, _, _ = select.select(watch, [], [], seconds)
        except (OSError, ValueError):  # the connection closed under us: let the loop see it
            time.sleep(seconds)
            return
        if woken and woken[0] in ready:
            with contextlib.suppress(OSError):
                woken[0].recv(4096)

    def assoc_wait(seconds: float) -> None:
        with messages.not_empty:
            if not messages._qsize():
                messages.not_empty.wait(seconds)

    dul_copy = _sleeping_copy(dul_loop, dul_wait)
    assoc_copy = _sleeping_copy(assoc_loop, assoc_wait)
    if dul_copy is None or assoc_copy is None:
        return False

    def run_dul() -> None:
        # the pair lives as long as the DUL thread: nothing to close if it never starts
        mine, theirs = socket.socketpair()
        mine.setblocking(False)
        theirs.setblocking(False)
        woken.append(mine)
        sending.wake = theirs
        try:
            dul_copy(dul)
        finally:
            sending.wake = None
            woken.clear()
            mine.close()
            theirs.close()

    dul.to_provider_queue = sending
    dul.run = run_dul  # Thread.run: the thread's target was bound at __init__
    assoc._run_reactor = types.MethodType(assoc_copy, assoc)
    return True
