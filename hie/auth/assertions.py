"""Verifying JWT assertions signed by a hospital (RFC 7523; SMART Backend Services).

Two assertions reach the token endpoint: the *client assertion* that
authenticates the hospital system (failures are ``invalid_client``), and, for a
doctor, the *authorization grant assertion* naming the practitioner and purpose
(failures are ``invalid_grant``). Both get the same strict checks:

* the header's ``alg`` is RS384 or ES384 and equals the ``alg`` the matching key
  was registered with — the key decides the algorithm, never the token;
* the header's ``kid`` matches exactly one key of the client;
* ``iss`` is the client id, ``aud`` the token URL, and ``exp``, ``iat``, ``jti``,
  ``sub`` are present; ``exp`` is at most five minutes ahead.

The unverified claims are read only to learn which client claims to have
signed; nothing else is trusted before the signature is checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt

from hie.auth.errors import OAuthError
from hie.auth.jwk import CLIENT_ALGORITHMS, verification_key
from hie.registry.models import Organization

#: RFC 7523 / SMART: a client assertion lives at most five minutes.
MAX_ASSERTION_SECONDS = 300
_REQUIRED = ["iss", "sub", "aud", "exp", "iat", "jti"]
_MAX_JTI = 255


def unverified_issuer(token: str, fail: Callable[[str], OAuthError], what: str) -> str:
    """The ``iss`` a JWT claims (not yet trusted: used only to find the client)."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise fail(f"{what} is not a well-formed JWT") from None
    if header.get("alg") not in CLIENT_ALGORITHMS:
        raise fail(f"{what} must be signed with one of {', '.join(CLIENT_ALGORITHMS)}")
    iss = claims.get("iss")
    if not isinstance(iss, str) or not iss:
        raise fail(f"{what} has no 'iss'")
    return iss


def verify(token: str, org: Organization, *, audience: str, leeway: int,
           fail: Callable[[str], OAuthError], what: str) -> dict[str, Any]:
    """Check ``token`` was signed by one of ``org``'s keys and is fresh; return its claims."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise fail(f"{what} is not a well-formed JWT") from None
    kid, alg = header.get("kid"), header.get("alg")
    if not isinstance(kid, str) or not kid:
        raise fail(f"{what} has no 'kid' header")
    keys = org.keys_with_kid(kid)
    if not keys:
        raise fail(f"{what}: 'kid' matches no key registered for this client")
    if len(keys) > 1:
        raise fail(f"{what}: 'kid' matches more than one registered key")
    jwk = keys[0]
    if alg != jwk["alg"] or alg not in CLIENT_ALGORITHMS:
        raise fail(f"{what}: 'alg' does not match the registered key's algorithm")
    try:
        claims = jwt.decode(token, verification_key(jwk), algorithms=[jwk["alg"]],
                            audience=audience, issuer=org.client_id, leeway=leeway,
                            options={"require": _REQUIRED, "verify_signature": True,
                                     "verify_exp": True, "verify_iat": True,
                                     "verify_nbf": True, "verify_aud": True,
                                     "verify_iss": True})
    except jwt.ExpiredSignatureError:
        raise fail(f"{what} has expired") from None
    except jwt.ImmatureSignatureError:
        raise fail(f"{what} is not valid yet (iat or nbf in the future)") from None
    except jwt.InvalidAudienceError:
        raise fail(f"{what}: 'aud' must be the token endpoint URL") from None
    except jwt.InvalidIssuerError:
        raise fail(f"{what}: 'iss' must be the client id") from None
    except jwt.MissingRequiredClaimError as exc:
        raise fail(f"{what} lacks the required claim {exc.claim!r}") from None
    except jwt.InvalidSignatureError:
        raise fail(f"{what}: signature verification failed") from None
    except jwt.PyJWTError:
        raise fail(f"{what} is not valid") from None
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI:
        raise fail(f"{what}: 'jti' must be a non-empty string")
    if int(claims["exp"]) > time.time() + MAX_ASSERTION_SECONDS + leeway:
        raise fail(f"{what}: 'exp' may be at most {MAX_ASSERTION_SECONDS} seconds ahead")
    return claims
