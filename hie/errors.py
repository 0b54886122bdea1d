"""Error rendering: ``OperationOutcome`` on ``/fhir``, problem JSON elsewhere.

One place decides how every failure looks, so that no route answers an error
in its own shape and no internal detail (stack traces, SQL, secrets) reaches a
client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from hie.fhir.http import fhir_response
from hie.fhir.outcome import FhirError, Issue, operation_outcome
from hie.limits import BodyTooLarge
from hie.registry.service import RegistryError
from hie.store.base import StoreUnavailable, VersionConflict

log = logging.getLogger("hie.errors")

_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
          405: "not-supported", 409: "conflict", 412: "conflict", 413: "too-costly",
          415: "not-supported", 422: "processing", 429: "throttled", 503: "transient"}


def is_fhir(path: str) -> bool:
    """Whether a request path is under the FHIR base."""
    return path == "/fhir" or path.startswith("/fhir/")


def error_response(path: str, status: int, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    """An error in the shape the path's API uses."""
    if is_fhir(path):
        issue = Issue(_CODES.get(status, "exception"), message)
        return fhir_response(operation_outcome([issue]), status, headers)
    return JSONResponse({"type": "about:blank", "title": message, "status": status},
                        status_code=status, headers=headers,
                        media_type="application/problem+json")


async def too_large_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a request whose declared body is over the limit (413)."""
    limit = scope["app"].state.settings.max_body_bytes if "app" in scope else 0
    response = error_response(scope["path"], 413,
                              f"The request body is larger than the limit of {limit} bytes")
    await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the exception handlers on ``app``."""

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        return fhir_response(exc.outcome(), exc.status, exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge) -> Response:
        return error_response(request.url.path, 413, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(request.url.path, 400,
                              f"Invalid request: {first.get('msg', 'invalid')} ({where})")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"No route for {request.method} {request.url.path}"
        return error_response(request.url.path, exc.status_code, message,
                              getattr(exc, "headers", None))

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, exc: RegistryError) -> Response:
        return error_response(request.url.path, exc.status, str(exc))

    @app.exception_handler(VersionConflict)
    async def conflict(request: Request, exc: VersionConflict) -> Response:
        return error_response(request.url.path, 409,
                              "The resource was changed by another request; read it and retry")

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> Response:
        return error_response(request.url.path, 503, "The document store is unavailable",
                              {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request.url.path, 500, "Internal error")
