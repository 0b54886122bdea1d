"""Reading audit events back: by patient, agent and date, and a patient's
access log for the portal.

These read the store unrestricted (audit events are the exchange's own, with
:data:`~hie.audit.fhir.AUDIT_SOURCE` as their source); who may call them — a
privacy officer, the patient themself — is decided by the routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from hie.audit.chain import chain_fields
from hie.audit.fhir import AUDIT_TYPE, HTTP_STATUS_URL, INTERACTION_URL
from hie.store.base import Store, StoredResource
from hie.store.query import (
    AnyOf,
    Condition,
    Cursor,
    DateMatch,
    ReferenceMatch,
    SearchQuery,
    SortKey,
)

_NEWEST_FIRST = (SortKey("date", "date", descending=True),)


def reference_match(param: str, ref: str) -> ReferenceMatch:
    """The condition matching the index entry of ``ref`` (``Type/id`` or absolute)."""
    parts = ref.split("/")
    if len(parts) == 2 and parts[0][:1].isupper() and ":" not in ref:
        return ReferenceMatch(param, parts[1], parts[0])
    return ReferenceMatch(param, ref, "")


async def search_events(store: Store, *, patient_refs: list[str] | None = None,
                        agent_refs: list[str] | None = None, since: str | None = None,
                        until: str | None = None, limit: int = 50,
                        cursor: Cursor | None = None) -> tuple[list[StoredResource], Cursor | None]:
    """One page of audit events, newest first, matching every given filter.

    ``patient_refs`` and ``agent_refs`` match any of their references (``Patient/1``,
    ``urn:hie:person:…``, ``Practitioner/7``, ``Organization/h1``); ``since`` and
    ``until`` are store timestamps (``YYYY-MM-DDTHH:MM:SS.ffffff``), ``until``
    exclusive.
    """
    where: list[AnyOf] = []
    for param, refs in (("patient", patient_refs), ("agent", agent_refs)):
        if refs is not None:
            if not refs:
                return [], None
            terms: tuple[Condition, ...] = tuple(reference_match(param, r) for r in refs)
            where.append(AnyOf(terms))
    if since is not None:
        where.append(AnyOf((DateMatch("date", "ge", since, since),)))
    if until is not None:
        where.append(AnyOf((DateMatch("date", "lt", until, until),)))
    page = await store.search(SearchQuery(AUDIT_TYPE, tuple(where), _NEWEST_FIRST),
                              limit=limit, cursor=cursor)
    return page.resources, page.next


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    """One line of a patient's access log: who did what with their record, when, why."""

    id: str
    sequence: int | None
    recorded: str  # FHIR instant
    interaction: str
    action: str
    outcome: str  # permit / deny / error
    status: int | None
    organization: str | None
    practitioner: str | None
    client_id: str | None
    purpose_of_use: str | None
    purpose_text: str | None
    resource_type: str | None
    resources: tuple[str, ...]
    count: int | None

    def as_json(self) -> dict[str, Any]:
        """The entry as plain JSON for the portal."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in ((f, getattr(self, f)) for f in self.__slots__)}


def _ext(event: dict[str, Any], url: str, key: str) -> Any:
    for ext in event.get("extension", []):
        if ext.get("url") == url:
            return ext.get(key)
    return None


def access_log_entry(stored: StoredResource) -> AccessLogEntry:
    """Read an :class:`AccessLogEntry` from a stored ``AuditEvent``."""
    event = orjson.loads(stored.body)
    fields = chain_fields(event)
    org = practitioner = client = None
    for agent in event.get("agent", []):
        who = agent.get("who", {})
        ref = who.get("reference", "")
        if ref.startswith("Organization/"):
            org = ref.split("/", 1)[1]
        elif ref.startswith("Practitioner/"):
            practitioner = ref.split("/", 1)[1]
        elif agent.get("altId"):
            client = agent["altId"]
    purpose = (event.get("purposeOfEvent") or [{}])[0]
    codes = purpose.get("coding") or [{}]
    resources: list[str] = []
    resource_type = count = None
    for entity in event.get("entity", []):
        role = entity.get("role", {}).get("code")
        if role == "4" and "reference" in entity.get("what", {}):
            resources.append(entity["what"]["reference"])
        elif role == "24" or (role is None and "what" not in entity):
            resource_type = entity.get("description")
            for d in entity.get("detail", []):
                if d.get("type") == "count":
                    count = int(d["valueString"])
    if resource_type is None and resources:
        resource_type = resources[0].split("/", 1)[0]
    return AccessLogEntry(
        id=stored.id, sequence=fields[0] if fields else None, recorded=event["recorded"],
        interaction=(_ext(event, INTERACTION_URL, "valueString")
                     or event["subtype"][0]["code"]),
        action=event["action"], outcome=event.get("outcomeDesc", "").split(" ", 1)[0].rstrip(":"),
        status=_ext(event, HTTP_STATUS_URL, "valueInteger"), organization=org,
        practitioner=practitioner, client_id=client, purpose_of_use=codes[0].get("code"),
        purpose_text=purpose.get("text"), resource_type=resource_type,
        resources=tuple(resources), count=count)


async def patient_access_log(store: Store, *, patient_refs: list[str], limit: int = 50,
                             cursor: Cursor | None = None
                             ) -> tuple[list[AccessLogEntry], Cursor | None]:
    """One page of the accesses to a patient's records, newest first.

    ``patient_refs`` are every reference the person is known by: their
    ``Patient/…`` at each hospital and :func:`~hie.audit.model.person_ref` of the
    regional person id. Returns the entries and the cursor of the next page.
    """
    found, next_cursor = await search_events(store, patient_refs=patient_refs, limit=limit,
                                             cursor=cursor)
    return [access_log_entry(r) for r in found], next_cursor
