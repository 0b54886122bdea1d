"""The push client: a hospital system talking to the exchange.

It authenticates with SMART Backend Services (a client assertion signed with the
hospital's key → ``/auth/token`` → a bearer token, renewed before it expires)
and posts transaction Bundles. Every answer is sorted into one of three outcomes,
because the pusher must treat them differently: *ok*; *retry* (network errors,
429, 5xx, a token that could not be had — the message is fine, the moment is
not); *poison* (any other 4xx — the exchange refused the message itself, and
sending it again would only be refused again).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "system/*.cruds"
FHIR_JSON = "application/fhir+json"
DICOM_JSON = "application/dicom+json"


@dataclass(frozen=True)
class Result:
    """How one send ended; ``retry_after`` (seconds) when the exchange asked for a pause."""

    outcome: Literal["ok", "retry", "poison"]
    status: int | None
    body: bytes
    error: str
    retry_after: float | None = None


def algorithm_for(private_pem: str | bytes) -> str:
    """ES384 for an EC key, RS384 for an RSA key: the registered key decides, as at
    the exchange."""
    key = load_pem_private_key(private_pem.encode() if isinstance(private_pem, str)
                               else private_pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES384"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS384"
    raise ValueError("the hospital key must be an EC (P-384) or RSA private key")


def backoff(attempt: int, *, base: float = 0.5, cap: float = 300.0) -> float:
    """Seconds to wait before attempt ``attempt`` + 1: exponential with full jitter,
    so that many adapters coming back after an outage do not retry in step."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempt)))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class ExchangeClient:
    """Posts Bundles to one exchange as one hospital; thread-safe (one token shared)."""

    def __init__(self, exchange: str, *, client_id: str, private_pem: str, kid: str,
                 token_url: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None,
                 renew_before: float = 60.0) -> None:
        self.base = exchange.rstrip("/")
        self.token_url = token_url or f"{self.base}/auth/token"
        self.client_id = client_id
        self.kid = kid
        self._pem = private_pem
        self.alg = algorithm_for(private_pem)
        self.renew_before = renew_before
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- token -------------------------------------------------------------------

    def assertion(self) -> str:
        """A fresh client assertion: iss = sub = client id, aud = token URL, 4-minute
        lifetime (the exchange allows 5), a new jti every time."""
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                  "iat": now, "exp": now + 240, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self._pem, algorithm=self.alg, headers={"kid": self.kid})

    def token(self) -> str:
        """The current access token, fetched again when it is within ``renew_before``
        seconds (or a fifth of its life) of expiring. Raises httpx errors."""
        with self._lock:
            if self._token is None or time.time() >= self._expires:
                r = self._http.post(self.token_url, data={
                    "grant_type": "client_credentials", "scope": SCOPE,
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": self.assertion()})
                if r.status_code != 200:
                    raise TokenError(r.status_code, r.text)
                body = r.json()
                life = float(body.get("expires_in", 300))
                self._token = body["access_token"]
                self._expires = time.time() + life - min(self.renew_before, life / 5)
            assert self._token is not None
            return self._token

    def forget_token(self) -> None:
        with self._lock:
            self._token = None

    # -- sending -----------------------------------------------------------------

    def post_bundle(self, payload: bytes) -> Result:
        """POST a transaction Bundle to ``/fhir`` and classify the answer."""
        return self.post("/fhir", payload)

    def post_merge(self, payload: bytes) -> Result:
        """POST an HL7 A40 merge (a ``Parameters``) to ``/fhir/Patient/$merge``."""
        return self.post("/fhir/Patient/$merge", payload)

    def post_dicom(self, instances: list[bytes]) -> Result:
        """STOW-RS: POST DICOM JSON datasets (each one instance's JSON bytes, metadata
        only) as one JSON array to ``/dicomweb/studies``. The exchange answers with
        a dataset naming each instance in ReferencedSOPSequence or FailedSOPSequence
        (200 all stored, 202 some failed, 409 none stored); see ``adapters.stow``."""
        body = b"[" + b",".join(instances) + b"]"
        return self.post("/dicomweb/studies", body, media_type=DICOM_JSON)

    def post(self, path: str, payload: bytes, *, media_type: str = FHIR_JSON) -> Result:
        """POST ``payload`` (FHIR JSON unless ``media_type`` says otherwise) to ``path``
        of the exchange and classify the answer."""
        for first in (True, False):
            try:
                headers = {"Authorization": f"Bearer {self.token()}",
                           "Content-Type": media_type, "Accept": media_type}
                if media_type == FHIR_JSON:
                    headers["Prefer"] = "return=minimal"
                r = self._http.post(f"{self.base}{path}", content=payload, headers=headers)
            except TokenError as exc:
                # The message is not at fault: a key not (yet) registered or a clock
                # off is fixed on the hospital's side, and the message must wait.
                return Result("retry", exc.status, exc.body.encode(), str(exc),
                              _retry_after(None))
            except httpx.HTTPError as exc:
                return Result("retry", None, b"", f"{type(exc).__name__}: {exc}")
            if r.status_code == 401 and first:
                self.forget_token()  # expired early or the exchange rotated: one more go
                continue
            return classify(r)
        raise AssertionError("unreachable")


def classify(r: httpx.Response) -> Result:
    """ok for 2xx; retry for 401 (after a fresh token failed), 408, 429, 5xx; poison
    for any other 4xx, with the body (an ``OperationOutcome``) kept."""
    status = r.status_code
    if 200 <= status < 300:
        return Result("ok", status, r.content, "")
    error = f"HTTP {status}: {r.text[:300]}"
    if status in (401, 408, 429) or status >= 500:
        return Result("retry", status, r.content, error,
                      _retry_after(r.headers.get("Retry-After")))
    return Result("poison", status, r.content, error)


class TokenError(Exception):
    """The token endpoint refused us."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"token endpoint answered {status}: {body[:300]}")
        self.status = status
        self.body = body
