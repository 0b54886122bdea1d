"""Portal passwords: scrypt with a random salt, compared in constant time.

Hashes are self-describing (``scrypt$n$r$p$salt$hash``, base64) so the cost can
be raised later without breaking stored ones. Hashing costs tens of
milliseconds of CPU and ~16 MB, on purpose; callers in ``async`` code run it in
a worker thread (:func:`hash_password_async`, :func:`check_password_async`).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import os

_N, _R, _P, _LEN = 2**14, 8, 1, 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    """Return a new salted scrypt hash of ``password``."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LEN)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


@functools.cache
def _dummy() -> str:
    """Checked against when the username does not exist, so that a missing account
    costs the same time as a wrong password (no username probing by timing).
    Made on first use, not at import: every process imports this module."""
    return hash_password("no such account")


def check_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (``None``: compare with a dummy, return False)."""
    try:
        scheme, n, r, p, salt, digest = (stored or _dummy()).split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected) and stored is not None and scheme == "scrypt"


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def check_password_async(password: str, stored: str | None) -> bool:
    return await asyncio.to_thread(check_password, password, stored)
