"""A real exchange (``hie serve`` in a subprocess on 127.0.0.1) with one hospital
registered through ``hie admin`` and its real key, for the adapter's tests; and
the ``hie-adapter`` command run as a hospital would run it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt

from hie.auth.jwk import new_client_key

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ADAPTER = str(Path(sys.executable).parent / "hie-adapter")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Exchange:
    """A running exchange and the hospital registered on it."""

    base: str
    process: subprocess.Popen
    folder: Path
    client_id: str
    kid: str
    private_pem: str
    key_file: Path

    def token(self) -> str:
        """A hospital access token, fetched the test's own way (not the adapter's)."""
        now = int(time.time())
        assertion = jwt.encode({"iss": self.client_id, "sub": self.client_id,
                                "aud": f"{self.base}/auth/token", "iat": now, "exp": now + 120,
                                "jti": str(uuid.uuid4())}, self.private_pem,
                               algorithm="ES384", headers={"kid": self.kid})
        r = httpx.post(f"{self.base}/auth/token", data={
            "grant_type": "client_credentials", "scope": "system/*.cruds",
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def count(self, rtype: str, **params: str) -> int:
        r = httpx.get(f"{self.base}/fhir/{rtype}", params={"_summary": "count", **params},
                      headers={"Authorization": f"Bearer {self.token()}"})
        assert r.status_code == 200, r.text
        return r.json()["total"]

    def adapter_args(self, outbox: Path) -> list[str]:
        return ["--exchange", self.base, "--client-id", self.client_id, "--key",
                str(self.key_file), "--kid", self.kid, "--outbox", str(outbox)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def hospital_key(folder: Path, kid: str) -> str:
    """Make the hospital's key pair in ``folder`` (``hospital.pem``, ``jwks.json``)."""
    pem, jwk = new_client_key("ES384", kid=kid)
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (folder / "hospital.pem").write_text(pem)
    return pem


def start_exchange(folder: Path, *, hospital: str = "adapt",
                   port: int | None = None) -> Exchange:
    """Register ``hospital`` and start ``hie serve`` over a fresh SQLite store."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {"HIE_STORE_URL": f"sqlite:///{folder}/hie.db", "HIE_BASE_URL": base,
                        "HIE_VAR_DIR": str(folder)}
    kid = f"{hospital}-key-1"
    key_file = folder / "hospital.pem"
    # the key may have been made by hospital_key() before the exchange started
    pem = key_file.read_text() if key_file.exists() else hospital_key(folder, kid)
    done = subprocess.run([sys.executable, "-m", "hie", "admin", "create-organization",
                           "--name", "适配器测试医院", "--id", hospital, "--jwks",
                           str(folder / "jwks.json")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (folder / "exchange.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "hie", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    exchange = Exchange(base, proc, folder, hospital, kid, pem, key_file)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError((folder / "exchange.log").read_text())
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return exchange
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            exchange.stop()
            raise RuntimeError("hie serve did not become healthy in 30 s")
        time.sleep(0.05)
