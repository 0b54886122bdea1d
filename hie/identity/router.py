"""HTTP routes of the identity index: thin adapters over the services.

* :data:`pix_router` — ``GET /Patient/$ihe-pix`` (PIXm ITI-83). Mount it under
  ``/fhir`` *before* the generic FHIR routes, or ``/{resource_type}/{id}``
  answers first.
* :func:`make_admin_router` — ``/admin/identity/…``: the review queue, link,
  unlink, merge and a person's Patients. The caller's already-authenticated
  administrator arrives through the ``admin`` dependency the app factory
  passes in (the routes never authenticate anyone themselves), and every
  change is handed to ``sink`` inside the transaction that makes it — by
  default the audit chain — so a change and its audit record commit together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.responses import Response

from hie.config import Settings
from hie.dependencies import get_restriction, get_settings_dep, get_store
from hie.identity import admin as admin_service
from hie.identity import service
from hie.identity.hooks import EventSink
from hie.identity.model import LinkEvent
from hie.identity.pix import corresponding_identifiers
from hie.store.base import Store, Transaction
from hie.store.query import Restriction


async def audit_sink(tx: Transaction, events: list[LinkEvent], ctx: Any) -> None:
    """Append the events to the audit chain in the caller's transaction."""
    from hie.audit.chain import append_in_tx

    organization = getattr(ctx, "organization", None)
    await append_in_tx(tx, [e.to_audit_record(organization=organization) for e in events])


def actor_of(ctx: Any) -> str:
    """A stable name of the administrator for links and audit."""
    for attr in ("admin_id", "subject", "client_id", "practitioner", "organization"):
        value = getattr(ctx, attr, None)
        if isinstance(value, str) and value:
            return value
    return str(ctx)


# -- PIXm -------------------------------------------------------------------------

pix_router = APIRouter(tags=["IHE PIXm"])


@pix_router.get("/Patient/$ihe-pix", summary="PIXm Get Corresponding Identifiers (ITI-83)")
async def ihe_pix(request: Request, sourceIdentifier: str = Query(...),  # noqa: N803
                  store: Store = Depends(get_store),
                  settings: Settings = Depends(get_settings_dep),
                  restriction: Restriction | None = Depends(get_restriction)) -> Response:
    from hie.fhir.http import fhir_response

    targets = request.query_params.getlist("targetSystem")
    answer = await corresponding_identifiers(
        store, source_identifier=sourceIdentifier, target_systems=targets,
        resident_id_system=settings.resident_id_system, restriction=restriction)
    return fhir_response(answer)


# -- administration ------------------------------------------------------------------

class LinkRequest(BaseModel):
    """Declare ``patient`` the same person as ``target`` (Patient ids)."""

    patient: str
    target: str
    reason: str | None = Field(None, max_length=500)


class UnlinkRequest(BaseModel):
    patient: str
    reason: str | None = Field(None, max_length=500)


class MergeRequest(BaseModel):
    """HL7 A40 semantics: ``prior`` was merged into ``surviving`` at ``source``."""

    source: str
    prior: str
    surviving: str
    reason: str | None = Field(None, max_length=500)


class ReviewDecision(BaseModel):
    decision: Literal["link", "separate"]
    person: str | None = None


def _events_json(events: list[LinkEvent]) -> dict[str, Any]:
    return {"events": [{"action": e.action, "patient": e.patient_id, "person": e.person_id,
                        "previousPerson": e.previous_person_id, "method": e.method,
                        "replacedBy": e.replaced_by} for e in events]}


def _problem(exc: service.IdentityError) -> JSONResponse:
    return JSONResponse({"title": "identity", "status": exc.status, "detail": str(exc)},
                        status_code=exc.status, media_type="application/problem+json")


def make_admin_router(*, admin: Callable[..., Any],
                      sink: EventSink | None = audit_sink) -> APIRouter:
    """The ``/admin/identity`` routes, authorised by the ``admin`` dependency."""
    router = APIRouter(prefix="/admin/identity", tags=["identity administration"])

    async def change(store: Store, ctx: Any,
                     fn: Callable[[Transaction], Awaitable[list[LinkEvent]]]) -> Response:
        async def run(tx: Transaction) -> list[LinkEvent]:
            events = await fn(tx)
            if sink is not None and events:
                await sink(tx, events, ctx)
            return events

        try:
            events = await store.transact(run)
        except service.IdentityError as exc:
            return _problem(exc)
        return JSONResponse(_events_json(events))

    @router.get("/reviews", summary="the review queue")
    async def reviews(status: str = "open", limit: int = Query(50, ge=1, le=500),
                      after: int = Query(0, ge=0), ctx: Any = Depends(admin),
                      store: Store = Depends(get_store)) -> Response:
        items, nxt = await admin_service.list_reviews(store, status=status, limit=limit,
                                                      after=after)
        return JSONResponse({"items": [i.to_json() for i in items], "next": nxt})

    @router.post("/reviews/{review_id}", summary="decide a review item")
    async def decide(review_id: str, body: ReviewDecision, ctx: Any = Depends(admin),
                     store: Store = Depends(get_store)) -> Response:
        return await change(store, ctx, lambda tx: admin_service.resolve_review(
            tx, review_id=review_id, decision=body.decision, actor=actor_of(ctx),
            person_id=body.person))

    @router.post("/link", summary="link two Patients as one person")
    async def link(body: LinkRequest, ctx: Any = Depends(admin),
                   store: Store = Depends(get_store)) -> Response:
        return await change(store, ctx, lambda tx: admin_service.link_patients(
            tx, patient_id=body.patient, target_patient_id=body.target,
            actor=actor_of(ctx), reason=body.reason))

    @router.post("/unlink", summary="split a Patient off into a person of its own")
    async def unlink(body: UnlinkRequest, ctx: Any = Depends(admin),
                     store: Store = Depends(get_store)) -> Response:
        return await change(store, ctx, lambda tx: admin_service.unlink_patient(
            tx, patient_id=body.patient, actor=actor_of(ctx), reason=body.reason))

    @router.post("/merge", summary="record an HL7 merge (A40)")
    async def merge(body: MergeRequest, ctx: Any = Depends(admin),
                    store: Store = Depends(get_store)) -> Response:
        return await change(store, ctx, lambda tx: admin_service.merge(
            tx, source=body.source, prior_patient_id=body.prior,
            surviving_patient_id=body.surviving, actor=actor_of(ctx), reason=body.reason))

    @router.get("/patients/{patient_id}", summary="the person of a Patient")
    async def person_of(patient_id: str, ctx: Any = Depends(admin),
                        store: Store = Depends(get_store)) -> Response:
        link = await service.load_link(store, patient_id)
        if link is None:
            return _problem(service.IdentityNotFound(f"Patient/{patient_id} is not linked"))
        person = await service.person_id_of(store, patient_id)
        return JSONResponse({
            "patient": patient_id, "person": person, "method": link.method,
            "score": link.score, "pinned": link.pinned, "residentStatus": link.resident_status,
            "reasons": link.reasons, "replacedBy": link.replaced_by,
            "patients": await service.linked_patient_ids(store, patient_id)})

    return router
