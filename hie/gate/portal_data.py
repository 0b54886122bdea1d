"""The patient portal's data, over the exchange's store.

:class:`StorePortalData` implements :class:`consent.portal.data.PortalData`
with the registry (portal accounts, the hospital and doctor directory), the
identity service (which Patients are this person), the audit service (the
access log) and the store.

**Unrestricted reads, on purpose.** The portal reads the person's records with
no :class:`~hie.store.query.Restriction`: this is the patient's own view of
their own record (PIPL art. 45 gives them the right to see and copy it), so
neither the consent gate nor masking applies — the resident ID number, the
sensitive categories, every hospital's records are theirs. The bypass is safe
only because the person id comes from the portal's server-side session, set at
a password login for that person's account; every method here takes that id
and reads nothing of anyone else.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from consent.portal.data import AccessEntry
from hie.audit.model import person_ref
from hie.audit.service import AccessLogEntry, patient_access_log
from hie.fhir.bundles import decode_cursor, encode_cursor
from hie.fhir.operations.everything import compartment_types
from hie.fhir.writes import instant, stamp_now
from hie.gate.data import StoreConsentData
from hie.identity.service import patient_ids_of_person
from hie.registry import service as registry
from hie.store.base import Store, StoredResource
from hie.store.query import AnyOf, Cursor, IdMatch, ReferenceMatch, SearchQuery
from schemas.search_parameters import PATIENT_COMPARTMENT

_PAGE = 500  # store page size while collecting a person's records


class StorePortalData:
    """:class:`~consent.portal.data.PortalData` over the exchange's store."""

    def __init__(self, store: Store, *, base_url: str = "") -> None:
        self.store = store
        self.base_url = base_url.rstrip("/")

    async def authenticate(self, username: str, password: str) -> str | None:
        account = await registry.verify_password(self.store, username=username,
                                                 password=password)
        return account.person_id if account is not None else None

    async def person_name(self, person: str) -> str:
        for patient in await self._patients(person):
            for name in patient.get("name") or []:
                text = name.get("text") or (name.get("family", "")
                                            + "".join(name.get("given") or []))
                if text:
                    return str(text)
        return ""

    async def _patients(self, person: str) -> list[dict[str, Any]]:
        ids = await patient_ids_of_person(self.store, person)
        if not ids:
            return []
        return [_body(r) for r in await self._all(
            SearchQuery("Patient", (AnyOf((IdMatch(tuple(ids)),)),)))]

    async def _all(self, query: SearchQuery) -> list[StoredResource]:
        found: list[StoredResource] = []
        cursor: Cursor | None = None
        while True:
            page = await self.store.search(query, limit=_PAGE, cursor=cursor)
            found += page.resources
            if page.next is None:
                return found
            cursor = page.next

    async def records(self, person: str) -> list[dict[str, Any]]:
        # unrestricted: the patient's own view (see the module docstring)
        ids = tuple(await patient_ids_of_person(self.store, person))
        if not ids:
            return []
        out: list[dict[str, Any]] = []
        for rtype in compartment_types():
            if rtype == "Patient":
                where: tuple[AnyOf, ...] = (AnyOf((IdMatch(ids),)),)
            else:
                where = (AnyOf(tuple(ReferenceMatch(p, pid, "Patient")
                                     for p in PATIENT_COMPARTMENT[rtype] for pid in ids)),)
            out += [_body(r) for r in await self._all(SearchQuery(rtype, where))]
        return out

    async def organization_names(self) -> dict[str, str]:
        return {o.id: o.name for o in await registry.list_organizations(self.store)
                if o.active}

    async def practitioners(self) -> list[dict[str, Any]]:
        out = []
        for org in await registry.list_organizations(self.store):
            if org.active:
                out += [{"id": p.id, "name": p.name, "organization": p.organization}
                        for p in await registry.list_practitioners(self.store,
                                                                   organization=org.id)
                        if p.active]
        return out

    async def access_log(self, person: str, *, limit: int, cursor: str | None
                         ) -> tuple[list[AccessEntry], str | None]:
        refs = [f"Patient/{pid}" for pid in await patient_ids_of_person(self.store, person)]
        refs.append(person_ref(person))
        start = decode_cursor(cursor) if cursor else None
        found, next_cursor = await patient_access_log(self.store, patient_refs=refs,
                                                      limit=limit, cursor=start)
        return ([_entry(e) for e in found],
                encode_cursor(next_cursor) if next_cursor is not None else None)

    async def export_bundle(self, person: str) -> dict[str, Any]:
        """Every record, and the person's consents (their choices are their data too)."""
        resources = await self.records(person)
        resources += await self.consent_data().consents(person)
        entries = [{"fullUrl": f"{self.base_url}/fhir/{r['resourceType']}/{r['id']}"
                    if self.base_url else f"{r['resourceType']}/{r['id']}",
                    "resource": r} for r in resources]
        return {"resourceType": "Bundle", "type": "collection",
                "timestamp": instant(stamp_now()), "entry": entries}

    def consent_data(self) -> StoreConsentData:
        return StoreConsentData(self.store)


def _body(record: StoredResource) -> dict[str, Any]:
    return orjson.loads(record.body)


def _entry(e: AccessLogEntry) -> AccessEntry:
    """An audit log line as the portal shows it; ``ETREAT`` is break-the-glass."""
    what = ", ".join(e.resources[:3]) or e.resource_type or e.interaction
    if len(e.resources) > 3:
        what += f" (+{len(e.resources) - 3})"
    reason = e.purpose_text if e.purpose_of_use == "ETREAT" else None
    return AccessEntry(when=e.recorded, organization=e.organization,
                       practitioner=e.practitioner, purpose=e.purpose_of_use, what=what,
                       outcome=e.outcome, break_the_glass=e.purpose_of_use == "ETREAT",
                       reason=reason, interaction=e.interaction, count=e.count)


async def portal_data(request: Request) -> StorePortalData:
    """The portal's data dependency: the app's store, seen as the patient's own."""
    return StorePortalData(request.app.state.store,
                           base_url=request.app.state.settings.base_url)
