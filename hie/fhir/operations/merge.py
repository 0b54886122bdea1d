"""``Patient/$merge``: a hospital records that two of its own Patients are one
(an HL7 v2 A40 "merge patient" from its HIS, sent by its adapter).

The body is a ``Parameters`` with ``source-patient`` (the registration merged
away) and ``target-patient`` (the one that survives), each a
``valueIdentifier`` the hospital assigned (its MRN) or a ``valueReference`` to
its own Patient — the names of FHIR R5's ``$merge``. The exchange links both to
one regional person and marks the source as replaced; the records themselves
stay as the hospital wrote them. A hospital can merge only its own Patients:
anything else is answered as an unknown Patient. Sending the same merge again
changes nothing, so an adapter may re-send after a crash.
"""

from __future__ import annotations

from typing import Any

from hie.audit.chain import append_in_tx
from hie.context import RequestContext
from hie.fhir.outcome import FhirError, Issue, bad_request, information
from hie.identity.admin import find_patient_id, merge
from hie.identity.service import IdentityError
from hie.store.base import Store, Transaction

ROLES = ("source-patient", "target-patient")


def _parameter(body: dict[str, Any], name: str) -> dict[str, Any]:
    found = [p for p in body.get("parameter") or [] if isinstance(p, dict)
             and p.get("name") == name]
    if len(found) != 1:
        raise bad_request(f"$merge needs exactly one '{name}' parameter", "Parameters.parameter")
    return found[0]


async def _resolve(tx: Transaction, ctx: RequestContext, param: dict[str, Any]) -> str:
    """The caller's own Patient a parameter names (404 for anything else)."""
    name = param["name"]
    if isinstance(param.get("valueIdentifier"), dict):
        ident = param["valueIdentifier"]
        system, value = ident.get("system"), ident.get("value")
        if not isinstance(system, str) or not isinstance(value, str) or not value:
            raise bad_request(f"'{name}' needs an identifier with system and value",
                              f"Parameters.parameter[{name}]")
        try:
            found = await find_patient_id(tx, source=ctx.source, system=system, value=value)
        except IdentityError as exc:
            raise FhirError(412, Issue("multiple-matches", str(exc))) from None
        if found is None:
            raise FhirError(404, Issue("not-found", f"No Patient with identifier "
                                                    f"{system}|{value} ({name})"))
        return found
    ref = (param.get("valueReference") or {}).get("reference")
    if isinstance(ref, str) and ref.startswith("Patient/"):
        pid = ref.split("/", 1)[1]
        current = await tx.read("Patient", pid)
        if current is None or current.deleted or current.source != ctx.source:
            raise FhirError(404, Issue("not-found", f"Resource Patient/{pid} is not known"))
        return pid
    raise bad_request(f"'{name}' must be a valueIdentifier or a Patient valueReference",
                      f"Parameters.parameter[{name}]")


async def patient_merge(store: Store, ctx: RequestContext, *, body: Any) -> dict[str, Any]:
    """Merge two of the caller's Patients; return an informational outcome."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request("$merge takes a Parameters resource", "resourceType")
    params = [_parameter(body, name) for name in ROLES]

    async def run(tx: Transaction) -> tuple[str, str]:
        source_id, target_id = [await _resolve(tx, ctx, p) for p in params]
        if source_id == target_id:
            raise bad_request("source-patient and target-patient are the same Patient")
        try:
            events = await merge(tx, source=ctx.source, prior_patient_id=source_id,
                                 surviving_patient_id=target_id,
                                 actor=f"{ctx.organization}:$merge")
        except IdentityError:
            # a Patient not (yet) in the identity index answers as an unknown one
            raise FhirError(404, Issue("not-found", "A Patient to merge is not known")) from None
        await append_in_tx(tx, [e.to_audit_record(organization=ctx.organization)
                                for e in events])
        return source_id, target_id

    source_id, target_id = await store.transact(run)
    return information(f"Patient/{source_id} is merged into Patient/{target_id}")
