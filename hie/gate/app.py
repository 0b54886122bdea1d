"""The standalone consent service (``hie-consent serve``), and its routes for the exchange.

:func:`create_consent_app` builds the consent service as its own process: the
same settings object as the exchange (:class:`hie.config.Settings`, ``HIE_*``),
the same document store (``HIE_STORE_URL``), and the routers of
:mod:`consent.router` with real authentication:

* the decision API admits only an access token of role ``exchange-service``
  and organisation ``exchange``. Tokens are verified with
  :class:`hie.auth.tokens.TokenService` over the exchange's key folder
  (``HIE_VAR_DIR``/keys, shared with the exchange — a volume in docker-compose)
  and the same ``HIE_BASE_URL`` (issuer and audience). We chose the shared key
  folder over fetching the exchange's JWKS: no network dependency at start-up
  or on a key rotation (the key ring re-reads the folder), and the exchange's
  own verification code, unchanged. The consent service never creates keys.
* hospitals (their systems and doctors) and privacy officers use their normal
  access tokens from the exchange's token endpoint
  (:func:`hie.auth.dependencies.authenticate`).

``/healthz`` is the one public route. :func:`include_consent_routes` mounts the
same routers on the exchange's own app (in-process mode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

import hie
from consent.portal.routes import portal_router
from consent.portal.security import PortalConfig
from consent.router import (
    DecisionSettings,
    PersonResolver,
    break_glass_router,
    consultation_router,
    decision_router,
)
from hie import errors
from hie.auth.context import AuthContext
from hie.auth.dependencies import authenticate, require_role
from hie.config import Settings, get_settings
from hie.context import organization_source
from hie.gate import ROLE_EXCHANGE_SERVICE, break_glass_hours, cached_organizations
from hie.gate.data import StoreConsentData
from hie.gate.portal_data import portal_data
from hie.identity.service import person_id_of
from hie.registry.models import EXCHANGE_ORGANIZATION, ROLE_PRIVACY_OFFICER
from hie.store import open_store
from hie.store.base import Store
from hie.store.query import Restriction


async def exchange_service(ctx: AuthContext = Depends(authenticate)) -> AuthContext:
    """The exchange itself (role ``exchange-service``), else 403."""
    if ctx.organization != EXCHANGE_ORGANIZATION or ROLE_EXCHANGE_SERVICE not in ctx.roles:
        raise HTTPException(403, "The decision API is for the exchange only")
    return ctx


async def hospital(ctx: AuthContext = Depends(authenticate)) -> AuthContext:
    """A hospital's system or one of its doctors (not the exchange's own tokens)."""
    if ctx.organization == EXCHANGE_ORGANIZATION:
        raise HTTPException(403, "Consultations are requested and handled by hospitals")
    return ctx


async def consent_data(request: Request) -> StoreConsentData:
    """The consent service's data in the app's store."""
    return StoreConsentData(request.app.state.store)


async def decision_settings(request: Request) -> DecisionSettings:
    """The break-the-glass window and the region's hospitals (cached briefly)."""
    state = request.app.state
    found = getattr(state, "consent_decisions", None)
    if found is None:
        found = state.consent_decisions = DecisionSettings(
            break_glass_hours=break_glass_hours(state.settings),
            organizations=cached_organizations(state.store))
    return found


def person_resolver(store: Store) -> PersonResolver:
    """Resolves a hospital's own Patient id to its regional person, reading the
    Patient only through that hospital's restriction (another hospital's Patient
    is "not found")."""

    async def resolve(organization: str, patient: str) -> str | None:
        own = Restriction(sources=frozenset({organization_source(organization)}))
        rec = await store.read("Patient", patient, restriction=own)
        if rec is None or rec.deleted:
            return None
        return await person_id_of(store, patient)

    return resolve


def include_consent_routes(app: FastAPI) -> None:
    """Mount the consent API (decision, consultations, break-the-glass review) on
    ``app``, whose ``state`` holds ``store`` and ``settings`` once started."""

    async def resolve(organization: str, patient: str) -> str | None:
        return await person_resolver(app.state.store)(organization, patient)

    app.include_router(decision_router(exchange_service, consent_data, decision_settings))
    app.include_router(consultation_router(hospital, consent_data, resolve_person=resolve))
    app.include_router(break_glass_router(require_role(ROLE_PRIVACY_OFFICER), consent_data))


def create_consent_app(settings: Settings | None = None) -> FastAPI:
    """Build the standalone consent service."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.store_url)
        await store.open()
        app.state.store = store
        try:
            yield
        finally:
            await store.close()

    app = FastAPI(title="Regional health-record exchange — consent service",
                  version=hie.__version__, lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)

    @app.get("/healthz", tags=["operations"], summary="liveness and store reachability")
    async def healthz(request: Request) -> Response:
        if await request.app.state.store.ping():
            return JSONResponse({"status": "ok", "service": "consent"})
        return JSONResponse({"status": "unavailable", "detail": "the store does not answer"},
                            status_code=503)

    include_consent_routes(app)
    app.include_router(portal_router(portal_data, PortalConfig(base_url=settings.base_url)))
    return app
