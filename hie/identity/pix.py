"""``Patient/$ihe-pix``: IHE PIXm Get Corresponding Identifiers (ITI-83).

``GET [base]/Patient/$ihe-pix?sourceIdentifier=system|value[&targetSystem=uri…]``
answers a ``Parameters`` resource: for each Patient of the same regional
person a ``targetId`` (its reference) followed by its ``targetIdentifier``s,
restricted to the ``targetSystem`` domains when given. The Patient a hospital
identifier names is the one the caller knows already, so it gets no
``targetId`` (its other identifiers are still listed); a shared identifier —
the resident ID number — names Patients at several hospitals, and each is an
answer. The failure cases follow ITI-83 §2:3.83.4.2.2:

* the source identifier's domain (system) is unknown → 400, ``code-invalid``,
  "sourceIdentifier Assigning Authority not found";
* the domain is known but no Patient has the identifier → 404, ``not-found``,
  "sourceIdentifier Patient Identifier not found";
* a ``targetSystem`` is unknown → 403, ``code-invalid``, "targetSystem not found";
* known, but no identifier in the target domains → 200 with no parameters.

A domain is *known* when some Patient carries an identifier of that system
(one index lookup). Resident ID numbers in the answer are masked unless the
caller is the patient; with a restriction, Patients the caller may not see are
left out (and a source identifier it may not see is "not found").
"""

from __future__ import annotations

from typing import Any

import orjson

from hie.fhir.outcome import FhirError, Issue, bad_request
from hie.identity.resident_id import ResidentIdError, mask, normalise
from hie.identity.service import linked_patient_ids
from hie.store.base import Store
from hie.store.query import AnyOf, Restriction, SearchQuery, TokenMatch

#: Most Patients one source identifier may resolve to.
MAX_SOURCE_MATCHES = 20


def _query(system: str, values: tuple[str | None, ...],
           restriction: Restriction | None) -> SearchQuery:
    terms = tuple(TokenMatch("identifier", v, system) for v in values)
    return SearchQuery("Patient", (AnyOf(terms),), restriction=restriction)


async def _domain_known(store: Store, system: str, restriction: Restriction | None) -> bool:
    page = await store.search(_query(system, (None,), restriction), limit=1)
    return bool(page.resources)


def parse_source_identifier(value: str) -> tuple[str, str]:
    """``system|value``, both present (ITI-83: the domain must be valued)."""
    system, bar, ident = value.partition("|")
    if not bar or not system or not ident:
        raise bad_request("sourceIdentifier must be system|value (both valued)",
                          "sourceIdentifier", code="required")
    return system, ident


async def corresponding_identifiers(
    store: Store, *, source_identifier: str, target_systems: list[str],
    resident_id_system: str, restriction: Restriction | None = None,
    mask_resident_ids: bool = True,
) -> dict[str, Any]:
    """The PIXm answer for one source identifier (a ``Parameters`` resource);
    raises :class:`~hie.fhir.outcome.FhirError` for the ITI-83 failure cases."""
    system, value = parse_source_identifier(source_identifier)
    values: tuple[str, ...] = (value,)
    if system == resident_id_system:  # hospitals store either form; find both
        try:
            full = normalise(value)
            values = tuple(dict.fromkeys((value, full, full.lower())))
        except ResidentIdError:
            pass
    if not await _domain_known(store, system, restriction):
        raise FhirError(400, Issue("code-invalid",
                                   "sourceIdentifier Assigning Authority not found"))
    for target in target_systems:
        if not await _domain_known(store, target, restriction):
            raise FhirError(403, Issue("code-invalid", "targetSystem not found"))
    page = await store.search(_query(system, values, restriction), limit=MAX_SOURCE_MATCHES)
    if not page.resources:
        raise FhirError(404, Issue("not-found", "sourceIdentifier Patient Identifier not found"))

    sources = [r.id for r in page.resources]
    # A hospital's own identifier names the one Patient the caller knows
    # already; a shared one (the resident ID number) names Patients at several
    # hospitals, and each of them is an answer.
    known = set(sources) if len(sources) == 1 else set()
    ordered: list[str] = list(sources)
    for sid in sources:
        for pid in await linked_patient_ids(store, sid):
            if pid not in ordered:
                ordered.append(pid)
    records = {r.id: r for r in await store.read_many([("Patient", p) for p in ordered],
                                                      restriction=restriction)}
    wanted = set(target_systems)
    seen: set[tuple[str, str]] = {(system, v) for v in values}
    parameters: list[dict[str, Any]] = []
    for pid in ordered:
        rec = records.get(pid)
        if rec is None:
            continue
        found: list[dict[str, Any]] = []
        for ident in orjson.loads(rec.body).get("identifier", []):
            isys, ival = ident.get("system"), ident.get("value")
            if not isys or not ival or (wanted and isys not in wanted):
                continue
            if (isys, ival) in seen:
                continue
            seen.add((isys, ival))
            if isys == resident_id_system and mask_resident_ids:
                ival = mask(ival)
            out = {"system": isys, "value": ival}
            if isinstance(ident.get("use"), str):
                out["use"] = ident["use"]
            found.append(out)
        if pid not in known and (found or not wanted):
            parameters.append({"name": "targetId",
                               "valueReference": {"reference": f"Patient/{pid}"}})
        parameters += [{"name": "targetIdentifier", "valueIdentifier": i} for i in found]
    return {"resourceType": "Parameters", "parameter": parameters} if parameters \
        else {"resourceType": "Parameters"}
