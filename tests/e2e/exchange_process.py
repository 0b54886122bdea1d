"""Running a real exchange process (``hie serve`` under uvicorn) for end-to-end
tests, and acting as a hospital or a doctor against it as their systems would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exchange_env(folder: Path, base: str) -> dict[str, str]:
    """The environment of an exchange whose state lives in ``folder``."""
    return os.environ | {"HIE_STORE_URL": f"sqlite:///{folder}/hie.db", "HIE_BASE_URL": base,
                         "HIE_VAR_DIR": str(folder)}


def hie(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run an ``hie`` command; fail with its output if it fails."""
    done = subprocess.run([sys.executable, "-m", "hie", *args], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@contextmanager
def running_exchange(folder: Path, port: int) -> Iterator[str]:
    """``hie serve`` on 127.0.0.1:``port`` until the block ends; yields its base URL."""
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "hie", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            env=exchange_env(folder, base), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"hie serve exited early:\n{out}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("hie serve did not become healthy in 30 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class HospitalSystem:
    """A hospital's system: its client id and the private key it signs with."""

    base: str
    client_id: str
    kid: str
    private_pem: str
    alg: str = "ES384"

    def _signed(self, claims: dict) -> str:
        now = int(time.time())
        return jwt.encode({"iat": now, "exp": now + 240, "jti": str(uuid.uuid4()),
                           "aud": f"{self.base}/auth/token", **claims},
                          self.private_pem, algorithm=self.alg, headers={"kid": self.kid})

    def _token(self, form: dict[str, str]) -> str:
        r = httpx.post(f"{self.base}/auth/token", data={
            **form, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._signed({"iss": self.client_id, "sub": self.client_id})})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def token(self, scope: str = "system/*.cruds") -> str:
        """An access token for the hospital system (SMART Backend Services)."""
        return self._token({"grant_type": "client_credentials", "scope": scope})

    def doctor_token(self, practitioner: str, *, purpose: str = "TREAT",
                     reason: str | None = None, scope: str = "user/*.rs") -> str:
        """An access token for one of the hospital's doctors (RFC 7523 jwt-bearer)."""
        claims = {"iss": self.client_id, "sub": practitioner, "purpose_of_use": purpose}
        if reason:
            claims["reason"] = reason
        return self._token({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                            "assertion": self._signed(claims), "scope": scope})


# The e2e fixtures' name for a running exchange and its registered hospital.
Exchange = HospitalSystem


# -- several processes on one region: the exchange and a standalone consent service --


@dataclass
class ServiceProcess:
    """A server process started for a test, its base URL and its log file."""

    name: str
    base: str
    process: subprocess.Popen
    log: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_service(name: str, command: list[str], env: dict[str, str], base: str,
                  log: Path, *, timeout: float = 30) -> ServiceProcess:
    """Start ``command`` (output to ``log``) and wait until ``{base}/healthz`` answers
    200; the process is stopped again if it does not."""
    with log.open("ab") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    service = ServiceProcess(name, base, proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{service.output()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return service
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become healthy in {timeout} s:\n"
                                   f"{service.output()}")
            time.sleep(0.05)
    except BaseException:
        service.stop()
        raise


def start_consent_service(folder: Path, port: int, exchange_base: str) -> ServiceProcess:
    """``hie-consent serve`` on 127.0.0.1:``port`` over the exchange's state in
    ``folder`` (same store, key folder and ``HIE_BASE_URL`` as the exchange at
    ``exchange_base``). Stop it with :meth:`ServiceProcess.stop`."""
    command = [str(Path(sys.executable).parent / "hie-consent"), "serve", "--host",
               "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return start_service("hie-consent serve", command, exchange_env(folder, exchange_base),
                         f"http://127.0.0.1:{port}", folder / "consent-service.log")


def start_exchange(folder: Path, port: int, **env: str) -> ServiceProcess:
    """``hie serve`` on 127.0.0.1:``port`` over the state in ``folder``, with extra
    ``HIE_*`` variables (``HIE_CONSENT_URL=…`` for a remote consent service)."""
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "hie", "serve", "--host", "127.0.0.1", "--port",
               str(port), "--log-level", "warning"]
    return start_service("hie serve", command, exchange_env(folder, base) | env, base,
                         folder / "exchange.log")
