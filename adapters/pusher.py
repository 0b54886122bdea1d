"""The pusher: drains the outbox into the exchange, in order per patient.

Delivery is *at least once*: a message is deleted from the outbox only after the
exchange answered 2xx, so a crash between the exchange's commit and our
``done`` sends it again. It is *exactly once in effect* because of the rule every
source follows (see ``docs/adapters.md``): each entry of a Bundle is a
conditional update (``PUT Type?identifier=system|value``) or a conditional
create (``ifNoneExist``) on the hospital's own identifiers, so a second copy
matches what the first one wrote instead of creating a duplicate.

Messages of different patients are sent in parallel (``workers`` threads); the
outbox never hands out two messages of one patient at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from adapters.client import ExchangeClient, Result, backoff
from adapters.outbox import Message, Outbox

log = logging.getLogger("adapters.pusher")


class Pusher:
    """Sends what the outbox holds with ``client``; ``run`` until stopped or ``drain``."""

    def __init__(self, outbox: Outbox, client: ExchangeClient, *, workers: int = 4,
                 idle_poll: float = 0.5, max_delay: float = 300.0) -> None:
        self.outbox = outbox
        self.client = client
        self.workers = workers
        self.idle_poll = idle_poll
        self.max_delay = max_delay
        self.stopping = threading.Event()
        self.sent = 0
        self.refused = 0
        self.on_sent: Callable[[Message], None] | None = None
        outbox.recover()

    def send(self, message: Message) -> Result:
        """Send one claimed message and settle it in the outbox."""
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

    def step(self, pool: ThreadPoolExecutor) -> int:
        """Claim and send one batch; returns how many messages were tried."""
        batch = self.outbox.claim(self.workers * 4)
        if batch:
            list(pool.map(self.send, batch))
        return len(batch)

    def run(self, *, drain: bool = False) -> None:
        """Send until :meth:`stop` (or, with ``drain``, until nothing is left waiting)."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="push") as pool:
            while not self.stopping.is_set():
                if self.step(pool):
                    continue
                if drain and self.outbox.status().depth == 0:
                    return
                due = self.outbox.next_due()
                wait = self.idle_poll if due is None else \
                    min(self.idle_poll * 4, max(0.01, due - time.time()))
                self.stopping.wait(min(wait, self.max_delay))

    def stop(self) -> None:
        self.stopping.set()


def _outcome(text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "not-supported", "diagnostics": text}]}
