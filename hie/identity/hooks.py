"""The identity index's part of the write path: a write hook.

``hie.fhir.writes.execute`` runs its write hooks inside the write's
transaction, after the new versions are put. :func:`identity_write_hook`
links every Patient version written (creates, updates, Bundle entries alike)
and takes a deleted Patient out of its person — so a Patient is never stored
without its link, and a failed write leaves no link behind.

The app factory installs it once:
``app.state.write_hooks.append(identity_write_hook(settings))``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from hie.identity.matching import MatchPolicy
from hie.identity.model import LinkEvent
from hie.identity.service import forget_patient, link_patient
from hie.store.base import Transaction, WriteRecord

#: Called with the link events of one write, in its transaction (e.g. to audit
#: automatic links); the third argument is the caller's request context.
EventSink = Callable[[Transaction, list[LinkEvent], Any], Awaitable[None]]

WriteHookFn = Callable[[Transaction, Any, list[WriteRecord]], Awaitable[None]]


def identity_write_hook(settings: Any, *, policy: MatchPolicy | None = None,
                        sink: EventSink | None = None) -> WriteHookFn:
    """A :class:`hie.fhir.writes.WriteHook` that keeps the index in step."""

    async def hook(tx: Transaction, ctx: Any, records: list[WriteRecord]) -> None:
        for record in records:
            if record.resource_type != "Patient":
                continue
            if record.deleted:
                events = await forget_patient(tx, patient_id=record.id)
            else:
                result = await link_patient(tx, patient=orjson.loads(record.body),
                                            source=record.source, settings=settings,
                                            policy=policy)
                events = list(result.events)
            if sink is not None and events:
                await sink(tx, events, ctx)

    return hook
