"""The exchange's app factory: one place mounts every router.

``create_app`` builds the ASGI app from a :class:`~hie.config.Settings`; the
store, the token service, the audit log and the usage meter are opened in the
lifespan, so importing this module has no side effects. ``hie serve`` runs it
under uvicorn (``hie.app:served_app``, a factory: ``create_app`` with its heap
frozen once started).

Every router is authenticated by default (its routes depend on the caller);
the public ones are the named exception: health, the CapabilityStatement, the
SMART configuration, the token endpoint and the JWKS.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import hie
from consent.portal.routes import portal_router
from consent.portal.security import PortalConfig
from hie import errors, health
from hie.audit.log import AuditLog
from hie.audit.writes import write_hook as audit_write_hook
from hie.auth.dependencies import require_role
from hie.auth.router import router as auth_router
from hie.auth.router import smart_router
from hie.auth.tokens import TokenService
from hie.config import Settings, get_settings
from hie.dicomweb.labels import relabel_hook
from hie.dicomweb.router import router as dicomweb_router
from hie.dicomweb.studies import StudyWriter
from hie.fhir import lane as fhir_lane
from hie.fhir.access import AccessAuditMiddleware
from hie.fhir.router import router as fhir_router
from hie.fhir.writes import WriteHook
from hie.gate import consent_client
from hie.gate.app import include_consent_routes
from hie.gate.portal_data import portal_data
from hie.identity.hooks import identity_write_hook
from hie.identity.masking import ResidentIdLogFilter
from hie.identity.router import audit_sink, make_admin_router, pix_router
from hie.limits import BodySizeLimit
from hie.metering.counters import MeteringMiddleware, UsageMeter
from hie.metering.router import usage_router
from hie.metrics import MetricsMiddleware
from hie.registry.models import ROLE_ADMIN
from hie.registry.router import router as admin_router
from hie.store import open_store


def write_hooks(settings: Settings) -> list[WriteHook]:
    """What commits with every write besides its own audit record: the regional
    identity of every Patient written, and the audit records of the links it
    makes; the labels of every ImagingStudy written, on its DICOM records."""
    return [identity_write_hook(settings, sink=audit_sink), relabel_hook]


def mask_logs() -> None:
    """Mask resident ID numbers in every log line (filters on the handlers:
    a filter on a logger does not see its children's records)."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, ResidentIdLogFilter) for f in handler.filters):
                handler.addFilter(ResidentIdLogFilter())


def served_app() -> FastAPI:
    """The app ``hie serve`` runs (uvicorn's factory): :func:`create_app` with its
    heap frozen once started."""
    return create_app(freeze_heap=True)


def create_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """Build the exchange app.

    ``freeze_heap``: once started, move every object alive to the collector's
    permanent generation (``gc.freeze``). A write request keeps thousands of objects
    alive long enough to be promoted, so full collections come often, and each walked
    the whole startup heap (modules, models, pydicom's dictionary): measured on
    STOW-RS, 40 % of the CPU went to the collector, ~0.15 ms per instance to full
    collections alone, ~0.02 with the startup heap frozen. Only for a served process:
    tests build many apps in one process, and what is frozen is never freed.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.store_url)
        await store.open()
        app.state.store = store
        app.state.tokens = TokenService(settings)
        app.state.tokens.keyring.ensure()
        app.state.audit_log = AuditLog(store)
        await app.state.audit_log.start()
        app.state.usage_meter = UsageMeter(store)
        await app.state.usage_meter.start()
        app.state.consent = consent_client(settings, store, tokens=app.state.tokens)
        app.state.study_writer = StudyWriter(
            store, lambda: [*app.state.write_hooks, audit_write_hook()])
        app.state.study_writer.start()
        if freeze_heap:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await app.state.study_writer.close()
            close = getattr(app.state.consent, "aclose", None)
            if close is not None:
                await close()
            await app.state.usage_meter.close()
            await app.state.audit_log.close(give_up_after=10)
            await store.close()

    app = FastAPI(title="Regional health-record exchange", version=hie.__version__,
                  lifespan=lifespan, docs_url="/docs", openapi_url="/openapi.json")
    app.state.settings = settings
    app.state.write_hooks = write_hooks(settings)
    mask_logs()
    errors.install(app)
    app.include_router(health.router)
    # before the FHIR router: /fhir/{type}/{id} would catch the well-known path
    app.include_router(smart_router)
    app.include_router(pix_router, prefix="/fhir")  # before /fhir/{type}/{id} too
    # The FHIR API next, ahead of the routers outside /fhir: a request is
    # matched against the routes in order, and FHIR requests are most of the
    # traffic (each route passed over costs a regex match and FastAPI's
    # bookkeeping; ~50 routes used to stand before the FHIR ones).
    app.include_router(fhir_router)
    app.include_router(dicomweb_router)
    app.include_router(auth_router)
    app.include_router(admin_router)
    app.include_router(usage_router(require_role(ROLE_ADMIN)))
    app.include_router(make_admin_router(admin=require_role(ROLE_ADMIN)))
    app.include_router(portal_router(portal_data, PortalConfig(base_url=settings.base_url)))
    include_consent_routes(app)
    fhir_lane.install(app)  # last: in front of every route above
    # innermost first: the access audit notes what was read before metering counts it
    app.add_middleware(AccessAuditMiddleware)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       too_large=errors.too_large_app)
    app.add_middleware(MeteringMiddleware)
    app.add_middleware(MetricsMiddleware)
    return app
