"""Hospital client keys as JWKs: checking what is registered, and making new ones.

A hospital registers *public* keys only (SMART Backend Services, "registering a
JWKS"). Each key must say which of the two allowed algorithms it is for, so the
exchange never lets a token header choose how a key is used: an ``ES384`` key is a
P-384 EC key, an ``RS384`` key an RSA key of at least 2048 bits. Private members
(``d``, ``p``, ``q``, …) are refused rather than silently dropped, because a
JWKS holding them means a private key was sent somewhere it should not be.

>>> pem, jwk = new_client_key("ES384", kid="k1")
>>> public_jwk(jwk)["alg"]
'ES384'
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

#: The only signature algorithms the exchange accepts from clients.
CLIENT_ALGORITHMS = ("RS384", "ES384")
_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
_MIN_RSA_BITS = 2048
_MAX_KID = 200


class InvalidKey(ValueError):
    """A JWK that cannot be registered (the message says why; no key material)."""


def public_jwk(jwk: Any) -> dict[str, Any]:
    """Return the checked public members of ``jwk`` (a dict), or raise :class:`InvalidKey`."""
    if not isinstance(jwk, dict):
        raise InvalidKey("a JWK must be a JSON object")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidKey("the JWK contains private key material; register the public key only")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid.strip() or len(kid) > _MAX_KID:
        raise InvalidKey("every key needs a non-empty 'kid' (at most 200 characters)")
    if jwk.get("use", "sig") != "sig":
        raise InvalidKey(f"key {kid!r}: 'use' must be 'sig'")
    kty = jwk.get("kty")
    alg = jwk.get("alg") or {"EC": "ES384", "RSA": "RS384"}.get(str(kty))
    if alg not in CLIENT_ALGORITHMS:
        raise InvalidKey(f"key {kid!r}: 'alg' must be one of {', '.join(CLIENT_ALGORITHMS)}")
    try:
        if alg == "ES384":
            if kty != "EC" or jwk.get("crv") != "P-384":
                raise InvalidKey(f"key {kid!r}: an ES384 key must be an EC key on P-384")
            ECAlgorithm.from_jwk(json.dumps(jwk))
            return {"kty": "EC", "crv": "P-384", "x": jwk["x"], "y": jwk["y"], "kid": kid,
                    "alg": alg, "use": "sig"}
        if kty != "RSA":
            raise InvalidKey(f"key {kid!r}: an RS384 key must be an RSA key")
        key = RSAAlgorithm.from_jwk(json.dumps(jwk))
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < _MIN_RSA_BITS:
            raise InvalidKey(f"key {kid!r}: an RSA key needs at least {_MIN_RSA_BITS} bits")
        return {"kty": "RSA", "n": jwk["n"], "e": jwk["e"], "kid": kid, "alg": alg,
                "use": "sig"}
    except InvalidKey:
        raise
    except Exception as exc:  # PyJWT/cryptography reject malformed coordinates etc.
        raise InvalidKey(f"key {kid!r} is not a valid {alg} public key") from exc


def public_jwks(jwks: Any) -> list[dict[str, Any]]:
    """Check a JWKS document (``{"keys": [...]}``); ``kid`` values must be unique."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise InvalidKey("a JWKS must be a JSON object with a 'keys' array")
    keys = [public_jwk(k) for k in jwks["keys"]]
    kids = [k["kid"] for k in keys]
    if len(set(kids)) != len(kids):
        raise InvalidKey("'kid' values must be unique within a client's keys")
    return keys


def verification_key(jwk: dict[str, Any]) -> Any:
    """The ``cryptography`` public key object of a registered (already checked) JWK."""
    algorithm = ECAlgorithm if jwk["alg"] == "ES384" else RSAAlgorithm
    return algorithm.from_jwk(json.dumps(jwk))


def jwk_from_pem(pem: bytes, *, kid: str, alg: str | None = None) -> dict[str, Any]:
    """Turn a PEM public (or private: only its public half is kept) key into a checked JWK."""
    try:
        key: Any = serialization.load_pem_public_key(pem)
    except ValueError:
        key = serialization.load_pem_private_key(pem, password=None).public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        jwk = json.loads(ECAlgorithm.to_jwk(key))
    elif isinstance(key, rsa.RSAPublicKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(key))
    else:
        raise InvalidKey("only EC (P-384) and RSA keys can be registered")
    jwk["kid"] = kid
    if alg:
        jwk["alg"] = alg
    return public_jwk(jwk)


def new_client_key(alg: str = "ES384", *, kid: str) -> tuple[str, dict[str, Any]]:
    """Generate a hospital key pair: (private key PEM, public JWK). For ``hie demo`` and tests."""
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if alg == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
    elif alg == "RS384":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise InvalidKey(f"'alg' must be one of {', '.join(CLIENT_ALGORITHMS)}")
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem.decode(), jwk_from_pem(pem, kid=kid, alg=alg)
