"""Running a real exchange process for end-to-end tests."""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass

import httpx
import jwt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Exchange:
    """A running exchange and one registered hospital."""

    base: str
    client_id: str
    kid: str
    private_pem: str

    def token(self, scope: str = "system/*.cruds") -> str:
        """An access token from the token endpoint (SMART Backend Services)."""
        token_url = f"{self.base}/auth/token"
        now = int(time.time())
        assertion = jwt.encode({"iss": self.client_id, "sub": self.client_id, "aud": token_url,
                                "iat": now, "exp": now + 240, "jti": str(uuid.uuid4())},
                               self.private_pem, algorithm="ES384", headers={"kid": self.kid})
        r = httpx.post(token_url, data={
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion})
        r.raise_for_status()
        return r.json()["access_token"]
