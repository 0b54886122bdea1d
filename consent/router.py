"""The consent service's HTTP API: thin routes over :mod:`consent.service`.

``consent`` must not import the exchange, so the routers are built by factories
that receive their dependencies — who the caller is (authentication belongs to
the app that mounts them), where the data is, and the decision settings:

* :func:`decision_router` — ``POST /consent/decide``, for the exchange only
  (service authentication);
* :func:`consultation_router` — a hospital requests, reads, accepts, completes
  and cancels consultations, and records a paper consent; the calling hospital
  (and doctor) come from its access token through ``hospital_dep``, which
  returns an object with ``.organization`` and ``.practitioner``;
* :func:`break_glass_router` — the privacy officers' review queue.

Errors of the service are JSON problem bodies (``application/problem+json``)
with the service's status; a consultation the caller may not see is 404, like
one that does not exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from consent import service
from consent.data import ConsentData
from schemas.consent import BreakGlassReview, DecisionRequest, NewConsultation

#: Resolves the requesting hospital's own Patient id to its regional person
#: (None: no such Patient of that hospital).
PersonResolver = Callable[[str, str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    """What decisions need besides the data: the break-the-glass window and the
    region's hospitals (awaited per decision, so the app can cache or not)."""

    break_glass_hours: float
    organizations: Callable[[], Awaitable[list[str]]]


def problem(status: int, message: str) -> Response:
    """A JSON problem body, the shape the exchange answers errors in off ``/fhir``."""
    return JSONResponse({"type": "about:blank", "title": message, "status": status},
                        status_code=status, media_type="application/problem+json")


def _json(model: BaseModel | list[Any], status: int = 200) -> Response:
    if isinstance(model, list):
        body = b"[" + b",".join(m.model_dump_json().encode() for m in model) + b"]"
    else:
        body = model.model_dump_json().encode()
    return Response(body, status_code=status, media_type="application/json")


async def _answer(call: Awaitable[Any], status: int = 200) -> Response:
    try:
        return _json(await call, status)
    except service.ConsentServiceError as exc:
        return problem(exc.status, str(exc))


def decision_router(service_auth_dep: Callable[..., Any], data_dep: Callable[..., Any],
                    settings_dep: Callable[..., Any]) -> APIRouter:
    """``POST /consent/decide``; ``service_auth_dep`` admits the exchange only and
    ``settings_dep`` returns :class:`DecisionSettings`."""
    router = APIRouter(prefix="/consent", tags=["consent"],
                       dependencies=[Depends(service_auth_dep)])

    @router.post("/decide", summary="what a requester may see of a patient's records",
                 response_model=None)
    async def decide(request: DecisionRequest, data: ConsentData = Depends(data_dep),
                     settings: DecisionSettings = Depends(settings_dep)) -> Response:
        return await _answer(service.decide(
            data, request, now=datetime.now(UTC), break_glass_hours=settings.break_glass_hours,
            organizations=await settings.organizations()))

    return router


def consultation_router(hospital_dep: Callable[..., Any], data_dep: Callable[..., Any], *,
                        resolve_person: PersonResolver | None = None) -> APIRouter:
    """Remote consultations, for the requesting and the invited hospital.

    ``resolve_person`` lets a hospital name the patient by its own Patient id;
    without it, requests must name the regional ``person``."""
    router = APIRouter(prefix="/consent/consultations", tags=["consent"])

    @router.post("", summary="request a remote consultation", response_model=None)
    async def create(body: NewConsultation, caller: Any = Depends(hospital_dep),
                     data: ConsentData = Depends(data_dep)) -> Response:
        person = body.person
        if body.patient is not None:
            if resolve_person is None:
                return problem(400, "Name the patient by its regional person id (person)")
            person = await resolve_person(caller.organization, body.patient)
            if person is None:
                return problem(404, f"No Patient {body.patient} of {caller.organization}")
        assert person is not None
        return await _answer(service.request_consultation(
            data, person=person, requester=caller.organization,
            invited_organization=body.invited_organization,
            invited_practitioner=body.invited_practitioner, reason=body.reason,
            start=body.start, end=body.end, scope=body.scope), 201)

    @router.get("/{id}", summary="one consultation (requesting or invited hospital)",
                response_model=None)
    async def read(id: str, caller: Any = Depends(hospital_dep),
                   data: ConsentData = Depends(data_dep)) -> Response:
        return await _answer(service.get_consultation(
            data, organization=caller.organization, practitioner=caller.practitioner, id=id))

    @router.post("/{id}/accept", summary="the invited hospital accepts", response_model=None)
    async def accept(id: str, caller: Any = Depends(hospital_dep),
                     data: ConsentData = Depends(data_dep)) -> Response:
        return await _answer(service.accept_consultation(
            data, organization=caller.organization, practitioner=caller.practitioner, id=id))

    @router.post("/{id}/complete", summary="mark it done (access ends)", response_model=None)
    async def complete(id: str, caller: Any = Depends(hospital_dep),
                       data: ConsentData = Depends(data_dep)) -> Response:
        return await _answer(service.complete_consultation(
            data, organization=caller.organization, practitioner=caller.practitioner, id=id))

    @router.post("/{id}/cancel", summary="withdraw or turn down (access ends)",
                 response_model=None)
    async def cancel(id: str, caller: Any = Depends(hospital_dep),
                     data: ConsentData = Depends(data_dep)) -> Response:
        return await _answer(service.cancel_consultation(
            data, organization=caller.organization, practitioner=caller.practitioner, id=id))

    @router.post("/{id}/paper-consent", summary="the patient signed a paper consent",
                 response_model=None)
    async def paper_consent(id: str, caller: Any = Depends(hospital_dep),
                            data: ConsentData = Depends(data_dep)) -> Response:
        return await _answer(service.record_paper_consent(
            data, requester=caller.organization, id=id))

    return router


def _reviewer(officer: Any) -> str:
    """Who reviewed: the officer's practitioner id, else the token's client."""
    return str(getattr(officer, "practitioner", None) or getattr(officer, "client_id", None)
               or officer.organization)


def break_glass_router(officer_dep: Callable[..., Any], data_dep: Callable[..., Any]
                       ) -> APIRouter:
    """The privacy officers' review queue of break-the-glass sessions."""
    router = APIRouter(prefix="/consent/break-glass", tags=["consent"])

    @router.get("", summary="break-the-glass sessions (unreviewed by default)",
                response_model=None)
    async def queue(reviewed: bool = Query(False), officer: Any = Depends(officer_dep),
                    data: ConsentData = Depends(data_dep)) -> Response:
        return await _answer(service.break_glass_queue(data, reviewed=reviewed))

    @router.post("/{id}/review", summary="record the review of one session",
                 response_model=None)
    async def review(id: str, body: BreakGlassReview, officer: Any = Depends(officer_dep),
                     data: ConsentData = Depends(data_dep)) -> Response:
        return await _answer(service.review_break_glass(
            data, id=id, reviewer=_reviewer(officer), note=body.note))

    return router
