"""A real exchange process (``hie serve`` under uvicorn) on 127.0.0.1, with a
hospital registered through ``hie admin`` and its real key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from exchange_process import Exchange, free_port

from hie.auth.jwk import new_client_key


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    """Register a hospital with ``hie admin``, start ``hie serve`` on a fresh
    SQLite store, and yield it."""
    folder: Path = tmp_path_factory.mktemp("exchange")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {"HIE_STORE_URL": f"sqlite:///{folder}/hie.db", "HIE_BASE_URL": base,
                        "HIE_VAR_DIR": str(folder)}
    pem, jwk = new_client_key("ES384", kid="e2e-key-1")
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    subprocess.run([sys.executable, "-m", "hie", "admin", "create-organization",
                    "--name", "E2E 市第一人民医院", "--id", "e2e", "--jwks", str(jwks)],
                   env=env, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "hie", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
        yield Exchange(base=base, client_id="e2e", kid="e2e-key-1", private_pem=pem)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
