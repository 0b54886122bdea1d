"""Counting usage in memory, and flushing it to the store now and then.

Counting happens on every request, so it is a dictionary update and nothing
else; the store is touched by :meth:`UsageMeter.flush`, every
:attr:`UsageMeter.interval` seconds from a background task and once more on
:meth:`UsageMeter.close` (shutdown). Counts are per process; each worker
process adds its own to the stored totals (see :mod:`hie.metering.service`), so
the totals are right however many workers run. What is shown to an
administrator lags by at most one interval.

:class:`MeteringMiddleware` counts each request's body bytes in and out. It
cannot know the caller (authentication runs later, in dependencies), so it
leaves a :class:`RequestUsage` note in the request state; the authentication
dependency names the organisation and the FHIR routes add the resources they
read and wrote (:func:`note_usage`). When the response is done the middleware
adds the note to the meter. Requests no organisation was named for (public
routes, refused tokens) are not charged to anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hie.metering.service import Usage, add_usage
from hie.store.base import Store

log = logging.getLogger(__name__)

#: Where the note of the current request lives in ``scope["state"]``.
STATE_KEY = "hie_usage"


def _today() -> date:
    return datetime.now(UTC).date()


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


class UsageMeter:
    """Per-organisation, per-day counts of this process, flushed to ``store``."""

    def __init__(self, store: Store, *, interval: float = 10.0,
                 today: Callable[[], date] = _today) -> None:
        self.store = store
        self.interval = interval
        self._today = today
        self._counts: dict[tuple[str, date], Usage] = {}
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def count(self, organization: str, *, requests: int = 1, resources_read: int = 0,
              resources_written: int = 0, bytes_in: int = 0, bytes_out: int = 0,
              day: date | None = None) -> None:
        """Add to today's (or ``day``'s) counts of ``organization``; no I/O."""
        key = (organization, day or self._today())
        usage = self._counts.get(key)
        if usage is None:
            usage = self._counts[key] = Usage()
        usage.requests += requests
        usage.resources_read += resources_read
        usage.resources_written += resources_written
        usage.bytes_in += bytes_in
        usage.bytes_out += bytes_out

    def pending(self) -> dict[tuple[str, date], Usage]:
        """A copy of the counts not yet flushed."""
        return {k: Usage(**{f: getattr(v, f) for f in v.__slots__})
                for k, v in self._counts.items()}

    async def flush(self) -> None:
        """Add the counts so far to the store. On failure they are kept and
        go out with the next flush."""
        async with self._flush_lock:
            taken, self._counts = self._counts, {}
            if not taken:
                return
            try:
                await add_usage(self.store, taken, _stamp())
            except BaseException:
                for (org, day), usage in taken.items():
                    self._counts.setdefault((org, day), Usage()).add(usage)
                raise

    async def start(self) -> None:
        """Start flushing every :attr:`interval` seconds (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-meter-flush")

    async def close(self) -> None:
        """Stop the periodic flush and flush what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("usage flush failed; the counts are kept for the next one")


@dataclass(slots=True)
class RequestUsage:
    """What one request used, filled in while it runs."""

    organization: str | None = None
    resources_read: int = 0
    resources_written: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


def note_usage(request: Request, *, organization: str | None = None,
               resources_read: int = 0, resources_written: int = 0) -> None:
    """Charge this request to ``organization`` and/or add resources to it.

    Does nothing when the metering middleware is not installed.
    """
    note = request.scope.get("state", {}).get(STATE_KEY)
    if note is None:
        return
    if organization is not None:
        note.organization = organization
    note.resources_read += resources_read
    note.resources_written += resources_written


def _meter_from_app(scope: Scope) -> UsageMeter | None:
    app = scope.get("app")
    return getattr(getattr(app, "state", None), "usage_meter", None)


class MeteringMiddleware:
    """Count requests and body bytes per organisation (ASGI, streaming-safe).

    ``get_meter`` finds the meter for a request; by default
    ``app.state.usage_meter`` (created in the lifespan, since it needs the store).
    """

    def __init__(self, app: ASGIApp,
                 get_meter: Callable[[Scope], UsageMeter | None] = _meter_from_app) -> None:
        self.app = app
        self.get_meter = get_meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        note = RequestUsage()
        state: dict[str, Any] = scope.setdefault("state", {})
        state[STATE_KEY] = note

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                note.bytes_in += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                note.bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            meter = self.get_meter(scope)
            if meter is not None and note.organization is not None:
                meter.count(note.organization, resources_read=note.resources_read,
                            resources_written=note.resources_written,
                            bytes_in=note.bytes_in, bytes_out=note.bytes_out)
