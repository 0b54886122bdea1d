"""The record of every FHIR read: who asked, what they may see, and the audit
entry (permit and deny) and metering that follow.

:func:`access` is the one dependency of a read route: it authenticates the
caller, works out the restriction that applies, and returns an :class:`Access`
note the route fills in (``note.saw(records)``). :class:`AccessAuditMiddleware`
writes the audit record once the response is sent — ``permit`` with the
patients whose records were returned, or ``deny``/``error`` with the status.
A refusal that answers "not found" (the caller may not see the resource, or it
does not exist: the same answer) is a ``deny``.

One dependency and a middleware rather than a chain of dependencies and a
``yield``: a read is the hot path, and each FastAPI dependency level costs
more than the checks it runs (see ``benchmarks/bench_trust.py``).

Patients are named by their ``Patient/…`` references, read from the returned
resources' patient-compartment references, so the patient's portal can list
who saw which of their records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hie.audit.model import AuditRecord, from_context
from hie.config import Settings
from hie.context import RequestContext
from hie.dependencies import get_context, restriction_for
from hie.dicomweb.records import DICOM_TYPES, patient_of
from hie.fhir.search.extract import reference_values
from hie.gate.enforce import Gate, mask_contacts
from hie.identity.masking import body_for_caller
from hie.metering.counters import note_usage
from hie.store.base import Store, StoredResource
from hie.store.query import Restriction
from schemas.search_parameters import PATIENT_COMPARTMENT

#: Most resources and patients one audit record lists (a large search page names
#: its count and query; its first resources are enough to find it).
MAX_LISTED = 200
#: Where the note lives in the request's ASGI state.
STATE_KEY = "hie.access"


@dataclass(slots=True)
class Access:
    """What one read request is, may see, and got."""

    ctx: RequestContext
    restriction: Restriction
    store: Store
    settings: Settings
    interaction: str = "read"
    resource_type: str | None = None
    query: str | None = None
    ids: list[str] = field(default_factory=list)
    returned: list[StoredResource] = field(default_factory=list)
    count: int = 0
    gate: Gate | None = None

    async def widen(self, patient_ids: list[str]) -> Restriction:
        """Open what the consent gate grants for these Patients; the note's
        restriction is the result."""
        if self.gate is None:
            return self.restriction
        self.restriction = await self.gate.open_for(patient_ids)
        return self.restriction

    async def open_record(self, resource_type: str, id: str) -> Restriction:
        """The restriction for reading one resource by id: its patients decide.

        The unrestricted read here only finds whose record it is; whether the
        caller may see it is the restricted read that follows."""
        rec = await self.store.read(resource_type, id)
        if rec is None or rec.deleted or rec.source in (self.restriction.sources or ()):
            return self.restriction
        return await self.widen([r.split("/", 1)[1] for r in patient_refs(rec)])

    def saw(self, records: Iterable[StoredResource]) -> None:
        """Note resources returned to the caller (their patients are read later,
        off the request path)."""
        for rec in records:
            self.count += 1
            if len(self.returned) < MAX_LISTED:
                self.returned.append(rec)

    def render(self, rec: StoredResource) -> bytes:
        """``rec``'s body as this caller may see it: resident ID numbers are
        masked unless the caller's organisation wrote the record."""
        body = body_for_caller(rec, caller_source=self.ctx.source,
                               system=self.settings.resident_id_system)
        if self.gate is not None and rec.source != self.ctx.source and self.gate.masks:
            body = mask_contacts(body, self.gate.masks)
        return body

    def record(self, outcome: str, status: int) -> AuditRecord:
        """The audit record of this access."""
        ids = list(self.ids) if not self.returned else [
            f"{r.resource_type}/{r.id}" for r in self.returned]
        patients: dict[str, None] = dict(self.gate.patients) if self.gate else {}
        for rec in self.returned:
            if not rec.deleted:
                patients.update(dict.fromkeys(patient_refs(rec)))
        detail = None
        if self.gate is not None:
            if self.gate.break_the_glass:
                detail = "break-the-glass"
            refusal = self.gate.refusal
            if outcome == "permit" and refusal is not None:
                if self.count == 0:
                    outcome, detail = "deny", refusal
                else:  # own records returned, other hospitals' withheld
                    detail = f"{refusal} for other hospitals' records"
        return from_context(self.ctx, interaction=self.interaction,  # type: ignore[arg-type]
                            outcome=outcome, status=status, detail=detail,
                            patient_refs=tuple(list(patients)[:MAX_LISTED]),
                            resource_type=self.resource_type,
                            resource_ids=tuple(ids[:MAX_LISTED]), query=self.query,
                            count=self.count)


def patient_refs(rec: StoredResource) -> list[str]:
    """The ``Patient/…`` references that put a stored resource in a compartment."""
    if rec.resource_type == "Patient":
        return [f"Patient/{rec.id}"]
    if rec.resource_type in DICOM_TYPES:
        return patient_of(rec)
    params = PATIENT_COMPARTMENT.get(rec.resource_type) or ()
    if not params or not rec.body:
        return []
    resource = orjson.loads(rec.body)
    out: list[str] = []
    for param in params:
        out += [f"Patient/{tid}" for ttype, tid in reference_values(resource, param)
                if ttype == "Patient"]
    return out


async def access(request: Request) -> Access:
    """Authenticate the caller and open the request's :class:`Access` note."""
    ctx = await get_context(request)
    state = request.app.state
    base = restriction_for(request, ctx)
    note = Access(ctx=ctx, restriction=base, store=state.store, settings=state.settings,
                  resource_type=request.path_params.get("resource_type"),
                  query=request.url.query or None,
                  gate=Gate(ctx=ctx, store=state.store,
                            client=getattr(state, "consent", None), base=base))
    request.scope.setdefault("state", {})[STATE_KEY] = note
    return note


def outcome_of(status: int) -> str:
    """How an answer's status reads as an access decision."""
    if status < 400:
        return "permit"
    return "deny" if status in (401, 403, 404, 410) else "error"


class AccessAuditMiddleware:
    """After each request that opened an :class:`Access`, meter what it read
    and queue its audit record (the batched, hash-chained log)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            note: Access | None = scope.get("state", {}).get(STATE_KEY)
            if note is not None:
                outcome = outcome_of(status)
                if outcome == "permit":
                    note_usage(Request(scope), resources_read=note.count)
                log = getattr(scope["app"].state, "audit_log", None)
                if log is not None:
                    await log.record(note.record(outcome, status))
