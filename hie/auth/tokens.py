"""The exchange's access tokens: issued at ``/auth/token``, checked on every request.

An access token is a JWT signed by the exchange's newest key (ES384, ``kid``
header, ``typ: at+jwt`` as RFC 9068 names it) with ``iss`` = the exchange's
base URL, ``aud`` = its FHIR base, ``sub`` = the client id,
``iat``/``nbf``/``exp``, a ``jti``, and what the caller may do:
``organization``, ``practitioner``, ``purpose_of_use``, ``reason``,
``consultation``, ``scope``, ``roles``, ``client_id``.

Verification accepts only ES384, requires every time and identity claim, and
takes the key from the exchange's own key ring by ``kid`` (an unknown ``kid`` is
refused), so an HS256 token "signed" with the public key, or ``alg: none``, never
verifies. A verified token's claims are cached by its exact text until it
expires: ECDSA verification dominates the cost of authenticating a read, and the
same bytes always verify the same way.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import jwt

from hie.auth.config import TrustSettings, issuer, key_retention_seconds, keys_dir
from hie.auth.keys import EXCHANGE_ALGORITHM, KeyRing

_REQUIRED = ["iss", "aud", "sub", "exp", "iat", "jti"]
#: RFC 9068's media type, required on verification so that no other JWT the
#: exchange might ever sign with the same keys can pass as an access token.
ACCESS_TOKEN_TYPE = "at+jwt"
_CACHE_SIZE = 4096


class InvalidToken(Exception):
    """An access token that must be refused (the message is safe to show)."""


class TokenService:
    """Issues and verifies the exchange's access tokens (one per process)."""

    def __init__(self, settings: TrustSettings, keyring: KeyRing | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.keyring = keyring or KeyRing(keys_dir(settings),
                                          retention_seconds=key_retention_seconds(settings),
                                          clock=clock)
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def issue(self, *, client_id: str, organization: str, scope: str,
              roles: Iterable[str] = (), practitioner: str | None = None,
              purpose_of_use: str | None = None, reason: str | None = None,
              consultation: str | None = None, lifetime: int | None = None,
              ) -> tuple[str, int, dict[str, Any]]:
        """Sign an access token; return (token, seconds it lives, claims)."""
        lifetime = lifetime or self.settings.access_token_seconds
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": issuer(self.settings), "aud": self.settings.fhir_base, "sub": client_id,
            "iat": now, "nbf": now, "exp": now + lifetime, "jti": str(uuid.uuid4()),
            "client_id": client_id, "organization": organization, "scope": scope,
            "roles": sorted(set(roles)),
        }
        optional = {"practitioner": practitioner, "purpose_of_use": purpose_of_use,
                    "reason": reason, "consultation": consultation}
        claims.update({k: v for k, v in optional.items() if v})
        if practitioner:
            claims["fhirUser"] = f"Practitioner/{practitioner}"
        key = self.keyring.signing_key()
        token = jwt.encode(claims, key.private, algorithm=EXCHANGE_ALGORITHM,
                           headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})
        return token, lifetime, claims

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid access token, or raise :class:`InvalidToken`."""
        now = self.clock()
        cached = self._cache.get(token)
        if cached is not None:
            if now < cached["exp"] + self.settings.clock_skew_seconds:
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
            raise InvalidToken("the access token has expired")
        claims = self._verify(token)
        self._cache[token] = claims
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the access token is not a well-formed JWT") from None
        if header.get("alg") != EXCHANGE_ALGORITHM:
            raise InvalidToken(f"access tokens are signed with {EXCHANGE_ALGORITHM} only")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken(f"the token is not an access token (typ {ACCESS_TOKEN_TYPE})")
        kid = header.get("kid")
        key = self.keyring.verification_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("the access token's 'kid' names no current exchange key")
        try:
            claims = jwt.decode(token, key, algorithms=[EXCHANGE_ALGORITHM],
                                audience=self.settings.fhir_base,
                                issuer=issuer(self.settings),
                                leeway=self.settings.clock_skew_seconds,
                                options={"require": _REQUIRED, "verify_signature": True,
                                         "verify_exp": True, "verify_iat": True,
                                         "verify_nbf": True, "verify_aud": True,
                                         "verify_iss": True})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the access token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the access token is not valid yet") from None
        except jwt.PyJWTError:
            raise InvalidToken("the access token is not valid") from None
        if not isinstance(claims.get("organization"), str) or \
                not isinstance(claims.get("scope"), str):
            raise InvalidToken("the access token is not valid")
        return claims
