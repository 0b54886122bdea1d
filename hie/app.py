"""The exchange's app factory: one place mounts every router.

``create_app`` builds the ASGI app from a :class:`~hie.config.Settings`; the
store is opened in the lifespan, so importing this module has no side effects.
``hie serve`` runs it under uvicorn (``hie.app:create_app`` as a factory).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import hie
from hie import errors, health
from hie.config import Settings, get_settings
from hie.fhir.router import router as fhir_router
from hie.limits import BodySizeLimit
from hie.metrics import MetricsMiddleware
from hie.store import open_store


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the exchange app."""
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

    app = FastAPI(title="Regional health-record exchange", version=hie.__version__,
                  lifespan=lifespan, docs_url="/docs", openapi_url="/openapi.json")
    app.state.settings = settings
    app.state.write_hooks = []
    errors.install(app)
    app.include_router(health.router)
    app.include_router(fhir_router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       too_large=errors.too_large_app)
    app.add_middleware(MetricsMiddleware)
    return app
