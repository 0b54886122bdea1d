"""The audit log: every write and every access decision, hash-chained in the store.

* :mod:`hie.audit.model` — :class:`AuditRecord`, what a caller hands in;
* :mod:`hie.audit.fhir` — the record as a FHIR R4 ``AuditEvent`` and its index entries;
* :mod:`hie.audit.index` — those index entries built directly (the writer's hot path);
* :mod:`hie.audit.chain` — appending to the hash chain inside a store transaction;
* :mod:`hie.audit.writes` — the write hook that audits FHIR writes in their transaction;
* :mod:`hie.audit.log` — :class:`AuditLog`, the batched writer for read decisions;
* :mod:`hie.audit.verify` — walking the chain to find the first tampered record;
* :mod:`hie.audit.service` — reading records back (a patient's access log);
* :mod:`hie.audit.cli` — ``hie audit verify``.

``docs/audit.md`` explains the design.
"""
