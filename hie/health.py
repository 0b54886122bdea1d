"""Health and metrics: the public operational routes."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse, PlainTextResponse, Response

from hie.auth.dependencies import require_role
from hie.dependencies import get_store
from hie.metrics import METRICS
from hie.registry.models import ROLE_ADMIN
from hie.store.base import Store

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="liveness and store reachability")
async def healthz(store: Store = Depends(get_store)) -> Response:
    if await store.ping():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable", "detail": "the store does not answer"},
                        status_code=503)


@router.get("/metrics", summary="Prometheus metrics (administrators)",
            dependencies=[Depends(require_role(ROLE_ADMIN))])
async def metrics() -> Response:
    return PlainTextResponse(METRICS.render(), media_type="text/plain; version=0.0.4")
