"""The record of every FHIR read: audit (permit and deny) and metering.

A route takes an :class:`Access` (a FastAPI dependency with ``yield``), tells it
what was asked and what was returned (``access.saw(records)``), and the
dependency writes one audit record when the route finishes — ``permit`` with
the patients whose records were returned, or ``deny``/``error`` with the status
when the route raised. A refusal that answers "not found" (the caller may not
see the resource, or it does not exist: the same answer) is a ``deny``.

Patients are named by their ``Patient/…`` references, read from the returned
resources' patient-compartment references, so the patient's portal can list
who saw which of their records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import orjson
from fastapi import Depends, Request

from hie.audit.model import AuditRecord, from_context
from hie.context import RequestContext
from hie.dependencies import get_context
from hie.fhir.outcome import FhirError
from hie.fhir.search.extract import reference_values
from hie.metering.counters import note_usage
from hie.store.base import StoredResource
from schemas.search_parameters import PATIENT_COMPARTMENT

#: Most patient references one audit record lists (a large search page names
#: its count and query; its first patients are enough to find it).
MAX_PATIENTS = 200


@dataclass(slots=True)
class Access:
    """What one read request asked for and got."""

    ctx: RequestContext
    interaction: str = "read"
    resource_type: str | None = None
    query: str | None = None
    ids: list[str] = field(default_factory=list)
    patients: dict[str, None] = field(default_factory=dict)  # ordered set
    count: int = 0

    def saw(self, records: Iterable[StoredResource]) -> None:
        """Note resources returned to the caller."""
        for rec in records:
            self.count += 1
            if len(self.ids) < MAX_PATIENTS:
                self.ids.append(f"{rec.resource_type}/{rec.id}")
            if len(self.patients) < MAX_PATIENTS and not rec.deleted:
                for ref in patient_refs(rec):
                    self.patients[ref] = None

    def record(self, outcome: str, status: int) -> AuditRecord:
        """The audit record of this access."""
        return from_context(self.ctx, interaction=self.interaction,  # type: ignore[arg-type]
                            outcome=outcome, status=status,
                            patient_refs=tuple(self.patients),
                            resource_type=self.resource_type,
                            resource_ids=tuple(self.ids), query=self.query,
                            count=self.count)


def patient_refs(rec: StoredResource) -> list[str]:
    """The ``Patient/…`` references that put a stored resource in a compartment."""
    if rec.resource_type == "Patient":
        return [f"Patient/{rec.id}"]
    params = PATIENT_COMPARTMENT.get(rec.resource_type) or ()
    if not params or not rec.body:
        return []
    resource = orjson.loads(rec.body)
    out: list[str] = []
    for param in params:
        out += [f"Patient/{tid}" for ttype, tid in reference_values(resource, param)
                if ttype == "Patient"]
    return out


async def access(request: Request,
                 ctx: RequestContext = Depends(get_context)) -> AsyncIterator[Access]:
    """Yield the request's :class:`Access`; audit and meter it when the route ends."""
    note = Access(ctx=ctx, resource_type=request.path_params.get("resource_type"),
                  query=request.url.query or None)
    log = getattr(request.app.state, "audit_log", None)
    try:
        yield note
    except FhirError as exc:
        if log is not None:
            outcome = "deny" if exc.status in (401, 403, 404, 410) else "error"
            await log.record(note.record(outcome, exc.status))
        raise
    else:
        note_usage(request, resources_read=note.count)
        if log is not None:
            await log.record(note.record("permit", 200))
