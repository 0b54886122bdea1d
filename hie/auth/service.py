"""The token endpoint's logic: authenticate the client, check the grant, mint a token.

Two grants (SMART Backend Services; RFC 7523):

* ``client_credentials`` — a hospital system acts as itself; scopes ``system/…``.
* ``urn:ietf:params:oauth:grant-type:jwt-bearer`` — a doctor acts through the
  hospital's system: the same client authentication plus an ``assertion``
  signed by the hospital naming the practitioner (``sub``), ``purpose_of_use``
  (``TREAT``, or ``ETREAT`` with a ``reason``) and optionally a
  ``consultation``; scopes ``user/…``.

Every assertion ``jti`` is recorded in the store (internal type
:data:`SEEN_JTI`) in one transaction after all other checks pass; the record's
id is derived from (client, jti) and written as version 1, which the store
refuses for an id that exists — so of two concurrent replays only one can pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from hie.auth import assertions, scopes
from hie.auth.config import TrustSettings, token_url
from hie.auth.errors import (
    invalid_client,
    invalid_grant,
    invalid_request,
    invalid_scope,
    unsupported_grant_type,
)
from hie.auth.tokens import TokenService
from hie.context import INTERNAL_SOURCE
from hie.fhir.writes import stamp_now
from hie.registry import service as registry
from hie.registry.models import Organization
from hie.store.base import Store, Transaction, VersionConflict, WriteRecord
from hie.store.index import IndexEntries

CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRANT_TYPES = (CLIENT_CREDENTIALS, JWT_BEARER)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PURPOSES = ("TREAT", "ETREAT")
SEEN_JTI = "_SeenJti"
_MAX_TEXT = 1000


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """The form fields of a token request that matter (others are ignored)."""

    grant_type: str | None = None
    client_assertion_type: str | None = None
    client_assertion: str | None = None
    assertion: str | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class _Doctor:
    practitioner: str
    purpose_of_use: str
    reason: str | None
    consultation: str | None
    roles: tuple[str, ...]
    claims: dict[str, Any]


async def issue_token(store: Store, tokens: TokenService, settings: TrustSettings,
                      req: TokenRequest) -> dict[str, Any]:
    """Answer one token request: the token response, or raise :class:`OAuthError`."""
    if req.grant_type not in GRANT_TYPES:
        raise unsupported_grant_type(f"grant_type must be one of {', '.join(GRANT_TYPES)}")
    if req.client_assertion_type != ASSERTION_TYPE:
        raise invalid_request(f"client_assertion_type must be {ASSERTION_TYPE}")
    if not req.client_assertion:
        raise invalid_request("client_assertion is required")
    if req.grant_type == JWT_BEARER and not req.assertion:
        raise invalid_request("the jwt-bearer grant needs an 'assertion'")
    if not req.scope or not req.scope.strip():
        raise invalid_scope("scope is required")
    try:
        requested = scopes.parse_scopes(req.scope)
    except scopes.ScopeError as exc:
        raise invalid_scope(str(exc)) from None

    audience, leeway = token_url(settings), settings.clock_skew_seconds
    org = await _authenticate_client(store, req.client_assertion)
    client_claims = assertions.verify(req.client_assertion, org, audience=audience,
                                      leeway=leeway, fail=invalid_client,
                                      what="client_assertion")
    if client_claims.get("sub") != org.client_id:
        raise invalid_client("client_assertion: 'sub' must equal 'iss' (the client id)")

    doctor = None
    if req.grant_type == JWT_BEARER:
        doctor = await _doctor(store, org, req.assertion or "", audience, leeway)
    allowed = scopes.DOCTOR_ALLOWED if doctor else scopes.SYSTEM_ALLOWED
    granted = scopes.grant(requested, allowed)
    if not granted:
        raise invalid_scope("none of the requested scopes can be granted to this client "
                            f"(at most: {scopes.render(allowed)})")

    seen = [client_claims] + ([doctor.claims] if doctor else [])
    await _record_jtis(store, org, seen)
    token, expires_in, _ = tokens.issue(
        client_id=org.client_id, organization=org.id, scope=scopes.render(granted),
        roles=doctor.roles if doctor else org.roles,
        practitioner=doctor.practitioner if doctor else None,
        purpose_of_use=doctor.purpose_of_use if doctor else None,
        reason=doctor.reason if doctor else None,
        consultation=doctor.consultation if doctor else None)
    return {"access_token": token, "token_type": "bearer", "expires_in": expires_in,
            "scope": scopes.render(granted)}


async def _authenticate_client(store: Store, assertion: str) -> Organization:
    client_id = assertions.unverified_issuer(assertion, invalid_client, "client_assertion")
    org = await registry.get_client(store, client_id=client_id)
    if org is None or not org.active:
        raise invalid_client("the client is not registered or not active")
    return org


def _text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise invalid_grant(f"assertion: '{name}' must be a string of at most {_MAX_TEXT} "
                            "characters")
    return value.strip() or None


async def _doctor(store: Store, org: Organization, assertion: str, audience: str,
                  leeway: int) -> _Doctor:
    iss = assertions.unverified_issuer(assertion, invalid_grant, "assertion")
    if iss != org.client_id:
        raise invalid_grant("assertion: 'iss' must be the authenticated client")
    claims = assertions.verify(assertion, org, audience=audience, leeway=leeway,
                               fail=invalid_grant, what="assertion")
    sub = claims.get("sub")
    prac = await registry.get_practitioner(store, id=sub) if isinstance(sub, str) else None
    if prac is None or not prac.active or prac.organization != org.id:
        raise invalid_grant("assertion: 'sub' is not an active practitioner of this client's "
                            "organisation")
    purpose = claims.get("purpose_of_use")
    if purpose not in PURPOSES:
        raise invalid_grant(f"assertion: 'purpose_of_use' must be one of {', '.join(PURPOSES)}")
    reason = _text(claims, "reason")
    if purpose == "ETREAT" and not reason:
        raise invalid_grant("assertion: break-the-glass (ETREAT) needs a non-empty 'reason'")
    return _Doctor(practitioner=prac.id, purpose_of_use=purpose, reason=reason,
                   consultation=_text(claims, "consultation"), roles=prac.roles,
                   claims=claims)


def _jti_id(org: Organization, jti: str) -> str:
    return hashlib.sha256(f"{org.client_id}\x00{jti}".encode()).hexdigest()


async def _record_jtis(store: Store, org: Organization, seen: list[dict[str, Any]]) -> None:
    """Record the assertions' jtis; refuse if any was used before (a replay)."""
    stamp = stamp_now()
    ids = [_jti_id(org, c["jti"]) for c in seen]
    if len(set(ids)) != len(ids):
        raise invalid_grant("the client assertion and the assertion must have different jtis")

    async def run(tx: Transaction) -> None:
        for which, (id_, claims) in enumerate(zip(ids, seen, strict=True)):
            if await tx.read(SEEN_JTI, id_) is not None:
                raise _Replay(which)
            body = orjson.dumps({"client_id": org.client_id, "exp": int(claims["exp"])})
            await tx.put(WriteRecord(SEEN_JTI, id_, 1, stamp, body, source=INTERNAL_SOURCE,
                                     index=IndexEntries()))

    try:
        await store.transact(run)
    except _Replay as exc:
        if exc.which == 0:
            raise invalid_client("client_assertion: this 'jti' was used before (replay)") \
                from None
        raise invalid_grant("assertion: this 'jti' was used before (replay)") from None
    except VersionConflict:  # a concurrent request recorded the same jti first
        raise invalid_client("an assertion 'jti' was used before (replay)") from None


class _Replay(Exception):
    def __init__(self, which: int) -> None:
        super().__init__(which)
        self.which = which
