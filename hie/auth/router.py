"""Public trust-layer routes: the token endpoint, the exchange's JWKS, and the
SMART configuration document.

These are the named exceptions to "authenticated by default": a client needs
them before it has a token. The token endpoint answers OAuth error JSON
(RFC 6749 §5.2) with ``Cache-Control: no-store``.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from hie.audit.model import AuditRecord, from_context
from hie.auth import service
from hie.auth.config import TrustSettings, token_url
from hie.auth.dependencies import context_from_claims, get_tokens
from hie.auth.errors import OAuthError, invalid_request
from hie.auth.jwk import CLIENT_ALGORITHMS
from hie.auth.tokens import TokenService
from hie.dependencies import get_store
from hie.store.base import Store

log = logging.getLogger("hie.auth")

router = APIRouter(prefix="/auth", tags=["auth"])
#: Mount before the FHIR router: ``/fhir/{type}/{id}`` would otherwise match.
smart_router = APIRouter(tags=["auth"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FIELDS = ("grant_type", "client_assertion_type", "client_assertion", "assertion", "scope")


def _settings(request: Request) -> TrustSettings:
    return request.app.state.settings


@router.post("/token", summary="OAuth 2.0 token endpoint (SMART Backend Services)")
async def token(request: Request, store: Store = Depends(get_store),
                tokens: TokenService = Depends(get_tokens)) -> Response:
    audit = getattr(request.app.state, "audit_log", None)
    try:
        req = await _token_request(request)
        body = await service.issue_token(store, tokens, _settings(request), req)
    except OAuthError as exc:
        log.info("token request refused: %s (%s)", exc.error, exc.description)
        if audit is not None:  # who it was is unknown: the assertion was refused
            await audit.record(AuditRecord(interaction="login", outcome="deny",
                                           status=exc.status, detail=exc.error))
        return JSONResponse(exc.body(), status_code=exc.status, headers=_NO_STORE)
    if audit is not None:  # every token, break-the-glass ones above all, is on record
        claims = tokens.verify(body["access_token"])
        await audit.record(from_context(context_from_claims(claims), interaction="login",
                                        outcome="permit", status=200,
                                        detail=f"scope: {body.get('scope', '')}"))
    return JSONResponse(body, headers=_NO_STORE)


async def _token_request(request: Request) -> service.TokenRequest:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise invalid_request("the token request must be application/x-www-form-urlencoded")
    form = await request.form()
    values: dict[str, str] = {}
    for name, value in form.multi_items():
        if name not in _FIELDS:
            continue
        if name in values or not isinstance(value, str):
            raise invalid_request(f"parameter {name!r} must appear once, as text")
        values[name] = value
    return service.TokenRequest(**values)


@router.get("/jwks", summary="The exchange's public signing keys")
async def jwks(tokens: TokenService = Depends(get_tokens)) -> Response:
    return JSONResponse(tokens.keyring.jwks(), headers={"Cache-Control": "max-age=60"})


@smart_router.get("/fhir/.well-known/smart-configuration",
                  summary="SMART configuration (Backend Services)")
async def smart_configuration(request: Request) -> Response:
    settings = _settings(request)
    base = settings.base_url.rstrip("/")
    return JSONResponse({
        "issuer": base,
        "jwks_uri": f"{base}/auth/jwks",
        "token_endpoint": token_url(settings),
        "grant_types_supported": list(service.GRANT_TYPES),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_ALGORITHMS),
        "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read",
                             "system/*.write", "system/*.*", "user/*.rs", "user/*.read"],
        "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
    })
