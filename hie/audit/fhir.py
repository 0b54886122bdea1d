"""An :class:`~hie.audit.model.AuditRecord` as a FHIR R4 ``AuditEvent``.

The mapping follows the FHIR RESTful audit conventions (as IHE BALP profiles
them): ``type`` is ``rest`` with the interaction as ``subtype``; each party is
an ``agent`` (the organisation, its client system, the practitioner, with the
purpose of use on the one who asked); each thing touched is an ``entity`` (the
patient, the resources, the query with its result count, the request id).

The event built here is what the chain hashes and the store keeps, so
everything a privacy officer reads back is covered by the hash.

Index entries come from the FHIR layer's extractor (the AuditEvent parameters
of ``schemas/search_parameters.py``: ``patient``, ``agent``, ``entity``,
``date``, ``type``, ``subtype``, ``outcome``, ``action``, ``altid`` …), so FHIR
search over audit events behaves like search over anything else. (For the
events built here :mod:`hie.audit.index` computes the very same entries
without the generic walk.)
"""

from __future__ import annotations

import base64
from typing import Any

from hie.audit.index import direct_index
from hie.audit.model import PERSON_REF_PREFIX, AuditRecord, redact, redact_query
from hie.fhir.search.extract import extract
from hie.store.index import IndexEntries

AUDIT_TYPE = "AuditEvent"
#: ``meta.source`` of audit events: written by the exchange itself, so a view
#: restricted to an organisation's own sources never shows them.
AUDIT_SOURCE = "urn:hie:exchange:audit"

EXT_BASE = "https://hie.example.org/fhir/StructureDefinition/"
#: The chain extension: ``sequence`` (valueDecimal, an integer), ``previousHash``
#: and ``hash`` (valueString, hex SHA-256).
CHAIN_URL = EXT_BASE + "audit-chain"
#: The HTTP status the request was answered with (valueInteger).
HTTP_STATUS_URL = EXT_BASE + "audit-http-status"
#: The exchange's own interaction name, when ``subtype`` had to generalise it.
INTERACTION_URL = EXT_BASE + "audit-interaction"

ORGANIZATION_SYSTEM = "urn:hie:organization"
CLIENT_SYSTEM = "urn:hie:client"
PERSON_SYSTEM = "urn:hie:person"

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"

#: restful-interaction code → AuditEvent.action (C/R/U/D/E).
_REST_ACTIONS = {
    "read": "R", "vread": "R", "history-instance": "R", "history-type": "R",
    "history-system": "R", "history": "R", "capabilities": "R",
    "update": "U", "patch": "U", "delete": "D", "create": "C",
    "search": "E", "search-type": "E", "search-system": "E",
    "transaction": "E", "batch": "E", "operation": "E",
}
#: The exchange's own actions → (DICOM event type code, display, action).
_OWN_ACTIONS = {
    "login": ("110114", "User Authentication", "E"),
    "link": ("110110", "Patient Record", "U"),
    "unlink": ("110110", "Patient Record", "U"),
    "merge": ("110110", "Patient Record", "U"),
    "consent": ("110110", "Patient Record", "U"),
}
_OUTCOME_TEXT = {"0": "Success", "4": "Minor failure", "8": "Serious failure",
                 "12": "Major failure"}


def outcome_code(record: AuditRecord) -> str:
    """``0`` permitted and done; ``4`` denied, or refused as a client error;
    ``8`` a server error; ``12`` an error with no response at all."""
    if record.outcome == "permit":
        return "0" if record.status is None or record.status < 400 else (
            "8" if record.status >= 500 else "4")
    if record.outcome == "deny":
        return "4"
    if record.status is None:
        return "12"
    return "8" if record.status >= 500 else "4"


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _type_and_action(record: AuditRecord) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """(type, subtype, action) of the event."""
    name = record.interaction
    if name in _OWN_ACTIONS:
        code, display, action = _OWN_ACTIONS[name]
        return (_coding(DCM, code, display),
                [_coding(EXT_BASE + "CodeSystem/audit-action", name)], action)
    rest_type = _coding(AUDIT_EVENT_TYPE, "rest", "RESTful Operation")
    if name.startswith("$"):
        return rest_type, [_coding(RESTFUL, "operation", "operation")], "E"
    action = _REST_ACTIONS.get(name, "E")
    code = name if name in _REST_ACTIONS else "operation"
    return rest_type, [_coding(RESTFUL, code, code)], action


def _purpose(record: AuditRecord) -> list[dict[str, Any]]:
    if not record.purpose_of_use:
        return []
    concept: dict[str, Any] = {"coding": [_coding(ACT_REASON, record.purpose_of_use)]}
    text = []
    if record.reason:
        text.append(redact(record.reason) or "")
    if record.consultation:
        text.append(f"consultation {record.consultation}")
    if text:
        concept["text"] = "; ".join(text)
    return [concept]


def _agents(record: AuditRecord, purpose: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The organisation, its client and the practitioner; the purpose of use
    goes to the one who asked (the practitioner, else the organisation)."""
    agents: list[dict[str, Any]] = []
    if record.organization:
        agents.append({
            "type": {"coding": [_coding(ROLE_CLASS, "PROV", "healthcare provider")]},
            "who": {"reference": f"Organization/{record.organization}",
                    "identifier": {"system": ORGANIZATION_SYSTEM,
                                   "value": record.organization}},
            "requestor": False,
        })
    if record.client_id:
        agents.append({
            "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
            "who": {"identifier": {"system": CLIENT_SYSTEM, "value": record.client_id}},
            "altId": record.client_id,
            "requestor": False,
        })
    if record.practitioner:
        agents.append({
            "type": {"coding": [_coding(SECURITY_ROLE, "humanuser", "human user")]},
            "who": {"reference": f"Practitioner/{record.practitioner}"},
            "requestor": True,
        })
    if not agents:  # e.g. a request refused before anyone was authenticated
        agents.append({"who": {"display": "unauthenticated caller"}, "requestor": True})
    # the first agent marked requestor (the practitioner, last when present),
    # else the first agent
    requestor = agents[-1] if record.practitioner else agents[0]
    requestor["requestor"] = True
    if purpose:
        requestor["purposeOfUse"] = purpose
    if record.token_id:  # the authorisation the requestor acted under (as BALP does)
        requestor["policy"] = [record.token_id]
    return agents


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    # Entities of one kind share their type and role objects: the JSON is the
    # same, and there is one dict to build (and to index) instead of one each.
    person_type = {"system": ENTITY_TYPE, "code": "1", "display": "Person"}
    patient_role = {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}
    object_type = {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}
    entities: list[dict[str, Any]] = []
    if record.person:
        entities.append({
            "what": {"reference": PERSON_REF_PREFIX + record.person,
                     "identifier": {"system": PERSON_SYSTEM, "value": record.person}},
            "type": person_type, "role": patient_role, "description": "regional person"})
    if record.patient_refs:
        entities += [{"what": {"reference": redact(ref)}, "type": person_type,
                      "role": patient_role} for ref in record.patient_refs]
    rtype = record.resource_type
    if record.resource_ids:
        # an id of resource_type, or a whole reference
        resource_role = {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}
        entities += [{"what": {"reference": redact(
                          rid if "/" in rid or not rtype else f"{rtype}/{rid}")},
                      "type": object_type, "role": resource_role}
                     for rid in record.resource_ids]
    if record.query is not None or record.count is not None:
        query: dict[str, Any] = {"type": object_type,
                                 "role": _coding(OBJECT_ROLE, "24", "Query")}
        if rtype:
            query["description"] = rtype
        if record.query is not None:
            query["query"] = base64.b64encode(redact_query(record.query).encode()).decode()
        if record.count is not None:
            query["detail"] = [{"type": "count", "valueString": str(record.count)}]
        entities.append(query)
    elif rtype and not record.resource_ids:
        # a type-level interaction that names no resource (a refused create, say)
        entities.append({"type": object_type, "description": rtype})
    if record.consultation:
        what = ({"reference": record.consultation} if "/" in record.consultation
                else {"identifier": {"value": record.consultation}})
        entities.append({"what": what, "type": object_type, "description": "consultation"})
    if record.request_id:
        entities.append({"what": {"identifier": {"value": record.request_id}},
                         "type": _coding(BALP_ENTITY_TYPE, "XrequestId", "X-Request-Id")})
    return entities


def to_audit_event(record: AuditRecord) -> dict[str, Any]:
    """The FHIR ``AuditEvent`` of ``record`` (without id, meta and chain)."""
    return build_event(record, {"resourceType": AUDIT_TYPE}, [])


def build_event(record: AuditRecord, event: dict[str, Any],
                extensions: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`to_audit_event`, built onto ``event`` (the members that come
    first: ``resourceType``, and ``id`` and ``meta`` when sealing) after the
    ``extensions`` that come first (the chain's), so that
    :func:`hie.audit.chain.seal` need not copy the event to put them in front.
    Returns ``event``."""
    type_, subtype, action = _type_and_action(record)
    purpose = _purpose(record)
    if record.status is not None:
        extensions.append({"url": HTTP_STATUS_URL, "valueInteger": record.status})
    if subtype[0]["code"] != record.interaction:
        extensions.append({"url": INTERACTION_URL, "valueString": record.interaction})
    if extensions:
        event["extension"] = extensions
    event["type"] = type_
    event["subtype"] = subtype
    event["action"] = action
    event["recorded"] = record.recorded + "Z"
    event["outcome"] = outcome_code(record)
    desc = record.outcome if record.status is None else f"{record.outcome} ({record.status})"
    if record.detail:
        desc += ": " + (redact(record.detail) or "")
    event["outcomeDesc"] = desc
    if purpose:
        event["purposeOfEvent"] = purpose
    event["agent"] = _agents(record, purpose)
    event["source"] = {
        "site": "hie",
        "observer": {"identifier": {"system": "urn:hie:system", "value": "exchange"},
                     "display": "Regional health-record exchange"},
        "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
    }
    entities = _entities(record)
    if entities:
        event["entity"] = entities
    return event


def index_entries(event: dict[str, Any]) -> IndexEntries:
    """The search index entries of an ``AuditEvent``.

    The FHIR layer's extractor indexes every AuditEvent parameter of
    ``schemas/search_parameters.py``, exactly as it would for any resource;
    one entry is ours: the regional person (``urn:hie:person:…``) under
    ``patient``, so ``patient=urn:hie:person:…`` finds a person's events at
    every hospital.

    The events ``seal`` builds are indexed by :func:`hie.audit.index.direct_index`
    (the same entries, several times faster); anything else by the extractor.
    """
    direct = direct_index(event)
    if direct is not None:
        return direct
    out = extract(event)
    for entity in event.get("entity", []):
        ref = entity.get("what", {}).get("reference", "")
        if ref.startswith(PERSON_REF_PREFIX):
            out.reference.append(("patient", "", ref))
    return out


def outcome_text(code: str) -> str:
    """The display of an AuditEvent outcome code."""
    return _OUTCOME_TEXT.get(code, code)
