"""Auditing FHIR writes atomically: a hook for :func:`hie.fhir.writes.execute`.

:func:`write_hook` returns a ``WriteHook`` (``hie.fhir.writes``) that appends
the audit records of a write inside the write's own transaction, so a write
and its record commit together or not at all. Records are grouped: one per
(interaction, patients) naming every resource written, so a hospital pushing a
patient's chart in one Bundle adds a handful of audit events, not one per
resource, while each event still names every resource and the patients they
belong to. The exchange's own Provenance of the write is written, so it is
audited too.

The patient of a written resource is read from its index entries — the
reference parameters that put its type in the Patient compartment
(``schemas.search_parameters.PATIENT_COMPARTMENT``); a Patient is its own
patient. A delete has no index entries, so its record names the resource but
not the patient.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hie.audit.chain import append_in_tx
from hie.audit.model import AuditRecord, from_context
from hie.dicomweb.records import DICOM_TYPES, PATIENT_PARAM
from hie.store.base import Transaction, WriteRecord
from schemas.search_parameters import PATIENT_COMPARTMENT

WriteHookFn = Callable[[Transaction, Any, list[WriteRecord]], Awaitable[None]]


def _interaction(record: WriteRecord) -> str:
    if record.deleted:
        return "delete"
    return "create" if record.version == 1 else "update"


def _patients(record: WriteRecord) -> tuple[str, ...]:
    if record.resource_type == "Patient":
        return (f"Patient/{record.id}",)
    if record.index is None:
        return ()
    params = PATIENT_COMPARTMENT.get(record.resource_type) \
        or ((PATIENT_PARAM,) if record.resource_type in DICOM_TYPES else ())
    refs = {f"Patient/{target_id}" for param, target_type, target_id in record.index.reference
            if param in params and target_type == "Patient"}
    return tuple(sorted(refs))


def write_records(ctx: object, records: list[WriteRecord], *,
                  request_id: str | None = None) -> list[AuditRecord]:
    """The audit records of one write (grouped; see the module docstring)."""
    groups: dict[tuple[str, tuple[str, ...]], list[WriteRecord]] = {}
    for record in records:
        groups.setdefault((_interaction(record), _patients(record)), []).append(record)
    out = []
    for (interaction, patients), group in groups.items():
        types = {r.resource_type for r in group}
        out.append(from_context(
            ctx, interaction=interaction, outcome="permit",
            resource_type=types.pop() if len(types) == 1 else None,
            resource_ids=tuple(f"{r.resource_type}/{r.id}" for r in group),
            patient_refs=patients, request_id=request_id))
    return out


def write_hook(*, request_id: str | None = None) -> WriteHookFn:
    """A ``WriteHook`` appending the write's audit records in its transaction.

    Pass it to ``hie.fhir.writes.execute(…, hooks=[write_hook(request_id=…)])``.
    It may run more than once (the transaction retries), and acts only through
    ``tx``, as hooks must.
    """
    async def hook(tx: Transaction, ctx: Any, records: list[WriteRecord]) -> None:
        await append_in_tx(tx, write_records(ctx, records, request_id=request_id))

    return hook
