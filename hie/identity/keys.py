"""The identity key: the secret under which resident ID numbers are hashed.

The index stores only ``HMAC-SHA-256(key, number)``. The key comes from the
settings (``identity_key``, i.e. ``HIE_IDENTITY_KEY``, hex or any text) when
set — every process of one deployment must use the same key, so a MongoDB
deployment with several exchange processes sets it — and otherwise from
``<var_dir>/identity.key``, generated on first use (the embedded default, like
the signing key). Losing the key means deterministic matching no longer finds
the persons already indexed: back it up with the store.
"""

from __future__ import annotations

import os
import secrets
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

KEY_FILE = "identity.key"


def identity_key(settings: Any) -> bytes:
    """The key for ``settings`` (cached: read or created once per process)."""
    configured = getattr(settings, "identity_key", "") or ""
    if configured:
        return _from_text(configured)
    return _from_file(str(Path(getattr(settings, "var_dir", "./var")) / KEY_FILE))


def _from_text(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return text.encode("utf-8")


@lru_cache(maxsize=8)
def _from_file(path: str) -> bytes:
    file = Path(path)
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once must not both write a key
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
    for _ in range(50):  # another process may be writing it right now
        text = file.read_text().strip()
        if len(text) == 64:
            return bytes.fromhex(text)
        time.sleep(0.01)
    raise RuntimeError(f"the identity key file {path} is not a 64-digit hex key")
