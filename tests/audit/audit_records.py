"""Audit records the tests build (imported by the audit test modules)."""

from __future__ import annotations

from hie.audit.model import AuditRecord


def read_record(n: int = 0, **overrides: object) -> AuditRecord:
    """A permitted read of ``Observation/o{n}`` by a doctor of hospital h1."""
    fields: dict[str, object] = dict(
        interaction="read", outcome="permit", status=200, organization="h1",
        client_id="h1-his", practitioner="doc-1", patient_refs=("Patient/p1",),
        resource_type="Observation", resource_ids=(f"o{n}",), purpose_of_use="TREAT",
        request_id=f"req-{n}")
    fields.update(overrides)
    return AuditRecord(**fields)  # type: ignore[arg-type]
