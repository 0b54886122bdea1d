"""The pusher: drains the outbox into the exchange, in order per patient.

Delivery is *at least once*: a message is deleted from the outbox only after the
exchange answered 2xx, so a crash between the exchange's commit and our
``done`` sends it again. It is *exactly once in effect* because of the rule every
source follows (see ``docs/adapters.md``): each entry of a Bundle is a
conditional update (``PUT Type?identifier=system|value``) or a conditional
create (``ifNoneExist``) on the hospital's own identifiers, so a second copy
matches what the first one wrote instead of creating a duplicate.

Messages of different patients are sent in parallel: ``workers`` requests are kept
in flight, a slot freed by one answer is refilled at once (a backfill keeps the
exchange busy instead of waiting for the slowest of a batch), and a put into the
outbox wakes an idle pusher at once. The outbox never hands out two messages of one
patient at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any

from adapters import stow
from adapters.client import ExchangeClient, Result, backoff
from adapters.outbox import Message, Outbox

log = logging.getLogger("adapters.pusher")


class Pusher:
    """Sends what the outbox holds with ``client``; ``run`` until stopped or ``drain``."""

    def __init__(self, outbox: Outbox, client: ExchangeClient, *, workers: int = 8,
                 idle_poll: float = 0.5, max_delay: float = 300.0,
                 stow_flights: int = 2, stow_linger: float = 0.25,
                 stow_quiet: float = 0.02) -> None:
        self.outbox = outbox
        self.client = client
        self.workers = workers
        #: STOW-RS requests in flight at most; while they are, nothing more is claimed,
        #: so instances queued meanwhile go together in the next request (see run)
        self.stow_flights = stow_flights
        #: instances being received are held up to ``stow_linger`` seconds (until
        #: ``stow.BATCH`` of them, or ``stow_quiet`` seconds without a new one) so that
        #: they go in one request (see _stow_hold)
        self.stow_linger = stow_linger
        self.stow_quiet = stow_quiet
        self.idle_poll = idle_poll
        self.max_delay = max_delay
        self.stopping = threading.Event()
        self.draining = threading.Event()
        self.unreachable = False  # the last answer was no answer (network error)
        self.sent = 0
        self.refused = 0
        self.on_sent: Callable[[Message], None] | None = None
        self.thread: threading.Thread | None = None  # set by start()
        outbox.recover()

    def send(self, message: Message) -> Result:
        """Send one claimed message and settle it in the outbox."""
        if message.kind == "dicom":
            return self.send_dicom([message])
        post = {"bundle": self.client.post_bundle,  # a transaction Bundle
                "merge": self.client.post_merge}.get(message.kind)  # an HL7 A40
        if post is None:
            # a kind this adapter does not know how to send: kept as a dead letter
            # (visible, requeueable after an upgrade) rather than sent somewhere it
            # would be misread
            result = Result("poison", None, json.dumps(_outcome(
                f"no exchange endpoint for outbox messages of kind {message.kind!r}"
                )).encode(), f"unsupported kind {message.kind!r}")
            self.outbox.dead(message.id, result.body)
            self.refused += 1
            return result
        result = post(message.payload)
        if result.outcome == "ok":
            self.outbox.done(message.id)
            self.sent += 1
            if self.on_sent:
                self.on_sent(message)
        elif result.outcome == "poison":
            self.outbox.dead(message.id, result.body or result.error.encode())
            self.refused += 1
            log.warning("message %s refused by the exchange: %s", message.id, result.error)
        else:
            delay = backoff(message.attempts, cap=self.max_delay)
            if result.retry_after is not None:
                delay = max(delay, min(result.retry_after, self.max_delay))
            self.outbox.retry(message.id, result.error, time.time() + delay)
            log.info("message %s will be retried in %.1f s: %s", message.id, delay,
                     result.error)
        return result

    def send_dicom(self, messages: list[Message]) -> Result:
        """Send ``dicom`` messages of one study in one STOW-RS request (``adapters.stow``)
        and settle each from the exchange's answer."""
        settled = stow.StowSender(self.outbox, self.client, max_delay=self.max_delay) \
            .send(messages)
        self.sent += len(settled.done)
        self.refused += settled.dead
        if self.on_sent:
            for m in settled.done:
                self.on_sent(m)
        return settled.last or Result("poison", None, b"", "no sendable instance")

    def jobs(self, limit: int, *, stow_requests: int | None = None
             ) -> tuple[list[Callable[[], Result]], int]:
        """Claim up to ``limit`` messages as sending jobs (one per message; ``dicom``
        instances in STOW-RS requests of up to ``stow.BATCH``, see ``stow.groups``, as
        many as fill ``stow_requests`` requests, default ``stow_flights``); returns the
        jobs and how many messages were claimed."""
        batch = self.outbox.claim(limit)
        if any(m.kind == "dicom" for m in batch):
            # instances go up to stow.BATCH per request: claim enough to fill them
            requests = self.stow_flights if stow_requests is None else stow_requests
            batch += self.outbox.claim(max(1, requests) * stow.BATCH - len(batch))
        jobs: list[Callable[[], Result]] = [partial(self.send, m) for m in batch
                                            if m.kind != "dicom"]
        jobs += [partial(self.send_dicom, group)
                 for group in stow.groups([m for m in batch if m.kind == "dicom"])]
        return jobs, len(batch)

    def step(self, pool: ThreadPoolExecutor) -> int:
        """Claim and send one batch, waiting for all of it; returns how many messages
        were tried."""
        jobs, claimed = self.jobs(self.workers * 4)
        list(pool.map(lambda job: job(), jobs))
        return claimed

    def start(self) -> None:
        """:meth:`run` in a daemon thread of its own (:attr:`thread`)."""
        self.thread = threading.Thread(target=self.run, name="pusher", daemon=True)
        self.thread.start()

    def run(self, *, drain: bool = False) -> None:
        """Send until :meth:`stop` (or, with ``drain`` or after :meth:`finish`, until
        nothing is left waiting), ``workers`` requests in flight."""
        if drain:
            self.draining.set()
        flying: set[Future[Result]] = set()
        # STOW-RS requests among them. Instances arrive one C-STORE at a time; sending
        # each as soon as it is queued would make one request per instance, and the
        # exchange's cost per request would then be paid per instance. Claiming nothing
        # while stow_flights requests are out lets the next request carry everything
        # queued meanwhile: the slower the exchange, the bigger its batches.
        stowing: set[Future[Result]] = set()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="push") as pool:
            while not self.stopping.is_set():
                seen = self.outbox.version
                hold = self._stow_hold()
                if hold <= 0 and len(flying) < self.workers \
                        and len(stowing) < self.stow_flights:
                    # one STOW-RS request's worth at a time, so that a batch is cut
                    # where it filled, not where the claim happened to find it
                    jobs, _ = self.jobs(self.workers - len(flying), stow_requests=1)
                    for job in jobs:
                        future = pool.submit(job)
                        flying.add(future)
                        if getattr(job, "func", None) == self.send_dicom:
                            stowing.add(future)
                    if jobs:
                        continue  # room for more? claim again before waiting
                if flying:
                    # while holding, look again soon: puts do not end this wait
                    timeout = min(hold, 0.01) if hold > 0 else self.idle_poll
                    finished, flying = wait(flying, timeout=timeout,
                                            return_when=FIRST_COMPLETED)
                    stowing -= finished
                    for future in finished:
                        # an outbox failure raises here and ends the pusher, as before
                        self._note_reachability(future.result())
                    continue
                if hold > 0:  # woken by each put, to claim as soon as a batch is full
                    self.outbox.wait(seen, hold)
                    continue
                if self.draining.is_set() and self.outbox.status().depth == 0:
                    return
                due = self.outbox.next_due()
                pause = self.idle_poll if due is None else \
                    min(self.idle_poll * 4, max(0.01, due - time.time()))
                self.outbox.wait(seen, min(pause, self.max_delay))

    def _stow_hold(self) -> float:
        """Seconds to wait before claiming, to let a STOW-RS batch fill up; 0 to claim now.

        A modality sends one instance per C-STORE, a few milliseconds apart, and the
        exchange's cost per request (a durable transaction, the audit record, HTTP) is
        several instances' worth: sent as they come, the instances of a study would
        go one or two per request and the exchange would spend most of its time on
        requests, which on a shared machine slows the SCP too. So while instances
        (only ``dicom`` messages) keep arriving, the pusher waits until ``stow.BATCH``
        are queued, the oldest has waited ``stow_linger`` seconds, or none came for
        ``stow_quiet`` seconds (the sender is done): at most a quarter of a second
        of extra latency for an instance, 20 ms at the end of an association."""
        count, kinds, first, last = self.outbox.fresh.snapshot()
        if self.stow_linger <= 0 or not count or kinds != {"dicom"} or count >= stow.BATCH:
            return 0.0
        until = min(last + self.stow_quiet, first + self.stow_linger)
        return max(0.0, until - time.monotonic())

    def _note_reachability(self, result: Result) -> None:
        """After an outage (the exchange could not be reached), the first answer it gives
        makes every message waiting out a backoff due at once (``Outbox.hasten``): the
        backoffs grew while it was down, and an exchange back after an hour must not
        wait up to ``max_delay`` more for what was queued meanwhile."""
        if result.outcome == "retry" and result.status is None:
            self.unreachable = True
        elif result.outcome != "retry" and self.unreachable:  # not a 429/503: it is back
            self.unreachable = False
            hastened = self.outbox.hasten()
            log.info("the exchange answers again: %d waiting message(s) due now", hastened)

    def finish(self) -> None:
        """Let :meth:`run` return once nothing is left waiting (end of a backfill)."""
        self.draining.set()
        self.outbox.wake()

    def stop(self) -> None:
        self.stopping.set()
        self.outbox.wake()


def _outcome(text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "not-supported", "diagnostics": text}]}
