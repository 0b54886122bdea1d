"""The consent service: decisions, consents, consultations and break-the-glass review.

Plain async functions with keyword-only arguments over a
:class:`~consent.data.ConsentData` (dispatch's service style). The decision
itself is :func:`consent.engine.decide`, which is pure; this module loads what
it needs fresh on every call (nothing is cached, so a withdrawal counts at the
very next decision), keeps break-the-glass sessions, and enforces who may move a
consultation along its lifecycle. See ``docs/consent.md``.

Errors are :class:`ConsentServiceError` with an HTTP-ish ``status``. A
consultation the caller may not see is 404, exactly like one that does not
exist, so ids cannot be probed.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from consent import engine
from consent.data import ConsentData, DataConflict
from consent.policy import (
    ConsentError,
    Policy,
    build_consent,
    build_refusal,
    parse_consent,
    withdraw,
)
from schemas.consent import (
    ETREAT,
    BreakGlass,
    Consultation,
    ConsultationScope,
    DecisionRequest,
    DecisionResponse,
)
from schemas.resource_types import RESOURCE_TYPES
from schemas.sensitivity import SENSITIVE_CODES

T = TypeVar("T")
_RETRIES = 3


class ConsentServiceError(Exception):
    """A request the consent service refuses; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must carry a timezone")
    return now


async def _retry(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a read-modify-write again when it raced another change."""
    for attempt in range(_RETRIES):
        try:
            return await fn()
        except DataConflict:
            if attempt == _RETRIES - 1:
                raise ConsentServiceError("The record was changed by another request; "
                                          "try again", 409) from None
    raise AssertionError("unreachable")


# -- decisions -------------------------------------------------------------------

def _is_break_glass(request: DecisionRequest) -> bool:
    return request.purpose == ETREAT and bool((request.reason or "").strip())


async def _active_session(data: ConsentData, request: DecisionRequest,
                          now: datetime) -> BreakGlass | None:
    sessions = await data.break_glass(request.person, practitioner=request.practitioner)
    active = [s for s in sessions if s.organization == request.organization
              and s.practitioner == request.practitioner and s.active(now)]
    return max(active, key=lambda s: s.started, default=None)


def _with_session(response: DecisionResponse, session: BreakGlass,
                  request: DecisionRequest) -> DecisionResponse:
    """The engine counts the window from ``now``; state it from the session's
    start instead, and name the session so audit and review can refer to it."""
    expires = response.expires
    if expires is None or expires >= session.expires - timedelta(milliseconds=1):
        expires = session.expires
    basis = [b.model_copy(update={"text": (
        f"Emergency access (break-the-glass) session {session.id}, opened "
        f"{session.started.isoformat()} until {session.expires.isoformat()}, to records "
        f"without a sensitive category; reason given: {(request.reason or '').strip()}")})
        if b.code == "break-the-glass" else b for b in response.basis]
    return response.model_copy(update={"expires": expires, "basis": basis})


#: Parsed consents by (id, version, last update): a changed Consent (a withdrawal
#: included) has a new version, so a cached policy is never a stale one.
_POLICIES: OrderedDict[tuple[Any, ...], Policy] = OrderedDict()
_POLICY_CACHE = 10_000


def _policies(consents: list[dict[str, Any]]) -> list[dict[str, Any] | Policy]:
    """The consents as parsed policies, parsing each version once (a Consent
    that cannot be read is passed on as it is, for the engine to refuse)."""
    out: list[dict[str, Any] | Policy] = []
    for consent in consents:
        meta = consent.get("meta") or {}
        key = (consent.get("id"), meta.get("versionId"), meta.get("lastUpdated"))
        policy = _POLICIES.get(key) if key[0] and key[1] else None
        if policy is None:
            try:
                policy = parse_consent(consent)
            except ConsentError:
                out.append(consent)
                continue
            if key[0] and key[1]:
                _POLICIES[key] = policy
                if len(_POLICIES) > _POLICY_CACHE:
                    _POLICIES.popitem(last=False)
        out.append(policy)
    return out


def _run_engine(request: DecisionRequest, consents: list[dict[str, Any]],
                consultations: list[Consultation], hours: float,
                now: datetime) -> DecisionResponse:
    return engine.decide(request, consents=_policies(consents), consultations=consultations,
                         break_glass_hours=hours, now=now)


async def decide(data: ConsentData, request: DecisionRequest, *, now: datetime,
                 break_glass_hours: float, organizations: list[str]) -> DecisionResponse:
    """Decide what ``request`` may see of the patient's records at ``now``.

    Break-the-glass is time-boxed from when it started: the first granted
    ``ETREAT`` request of (person, organisation, practitioner) opens a session
    (recorded, and queued for review); later requests inside its window reuse
    it; after it expires the next one opens a new session. ``organizations``:
    every hospital of the region, listed in ``visible_organizations`` when the
    answer covers all of them.
    """
    now = _now(now)
    consents = await data.consents(request.person)
    consultations: list[Consultation] = []
    if request.consultation is not None:
        found = await data.consultation(request.consultation)
        consultations = [found] if found is not None else []
    session = await _active_session(data, request, now) if _is_break_glass(request) else None
    hours = ((session.expires - now).total_seconds() / 3600 if session is not None
             else break_glass_hours)
    response = _run_engine(request, consents, consultations, hours, now)
    if response.break_the_glass and session is None:
        opened = BreakGlass(id=str(uuid.uuid4()), person=request.person,
                            organization=request.organization,
                            practitioner=request.practitioner,
                            reason=(request.reason or "").strip(), started=now,
                            expires=now + timedelta(hours=break_glass_hours))
        session = await data.save_break_glass(opened)
        if session.id != opened.id:  # a concurrent request opened one first: use it
            hours = (session.expires - now).total_seconds() / 3600
            response = _run_engine(request, consents, consultations, hours, now)
    if response.break_the_glass and session is not None:
        response = _with_session(response, session, request)
    if response.all_organizations:
        own = request.organization
        response = response.model_copy(update={"visible_organizations": list(dict.fromkeys(
            [*response.visible_organizations, *sorted(o for o in organizations if o != own)]))})
    return response


# -- consents --------------------------------------------------------------------

def _updated(consent: dict[str, Any]) -> str:
    meta = consent.get("meta")
    return str(meta.get("lastUpdated", "")) if isinstance(meta, dict) else ""


async def list_consents(data: ConsentData, *, person: str) -> list[dict[str, Any]]:
    """The person's consents, every status, most recently changed first."""
    return sorted(await data.consents(person), key=_updated, reverse=True)


async def grant_consent(data: ConsentData, *, person: str, organization: str | None = None,
                        practitioner: str | None = None, purposes: list[str],
                        open_labels: Sequence[str] = (),
                        resource_types: list[str] | None = None,
                        start: datetime | None = None, end: datetime | None = None,
                        masks: Sequence[str] = (),
                        grantee_name: str | None = None,
                        custodians: Sequence[str] = (),
                        now: datetime | None = None) -> dict[str, Any]:
    """Record a grant to one hospital or one doctor (see ``build_consent``)."""
    if start is not None and end is not None and end <= start:
        raise ConsentServiceError("The consent must end after it starts")
    try:
        consent = build_consent(person=person, recorded=_now(now), organization=organization,
                                practitioner=practitioner, grantee_name=grantee_name,
                                purposes=list(purposes), categories=list(open_labels),
                                resource_types=resource_types, custodians=list(custodians),
                                start=start, end=end, masks=list(masks))
    except ValueError as exc:  # ConsentError included
        raise ConsentServiceError(str(exc)) from exc
    return await data.save_consent(consent)


async def refuse(data: ConsentData, *, person: str, organization: str | None = None,
                 practitioner: str | None = None, purposes: Sequence[str] = (),
                 categories: Sequence[str] = (),
                 start: datetime | None = None, end: datetime | None = None,
                 grantee_name: str | None = None, now: datetime | None = None
                 ) -> dict[str, Any]:
    """Record an explicit refusal (one hospital, one doctor, or everyone; all
    records or some categories; ``purposes=["ETREAT"]`` refuses break-the-glass)."""
    try:
        consent = build_refusal(person=person, recorded=_now(now), organization=organization,
                                practitioner=practitioner, grantee_name=grantee_name,
                                purposes=list(purposes), categories=list(categories),
                                start=start, end=end)
    except ValueError as exc:
        raise ConsentServiceError(str(exc)) from exc
    return await data.save_consent(consent)


async def withdraw_consent(data: ConsentData, *, person: str, consent_id: str
                           ) -> dict[str, Any]:
    """Withdraw one of the person's consents (status ``inactive``), effective at
    the next decision. Withdrawing a withdrawn consent changes nothing."""

    async def run() -> dict[str, Any]:
        found = next((c for c in await data.consents(person) if c.get("id") == consent_id),
                     None)
        if found is None:
            raise ConsentServiceError(f"No consent {consent_id} for this person", 404)
        if found.get("status") == "inactive":
            return found
        return await data.save_consent(withdraw(found))

    return await _retry(run)


# -- consultations ---------------------------------------------------------------

def _invited(c: Consultation, organization: str, practitioner: str | None) -> bool:
    """Whether the caller is the invited party: the invited hospital (any of its
    doctors or its system), or — when only a doctor was invited — that doctor."""
    if c.invited_organization is not None:
        return organization == c.invited_organization and (
            practitioner is None or c.invited_practitioner is None
            or practitioner == c.invited_practitioner)
    return practitioner is not None and practitioner == c.invited_practitioner


def _visible(c: Consultation, organization: str, practitioner: str | None) -> bool:
    return organization == c.requester or _invited(c, organization, practitioner)


async def _load(data: ConsentData, id: str) -> Consultation:
    found = await data.consultation(id)
    if found is None:
        raise ConsentServiceError(f"No consultation {id}", 404)
    return found


async def _for_hospital(data: ConsentData, id: str, organization: str,
                        practitioner: str | None) -> Consultation:
    c = await _load(data, id)
    if not _visible(c, organization, practitioner):
        raise ConsentServiceError(f"No consultation {id}", 404)  # same as unknown
    return c


async def _for_person(data: ConsentData, id: str, person: str) -> Consultation:
    c = await _load(data, id)
    if c.person != person:
        raise ConsentServiceError(f"No consultation {id}", 404)
    return c


def _expect(c: Consultation, *states: str) -> None:
    if c.status not in states:
        raise ConsentServiceError(f"The consultation is {c.status}; this needs it to be "
                                  f"{' or '.join(states)}", 409)


def _check_scope(scope: ConsultationScope) -> None:
    # an empty list would open nothing; None is "all" — refuse the ambiguity
    if scope.resource_types == [] or scope.organizations == []:
        raise ConsentServiceError("An empty scope list opens nothing; omit it to mean all")
    if bad := [t for t in scope.resource_types or () if t not in RESOURCE_TYPES]:
        raise ConsentServiceError(f"Unknown resource type(s) in scope: {bad}")
    if bad := [lab for lab in scope.labels if lab not in SENSITIVE_CODES]:
        raise ConsentServiceError(f"Unknown sensitivity label(s) in scope: {bad}")


async def request_consultation(data: ConsentData, *, person: str, requester: str,
                               invited_organization: str | None = None,
                               invited_practitioner: str | None = None, reason: str,
                               start: datetime, end: datetime,
                               scope: ConsultationScope) -> Consultation:
    """A hospital asks another hospital (or a named specialist) for a remote
    consultation; it grants nothing until accepted and approved by the patient."""
    if invited_organization is None and invited_practitioner is None:
        raise ConsentServiceError("Invite an organisation or a practitioner")
    if invited_organization == requester:
        raise ConsentServiceError("A hospital cannot invite itself to a consultation")
    if not reason.strip():
        raise ConsentServiceError("A consultation needs a reason")
    if start.tzinfo is None or end.tzinfo is None:
        raise ConsentServiceError("The period needs times with a timezone")
    if end <= start:
        raise ConsentServiceError("The consultation must end after it starts")
    _check_scope(scope)
    c = Consultation(id=str(uuid.uuid4()), person=person, requester=requester,
                     invited_organization=invited_organization,
                     invited_practitioner=invited_practitioner, status="requested",
                     start=start, end=end, reason=reason.strip(), scope=scope)
    return await data.save_consultation(c)


async def get_consultation(data: ConsentData, *, organization: str, id: str,
                           practitioner: str | None = None) -> Consultation:
    """One consultation, for its requesting or invited hospital (else 404)."""
    return await _for_hospital(data, id, organization, practitioner)


async def list_consultations(data: ConsentData, *, person: str) -> list[Consultation]:
    """The person's consultations, newest period first (the portal's list)."""
    found = await data.consultations(person)
    return sorted(found, key=lambda c: (c.start or datetime.min.replace(tzinfo=UTC)),
                  reverse=True)


async def _move(load: Callable[[], Awaitable[Consultation]],
                change: Callable[[Consultation], Consultation | None],
                data: ConsentData) -> Consultation:
    """Load, check and change a consultation, saved over the version read: a
    concurrent move (the patient declining while the hospital accepts) makes it
    start again from the new state, so no move can undo another."""

    async def run() -> Consultation:
        c = await load()
        changed = change(c)
        return c if changed is None else await data.save_consultation(changed)

    return await _retry(run)


async def approve_consultation(data: ConsentData, *, person: str, id: str) -> Consultation:
    """The patient approves in the portal (while requested or accepted)."""
    def change(c: Consultation) -> Consultation | None:
        _expect(c, "requested", "accepted")
        return None if c.approved else c.model_copy(update={"approved": True,
                                                            "approval": "portal"})

    return await _move(lambda: _for_person(data, id, person), change, data)


async def decline_consultation(data: ConsentData, *, person: str, id: str) -> Consultation:
    """The patient declines — also after approving: it ends the access at once."""
    def change(c: Consultation) -> Consultation:
        _expect(c, "requested", "accepted")
        return c.model_copy(update={"status": "declined", "approved": False,
                                    "approval": None})

    return await _move(lambda: _for_person(data, id, person), change, data)


async def record_paper_consent(data: ConsentData, *, requester: str, id: str) -> Consultation:
    """The requesting hospital records that the patient signed a paper consent."""
    def change(c: Consultation) -> Consultation | None:
        if c.requester != requester:
            raise ConsentServiceError("Only the requesting hospital records a paper consent",
                                      403)
        _expect(c, "requested", "accepted")
        return None if c.approved else c.model_copy(update={"approved": True,
                                                            "approval": "paper"})

    return await _move(lambda: _for_hospital(data, id, requester, None), change, data)


async def accept_consultation(data: ConsentData, *, organization: str, id: str,
                              practitioner: str | None = None) -> Consultation:
    """The invited hospital (or invited doctor) accepts."""
    def change(c: Consultation) -> Consultation:
        if not _invited(c, organization, practitioner):
            raise ConsentServiceError("Only the invited party accepts a consultation", 403)
        _expect(c, "requested")
        return c.model_copy(update={"status": "accepted"})

    return await _move(lambda: _for_hospital(data, id, organization, practitioner), change,
                       data)


async def complete_consultation(data: ConsentData, *, organization: str, id: str,
                                practitioner: str | None = None) -> Consultation:
    """The invited or the requesting hospital marks it done; access ends."""
    def change(c: Consultation) -> Consultation:
        _expect(c, "accepted")
        return c.model_copy(update={"status": "completed"})

    return await _move(lambda: _for_hospital(data, id, organization, practitioner), change,
                       data)


async def cancel_consultation(data: ConsentData, *, organization: str, id: str,
                              practitioner: str | None = None) -> Consultation:
    """The requesting hospital withdraws the request, or the invited one turns
    it down, before completion; access ends."""
    def change(c: Consultation) -> Consultation:
        _expect(c, "requested", "accepted")
        return c.model_copy(update={"status": "cancelled"})

    return await _move(lambda: _for_hospital(data, id, organization, practitioner), change,
                       data)


# -- break-the-glass review --------------------------------------------------------

async def break_glass_queue(data: ConsentData, *, reviewed: bool = False) -> list[BreakGlass]:
    """The privacy officers' queue: sessions not yet reviewed (or reviewed ones)."""
    return await data.break_glass(reviewed=reviewed)


async def list_break_glass(data: ConsentData, *, person: str) -> list[BreakGlass]:
    """Every emergency access to this person (the portal highlights them)."""
    return await data.break_glass(person)


async def review_break_glass(data: ConsentData, *, id: str, reviewer: str, note: str,
                             now: datetime | None = None) -> BreakGlass:
    """A privacy officer records the review of one session (once)."""
    if not note.strip():
        raise ConsentServiceError("A review needs a note")
    pending = next((s for s in await data.break_glass(reviewed=False) if s.id == id), None)
    if pending is None:
        if any(s.id == id for s in await data.break_glass(reviewed=True)):
            raise ConsentServiceError(f"Break-the-glass session {id} is already reviewed", 409)
        raise ConsentServiceError(f"No break-the-glass session {id}", 404)
    return await data.save_break_glass(pending.model_copy(update={
        "reviewed": True, "reviewer": reviewer, "note": note.strip(),
        "reviewed_at": _now(now)}))
