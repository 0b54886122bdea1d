"""A ``Provenance`` for every write.

Each write transaction (one create, one update, one delete, or a whole
transaction Bundle) gets one Provenance resource, written in the same store
transaction: which resources it touched, when, what happened, and who did it
(the organisation and, for a doctor's token, the practitioner). It is the
FHIR-side answer to "where did this record come from"; the audit log is the
tamper-evident one.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from hie.context import RequestContext
from hie.fhir.search.extract import extract
from hie.store.base import WriteRecord

DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def _activity(records: list[WriteRecord]) -> str:
    if all(r.deleted for r in records):
        return "DELETE"
    if all(r.version == 1 and not r.deleted for r in records):
        return "CREATE"
    return "UPDATE"


def provenance_record(records: list[WriteRecord], ctx: RequestContext,
                      stamp: str) -> WriteRecord | None:
    """The Provenance of a write of ``records`` (None when there is nothing to
    record: no records, or only Provenance written by the caller itself)."""
    targets = [r for r in records if r.resource_type != "Provenance"]
    if not targets:
        return None
    id_ = str(uuid.uuid4())
    agents: list[dict[str, Any]] = [{
        "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "custodian"}]},
        "who": {"reference": f"Organization/{ctx.organization}"}}]
    if ctx.practitioner:
        agents.insert(0, {
            "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author"}]},
            "who": {"reference": f"Practitioner/{ctx.practitioner}"},
            "onBehalfOf": {"reference": f"Organization/{ctx.organization}"}})
    resource: dict[str, Any] = {
        "resourceType": "Provenance", "id": id_,
        "meta": {"versionId": "1", "lastUpdated": stamp + "Z", "source": ctx.source},
        "target": [{"reference": f"{r.resource_type}/{r.id}"} for r in targets],
        "recorded": stamp + "Z",
        "activity": {"coding": [{"system": DATA_OPERATION, "code": _activity(targets)}]},
        "agent": agents,
    }
    return WriteRecord("Provenance", id_, 1, stamp, orjson.dumps(resource), source=ctx.source,
                       index=extract(resource))
