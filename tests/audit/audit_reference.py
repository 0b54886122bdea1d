"""The audit event, index and seal as they were computed before they were made
cheaper: the reference the tests hold the fast code to (imported by
``test_audit_index.py``).

Copied from ``hie/audit/fhir.py``, ``hie/audit/chain.py`` and
``hie/audit/model.py`` as they were, less the helpers that did not change
(imported). Stored events are hashed into the chain, so the event, its bytes
and its hash must stay exactly these; if the event is ever changed on purpose,
change it here too.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from hie.audit.chain import event_id
from hie.audit.fhir import (
    ACT_REASON,
    AUDIT_SOURCE,
    AUDIT_TYPE,
    BALP_ENTITY_TYPE,
    CHAIN_URL,
    CLIENT_SYSTEM,
    DCM,
    ENTITY_TYPE,
    HTTP_STATUS_URL,
    INTERACTION_URL,
    OBJECT_ROLE,
    ORGANIZATION_SYSTEM,
    PERSON_SYSTEM,
    ROLE_CLASS,
    SECURITY_ROLE,
    SOURCE_TYPE,
    _coding,
    _type_and_action,
    outcome_code,
)
from hie.audit.model import PERSON_REF_PREFIX, SECRET_PARAMS, AuditRecord
from hie.fhir.search.extract import extract
from hie.identity.resident_id import mask_text
from hie.store.index import IndexEntries


def redact(text: str | None) -> str | None:
    return None if text is None else mask_text(text)


def redact_query(query: str) -> str:
    pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    if not pairs:
        return mask_text(query)
    cleaned = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in pairs]
    return mask_text(urlencode(cleaned, safe="|:/,$*"))


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
    if not agents:
        agents.append({"who": {"display": "unauthenticated caller"}, "requestor": True})
    requestor = next((a for a in agents if a["requestor"]), agents[0])
    requestor["requestor"] = True
    if purpose:
        requestor["purposeOfUse"] = purpose
    if record.token_id:
        requestor["policy"] = [record.token_id]
    return agents


def _ref(value: str, resource_type: str | None) -> str:
    return value if "/" in value or not resource_type else f"{resource_type}/{value}"


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    person_type = _coding(ENTITY_TYPE, "1", "Person")
    patient_role = _coding(OBJECT_ROLE, "1", "Patient")
    object_type = _coding(ENTITY_TYPE, "2", "System Object")
    entities: list[dict[str, Any]] = []
    if record.person:
        entities.append({
            "what": {"reference": PERSON_REF_PREFIX + record.person,
                     "identifier": {"system": PERSON_SYSTEM, "value": record.person}},
            "type": person_type, "role": patient_role, "description": "regional person"})
    for ref in record.patient_refs:
        entities.append({"what": {"reference": redact(ref)}, "type": person_type,
                         "role": patient_role})
    for rid in record.resource_ids:
        entities.append({"what": {"reference": redact(_ref(rid, record.resource_type))},
                         "type": object_type,
                         "role": _coding(OBJECT_ROLE, "4", "Domain Resource")})
    if record.query is not None or record.count is not None:
        query: dict[str, Any] = {"type": object_type,
                                 "role": _coding(OBJECT_ROLE, "24", "Query")}
        if record.resource_type:
            query["description"] = record.resource_type
        if record.query is not None:
            query["query"] = base64.b64encode(redact_query(record.query).encode()).decode()
        if record.count is not None:
            query["detail"] = [{"type": "count", "valueString": str(record.count)}]
        entities.append(query)
    elif record.resource_type and not record.resource_ids:
        entities.append({"type": object_type, "description": record.resource_type})
    if record.consultation:
        what = ({"reference": record.consultation} if "/" in record.consultation
                else {"identifier": {"value": record.consultation}})
        entities.append({"what": what, "type": object_type, "description": "consultation"})
    if record.request_id:
        entities.append({"what": {"identifier": {"value": record.request_id}},
                         "type": _coding(BALP_ENTITY_TYPE, "XrequestId", "X-Request-Id")})
    return entities


def to_audit_event(record: AuditRecord) -> dict[str, Any]:
    type_, subtype, action = _type_and_action(record)
    outcome = outcome_code(record)
    purpose = _purpose(record)
    extensions: list[dict[str, Any]] = []
    if record.status is not None:
        extensions.append({"url": HTTP_STATUS_URL, "valueInteger": record.status})
    if subtype[0]["code"] != record.interaction:
        extensions.append({"url": INTERACTION_URL, "valueString": record.interaction})
    event: dict[str, Any] = {"resourceType": AUDIT_TYPE}
    if extensions:
        event["extension"] = extensions
    event |= {"type": type_, "subtype": subtype, "action": action,
              "recorded": record.recorded + "Z", "outcome": outcome}
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
    """The generic extractor, and the regional person under ``patient``."""
    out = extract(event)
    for entity in event.get("entity", []):
        ref = entity.get("what", {}).get("reference", "")
        if ref.startswith(PERSON_REF_PREFIX):
            out.reference.append(("patient", "", ref))
    return out


def chain_hash(previous: str, event: dict[str, Any]) -> str:
    return hashlib.sha256(previous.encode("ascii")
                          + orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()


def seal(record: AuditRecord, sequence: int, previous: str,
         stamp: str) -> tuple[dict[str, Any], bytes, str]:
    event = to_audit_event(record)
    chain = {"url": CHAIN_URL, "extension": [
        {"url": "sequence", "valueDecimal": sequence},
        {"url": "previousHash", "valueString": previous},
    ]}
    event = {"resourceType": AUDIT_TYPE, "id": event_id(sequence),
             "meta": {"versionId": "1", "lastUpdated": stamp + "Z", "source": AUDIT_SOURCE},
             "extension": [chain, *event.pop("extension", [])],
             **{k: v for k, v in event.items() if k != "resourceType"}}
    digest = chain_hash(previous, event)
    chain["extension"].append({"url": "hash", "valueString": digest})
    return event, orjson.dumps(event), digest
