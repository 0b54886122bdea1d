"""HTTP details of the FHIR REST API: headers in, responses out.

Kept apart from the router so that the router stays a list of thin routes and
the services never see HTTP.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from hie.fhir.bundles import FHIR_JSON, http_date, resource_headers
from hie.fhir.outcome import FhirError, Issue, bad_request, information
from hie.fhir.writes import EntryResult
from hie.store.base import StoredResource

#: Media types a client may send a FHIR resource as.
ACCEPTED_BODY_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


def fhir_response(body: bytes | dict[str, Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """A response with a FHIR JSON body."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status, headers=headers,
                    media_type=FHIR_JSON + "; charset=utf-8")


def resource_response(rec: StoredResource, base: str, body: bytes | None = None) -> Response:
    """A read/vread answer: the stored bytes with ETag and Last-Modified."""
    return fhir_response(body if body is not None else rec.body,
                         headers=resource_headers(rec, base))


def check_body_type(request: Request) -> None:
    """Refuse a body that is not declared as JSON (415), as FHIR servers do."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in ACCEPTED_BODY_TYPES:
        raise FhirError(415, Issue("not-supported",
                                   f"Content-Type {ctype!r} is not supported; send "
                                   "application/fhir+json"))


def prefer_return(request: Request) -> str:
    """The ``Prefer: return=…`` choice: minimal, representation (default) or
    OperationOutcome."""
    for part in request.headers.get("prefer", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "return" and value.strip():
            return value.strip().strip('"')
    return "representation"


def prefer_strict(request: Request) -> bool:
    """Whether the client asked for ``Prefer: handling=strict``."""
    return any(p.strip().lower().replace(" ", "") == "handling=strict"
               for p in request.headers.get("prefer", "").split(";"))


def if_match(request: Request) -> int | None:
    """The version named by an ``If-Match: W/"3"`` header, if any."""
    value = request.headers.get("if-match")
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise bad_request(f'If-Match must be an ETag like W/"3", not {value!r}')
    return int(text)


def write_response(result: EntryResult, base: str, request: Request,
                   body: bytes | None = None) -> Response:
    """The answer to a create or update: status, Location, ETag and the body
    ``Prefer`` asks for."""
    headers: dict[str, str] = {}
    if result.version is not None and result.id:
        path = f"{result.resource_type}/{result.id}/_history/{result.version}"
        headers["Location"] = f"{base}/{path}"
        headers["Content-Location"] = headers["Location"]
        headers["ETag"] = f'W/"{result.version}"'
    if result.last_updated:
        headers["Last-Modified"] = http_date(result.last_updated)
    choice = prefer_return(request)
    if choice == "minimal":
        return Response(status_code=result.status, headers=headers)
    if choice == "OperationOutcome":
        message = f"{result.resource_type}/{result.id} " + (
            "created" if result.status == 201 else "updated" if result.status == 200 else "kept")
        return fhir_response(information(message), result.status, headers)
    return fhir_response(body if body is not None else (result.body or b"{}"),
                         result.status, headers)
