"""A real exchange process (``hie serve`` under uvicorn) on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``hie serve`` on a fresh SQLite store; yield its base URL."""
    folder: Path = tmp_path_factory.mktemp("exchange")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {"HIE_STORE_URL": f"sqlite:///{folder}/hie.db", "HIE_BASE_URL": base,
                        "HIE_VAR_DIR": str(folder)}
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
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
