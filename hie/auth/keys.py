"""The exchange's own signing keys: generated on first start, rotated by command.

Keys live as PEM files (ES384, P-384, mode 0600) in ``<var_dir>/keys/``; the
file name is the key id, and the id carries the creation time
(``hie-20261125T063000Z-1a2b3c4d``) so that every worker process that shares
the folder agrees which key is newest without any other shared state.

* The newest key signs. A key is *retired* when a newer one is created and keeps
  verifying (and stays published at ``/auth/jwks``) for ``retention`` seconds
  after that — longer than any token lives — so rotation never breaks a token in
  flight. Expired keys are deleted by the next rotation.
* Workers re-read the folder every few seconds (and at once when a token names
  a well-formed ``kid`` whose file exists but is not loaded yet), so a rotation done by
  ``hie admin rotate-keys`` or another worker is picked up without a restart.
* Creation takes an exclusive ``flock`` and writes through a temporary file and
  an atomic rename, so two workers starting on a fresh machine create one key.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

log = logging.getLogger("hie.auth.keys")

#: The one algorithm the exchange signs with.
EXCHANGE_ALGORITHM = "ES384"
_STAMP = "%Y%m%dT%H%M%SZ"
_RESCAN_SECONDS = 10.0
_KID = re.compile(r"^hie-\d{8}T\d{6}Z-[0-9a-f]{8}$")


@dataclass(frozen=True, slots=True)
class ExchangeKey:
    """One signing key of the exchange."""

    kid: str
    created: float  # epoch seconds, from the kid
    private: ec.EllipticCurvePrivateKey

    @property
    def public(self) -> ec.EllipticCurvePublicKey:
        return self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        """The public JWK as published at ``/auth/jwks``."""
        jwk = json.loads(ECAlgorithm.to_jwk(self.public))
        return {**jwk, "kid": self.kid, "alg": EXCHANGE_ALGORITHM, "use": "sig"}


def _created(kid: str) -> float | None:
    parts = kid.split("-")
    if len(parts) != 3 or parts[0] != "hie":
        return None
    try:
        return datetime.strptime(parts[1], _STAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


class KeyRing:
    """The exchange's signing keys in one folder, shared by every worker."""

    def __init__(self, folder: Path | str, *, retention_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self.retention = retention_seconds
        self.clock = clock
        self._keys: dict[str, ExchangeKey] = {}
        self._scanned = float("-inf")
        self._lock = threading.Lock()

    # -- reading ------------------------------------------------------------

    def refresh(self) -> None:
        """Load key files not seen yet; forget keys whose files are gone."""
        with self._lock:
            names = {p.stem for p in self.folder.glob("hie-*.pem")} if self.folder.is_dir() \
                else set()
            for kid in set(self._keys) - names:
                del self._keys[kid]
            for kid in names - set(self._keys):
                created = _created(kid)
                if created is None:
                    continue
                try:
                    private = serialization.load_pem_private_key(
                        (self.folder / f"{kid}.pem").read_bytes(), password=None)
                except (OSError, ValueError):
                    log.warning("skipping unreadable signing key file %s.pem", kid)
                    continue
                if isinstance(private, ec.EllipticCurvePrivateKey):
                    self._keys[kid] = ExchangeKey(kid, created, private)
            self._scanned = self.clock()

    def _ordered(self) -> list[ExchangeKey]:
        return sorted(self._keys.values(), key=lambda k: (k.created, k.kid))

    def _live(self) -> list[ExchangeKey]:
        """The newest key and every retired key still inside its retention."""
        keys = self._ordered()
        now = self.clock()
        live = [k for k, successor in zip(keys, keys[1:], strict=False)
                if now < successor.created + self.retention]
        return live + keys[-1:]

    def signing_key(self) -> ExchangeKey:
        """The newest key (creating the first one on a fresh machine)."""
        if self.clock() - self._scanned > _RESCAN_SECONDS:
            self.refresh()
        if not self._keys:
            self.ensure()
        return self._ordered()[-1]

    def verification_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The public key with this ``kid`` if it is still live, else None."""
        key = self._keys.get(kid)
        if key is None and _KID.match(kid) and (self.folder / f"{kid}.pem").is_file():
            # Another worker (or `hie admin rotate-keys`) made it since our last scan.
            self.refresh()
            key = self._keys.get(kid)
        if key is None or all(k.kid != kid for k in self._live()):
            return None
        return key.public

    def jwks(self) -> dict[str, Any]:
        """The JWKS of every live key (newest first)."""
        self.signing_key()  # rescans when due; creates the first key on a fresh machine
        return {"keys": [k.jwk() for k in reversed(self._live())]}

    # -- writing ------------------------------------------------------------

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.folder / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write_new(self) -> ExchangeKey:
        now = self.clock()
        created = int(now)
        if self._keys:  # keep creation order strict even when rotating twice in a second
            created = max(created, int(self._ordered()[-1].created) + 1)
        kid = f"hie-{datetime.fromtimestamp(created, UTC).strftime(_STAMP)}-" \
              f"{secrets.token_hex(4)}"
        private = ec.generate_private_key(ec.SECP384R1())
        pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        tmp = self.folder / f".{kid}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.folder / f"{kid}.pem")
        key = ExchangeKey(kid, float(created), private)
        self._keys[kid] = key
        log.info("created exchange signing key %s", kid)
        return key

    def ensure(self) -> ExchangeKey:
        """Create the first key unless one exists (safe with several workers)."""
        with self._exclusive():
            self.refresh()
            if self._keys:
                return self._ordered()[-1]
            return self._write_new()

    def rotate(self) -> ExchangeKey:
        """Add a new signing key; delete keys whose retention has passed."""
        with self._exclusive():
            self.refresh()
            key = self._write_new()
            live = {k.kid for k in self._live()}
            for old in [k for k in self._keys.values() if k.kid not in live]:
                (self.folder / f"{old.kid}.pem").unlink(missing_ok=True)
                del self._keys[old.kid]
            return key
