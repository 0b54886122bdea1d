"""Request dependencies of the trust layer: the bearer token → the caller → checks.

:func:`authenticate` replaces ``hie.dependencies.get_context``: every route that
depends on the caller is authenticated by default. It answers 401 with
``WWW-Authenticate: Bearer`` (RFC 6750) when the token is missing or invalid;
the app's error handler renders that as an ``OperationOutcome`` on ``/fhir``
and as problem JSON elsewhere. :func:`require` and :func:`require_role` are the
403 checks that build on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from hie.auth import scopes
from hie.auth.context import AuthContext
from hie.auth.tokens import InvalidToken, TokenService
from hie.fhir.outcome import FhirError, Issue

_CHALLENGE = 'Bearer realm="hie"'
_MAX_TOKEN = 8192
#: Where the caller built from a token's claims is kept, beside the cached claims.
_CONTEXT_KEY = "__hie_context__"


def tokens_of(app: Any) -> TokenService:
    """The process's token service (made on first use, so a bare app works)."""
    tokens = getattr(app.state, "tokens", None)
    if tokens is None:
        tokens = app.state.tokens = TokenService(app.state.settings)
    return tokens


async def get_tokens(request: Request) -> TokenService:
    """The token service, as a dependency."""
    return tokens_of(request.app)


def _unauthorized(message: str, error: str | None = None) -> HTTPException:
    challenge = _CHALLENGE + (f', error="{error}"' if error else "")
    return HTTPException(401, message, headers={"WWW-Authenticate": challenge})


def context_from_claims(claims: dict) -> AuthContext:
    """The caller described by verified access-token claims."""
    try:
        granted = tuple(scopes.parse_scopes(claims.get("scope", "")))
    except scopes.ScopeError:
        raise _unauthorized("The access token is not valid", "invalid_token") from None
    roles = claims.get("roles") or []
    return AuthContext(organization=claims["organization"],
                       practitioner=claims.get("practitioner"),
                       purpose_of_use=claims.get("purpose_of_use"),
                       reason=claims.get("reason"), consultation=claims.get("consultation"),
                       scopes=granted,
                       roles=frozenset(r for r in roles if isinstance(r, str)),
                       client_id=claims.get("client_id"), token_id=claims.get("jti"))


async def authenticate(request: Request) -> AuthContext:
    """The caller of this request, from ``Authorization: Bearer <access token>``.

    A dependency with no sub-dependencies on purpose: it runs on every request,
    and each FastAPI dependency level costs more than the token check itself
    (verified tokens are cached)."""
    tokens = tokens_of(request.app)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise _unauthorized("An access token is required (Authorization: Bearer …)")
    if scheme.lower() != "bearer" or not token.strip() or len(token) > _MAX_TOKEN:
        raise _unauthorized("The Authorization header must be 'Bearer <access token>'",
                            "invalid_request")
    try:
        claims = tokens.verify(token.strip())
    except InvalidToken as exc:
        raise _unauthorized(f"The access token was refused: {exc}", "invalid_token") from None
    # The verified claims are cached per token by the token service; keep the
    # caller built from them beside them, so a token's scopes are parsed once.
    ctx = claims.get(_CONTEXT_KEY)
    if ctx is None:
        ctx = claims[_CONTEXT_KEY] = context_from_claims(claims)
    return ctx


def require(ctx: object, resource_type: str, interaction: str) -> None:
    """Refuse (403 ``OperationOutcome``) unless the token's scopes allow ``interaction``
    (one of ``c r u d s``) on ``resource_type``."""
    granted = getattr(ctx, "scopes", None)
    if not granted or not scopes.permits(granted, resource_type, interaction):
        names = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
        raise FhirError(403, Issue(
            "forbidden", f"The access token's scopes do not allow {names[interaction]} "
            f"on {resource_type}"))


def require_role(*roles: str) -> Callable[..., Awaitable[AuthContext]]:
    """A dependency: the authenticated caller, who must hold one of ``roles`` (else 403)."""

    async def check(ctx: AuthContext = Depends(authenticate)) -> AuthContext:
        if not ctx.roles & set(roles):
            raise HTTPException(403, f"This needs the role {' or '.join(roles)}")
        return ctx

    return check
